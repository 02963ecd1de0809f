"""Mattermost Bridge: the application factory."""

from __future__ import annotations

import os
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flask import Flask
from flask_htmx import HTMX
from flask_wtf import CSRFProtect
from werkzeug.middleware.proxy_fix import ProxyFix

from .files import private_directory, restrict
from .sessions import idle_lifetime

MAX_BODY_BYTES = 1024 * 1024

csrf = CSRFProtect()
htmx = HTMX()


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app; settings come from ``BRIDGE_*`` variables or ``test_config``."""
    root = Path(__file__).resolve().parent.parent
    app = Flask(
        __name__,
        instance_relative_config=True,
        instance_path=str(root / "instance"),
        template_folder=str(root / "templates"),
        static_folder=str(root / "static"),
    )
    app.config.from_mapping(
        DATABASE=os.environ.get("BRIDGE_DATABASE") or os.path.join(app.instance_path, "bridge.db"),
        ADMIN_PASSWORD=os.environ.get("BRIDGE_ADMIN_PASSWORD", ""),
        PUBLIC_URL=os.environ.get("BRIDGE_PUBLIC_URL", "").rstrip("/"),
        CHAT_ORIGINS=os.environ.get("BRIDGE_CHAT_ORIGINS", ""),
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=idle_lifetime(os.environ.get("BRIDGE_SESSION_IDLE_HOURS")),
        WTF_CSRF_TIME_LIMIT=None,
    )
    from .worker import settings_from_env

    # The worker's schedule; the web's sends use the same retry schedule and reclaim age.
    app.config["WORKER"] = settings_from_env(os.environ)
    if test_config:
        app.config.update(test_config)
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = os.environ.get("BRIDGE_SECRET_KEY") or instance_secret_key(
            app.instance_path
        )
    restrict(app.instance_path)  # owner-only even when a checkout made it 0755
    if os.environ.get("BRIDGE_BEHIND_PROXY", "").lower() in ("1", "true", "yes"):
        # nginx in front: trust one hop of X-Forwarded-For/Proto/Host/Prefix.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1, x_prefix=1)

    from . import bodies, sessions

    sessions.init_app(app)
    bodies.init_app(app)  # first: a body over 1 MiB is a 413 before CSRF reads the form
    csrf.init_app(app)
    htmx.init_app(app)
    app.jinja_env.filters["when"] = format_timestamp

    from . import cli, db, errors, headers
    from .views import (
        admin,
        admin_log,
        agent_hooks,
        api,
        auth,
        chat,
        checklist,
        hooks,
        log,
        oauth,
        sources,
        sources_admin,
    )

    db.init_app(app)
    errors.init_app(app)
    headers.init_app(app)
    cli.init_app(app)
    for blueprint in (
        auth.bp,
        admin.bp,
        checklist.bp,
        log.bp,
        api.bp,
        hooks.bp,
        agent_hooks.bp,
        chat.bp,
        sources.bp,
        sources_admin.bp,
        oauth.bp,
        oauth.settings_bp,
        admin_log.bp,
    ):
        app.register_blueprint(blueprint)
    # Token-authenticated (API, webhooks, slash command, buttons' HMAC, sources) or capability-URL (chat) routes; see chat.py.
    for blueprint in (api.bp, hooks.bp, agent_hooks.bp, chat.bp, sources.bp):
        csrf.exempt(blueprint)
    return app


def format_timestamp(timestamp: float | None) -> str:
    """Unix seconds as ``2026-11-21 19:44:13 UTC`` for the admin pages."""
    if timestamp is None:
        return ""
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def instance_secret_key(instance_path: str) -> str:
    """The secret key kept in the instance folder, created once.

    Several gunicorn workers may start at once: the key is written to a
    private temporary file and hard-linked into place, which is atomic, so
    every worker ends up reading the same complete key. The folder is 0700
    and the key 0600, whatever the umask (see bridge/files.py).
    """
    private_directory(instance_path)
    path = os.path.join(instance_path, "secret_key")
    if not os.path.exists(path):
        temporary = f"{path}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass  # another worker won the race; use its key
        finally:
            os.unlink(temporary)
    restrict(path)  # a key written by an older version may be 0644
    return Path(path).read_text().strip()
