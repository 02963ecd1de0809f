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
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        WTF_CSRF_TIME_LIMIT=None,
    )
    if test_config:
        app.config.update(test_config)
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = os.environ.get("BRIDGE_SECRET_KEY") or instance_secret_key(
            app.instance_path
        )
    if os.environ.get("BRIDGE_BEHIND_PROXY", "").lower() in ("1", "true", "yes"):
        # nginx in front: trust one hop of X-Forwarded-For/Proto/Host/Prefix.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1, x_prefix=1)

    csrf.init_app(app)
    htmx.init_app(app)
    app.jinja_env.filters["when"] = format_timestamp

    from . import cli, db, errors
    from .views import admin, api, auth, chat, checklist, hooks, log, sources, sources_admin

    db.init_app(app)
    errors.init_app(app)
    cli.init_app(app)
    for blueprint in (
        auth.bp,
        admin.bp,
        checklist.bp,
        log.bp,
        api.bp,
        hooks.bp,
        chat.bp,
        sources.bp,
        sources_admin.bp,
    ):
        app.register_blueprint(blueprint)
    # Token-authenticated (API, webhooks, sources) or capability-URL (chat) routes; see chat.py.
    for blueprint in (api.bp, hooks.bp, chat.bp, sources.bp):
        csrf.exempt(blueprint)
    app.after_request(add_security_headers)
    return app


def add_security_headers(response):
    """No framing of admin pages (clickjacking); the chat page may be embedded."""
    from flask import request

    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if request.blueprint != "chat":
        response.headers.setdefault("X-Frame-Options", "DENY")
    return response


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
    every worker ends up reading the same complete key.
    """
    os.makedirs(instance_path, exist_ok=True)
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
    return Path(path).read_text().strip()
