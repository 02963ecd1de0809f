"""Admin access: first-run setup, login, logout, and the guard on every admin page.

Sessions are signed cookies (bridge/sessions.py), which the server cannot
delete. So each session carries a *stamp*: an HMAC of the session epoch (in
the meta table) and the current password. Logging out or setting a password
changes the epoch, and so ends every session opened before, in every
browser; changing BRIDGE_ADMIN_PASSWORD does the same.

Password checks are throttled per client address and in all (the
``rate_limits`` table, shared by every gunicorn worker): a few a minute, then
429 with Retry-After. A correct password is taken back off both counts. The
Mattermost sign-in's callback (bridge/views/oauth.py) counts the same way and
opens its session with the same stamp, so logout ends it too.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import math
import re
import sqlite3
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_wtf import FlaskForm
from werkzeug.security import check_password_hash, generate_password_hash
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, EqualTo, Length

from .. import htmx
from ..db import get_store

bp = Blueprint("auth", __name__)
# A path on this site: one "/", then no "/" or "\\", and only printable ASCII
# (browsers drop tabs and newlines, so "/\t/evil.example" would become "//evil.example").
LOCAL_PATH = re.compile(r"/(?![/\\])[!-~]*")

# Login throttling: fixed one-minute windows in the shared rate_limits table.
LOGIN_WINDOW_SECONDS = 60
LOGIN_TRIES_PER_ADDRESS = 5
# Against many addresses at once. The price: while someone keeps failing
# this often, a correct password also waits for the window to end (< 1 min).
LOGIN_TRIES_IN_ALL = 20


class SetupForm(FlaskForm):
    password = PasswordField(
        "Admin password",
        validators=[DataRequired(), Length(min=8)],
        description="At least 8 characters.",
    )
    confirm = PasswordField(
        "Repeat the password", validators=[EqualTo("password", message="The passwords differ.")]
    )


class LoginForm(FlaskForm):
    name = StringField(
        "Your name",
        validators=[DataRequired(), Length(max=60)],
        description="Shown next to the checklist items you tick.",
    )
    password = PasswordField("Admin password", validators=[DataRequired()])


def password_is_set() -> bool:
    return bool(current_app.config["ADMIN_PASSWORD"] or get_store().get_meta("admin_password_hash"))


def password_matches(candidate: str) -> bool:
    configured = current_app.config["ADMIN_PASSWORD"]
    if configured:
        return hmac.compare_digest(candidate.encode(), configured.encode())
    stored = get_store().get_meta("admin_password_hash")
    return bool(stored) and check_password_hash(stored, candidate)


def session_stamp() -> str:
    """What a live admin session carries; it changes when sessions must end."""
    credential = current_app.config["ADMIN_PASSWORD"] or get_store().get_meta("admin_password_hash")
    key = current_app.config["SECRET_KEY"]
    key = key.encode() if isinstance(key, str) else key
    message = f"{get_store().session_epoch()}\0{credential or ''}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def is_admin() -> bool:
    """This request comes with a session opened since the last logout or password change."""
    if "is_admin" not in g:
        stamp = session.get("stamp")
        g.is_admin = isinstance(stamp, str) and hmac.compare_digest(stamp, session_stamp())
    return g.is_admin


@bp.app_context_processor
def admin_nav():
    def show_admin_nav() -> bool:
        if "stamp" not in session:
            return False
        try:
            return is_admin()
        except sqlite3.Error:
            return False  # an error page about the database still renders

    return {"show_admin_nav": show_admin_nav}


def login_required(view):
    """Send anonymous visitors (and ended sessions) to setup (first run) or login."""

    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        if is_admin():
            return view(*args, **kwargs)
        if "stamp" in session:
            session.clear()  # an ended session: drop the cookie too
        target = "auth.setup" if not password_is_set() else "auth.login"
        if htmx:
            # A fragment request cannot show a login page: reload into it, and come
            # back to the page the fragment was on, not to the bare fragment.
            location = url_for(target, next=_page_of(request.headers.get("HX-Current-URL", "")))
            return "", 200, {"HX-Redirect": location}
        came_from = request.full_path.rstrip("?") if request.method == "GET" else None
        return redirect(url_for(target, next=came_from))

    return wrapped


def admin_name() -> str:
    return session.get("admin_name", "admin")


@bp.route("/setup", methods=["GET", "POST"])
def setup():
    if password_is_set():
        return redirect(url_for("admin.dashboard" if is_admin() else "auth.login"))
    form = SetupForm()
    if form.validate_on_submit():
        get_store().set_admin_password_hash(generate_password_hash(form.password.data))
        session.clear()
        flash("Admin password set. Log in with it.", "ok")
        return redirect(url_for("auth.login"))
    return render_template("auth/setup.html", form=form)


@bp.route("/login", methods=["GET", "POST"])
def login():
    if not password_is_set():
        return redirect(url_for("auth.setup"))
    if request.method == "GET" and is_admin():
        return redirect(safe_next(request.args.get("next")))
    form = LoginForm()
    oauth = get_store().oauth_settings()
    if oauth["password_disabled"] and request.method == "POST":
        # Only the Mattermost sign-in is on: a password is not even checked.
        message = "Password login is turned off: use Sign in with Mattermost."
        return render_template("auth/login.html", form=form, oauth=oauth, refused=message), 403
    if form.validate_on_submit():
        wait = spend_login_try()
        if wait:
            return _too_many_tries(form, wait, oauth)
        if password_matches(form.password.data):
            give_login_try_back()
            start_admin_session(form.name.data.strip())
            get_store().log_admin_action(admin_name(), "sign-in", "password")
            return redirect(safe_next(request.args.get("next")))
        form.password.errors.append("Wrong password.")
    return render_template("auth/login.html", form=form, oauth=oauth)


def start_admin_session(name: str) -> None:
    """A new admin session (password or Mattermost sign-in) acting as ``name``."""
    session.clear()
    session["stamp"] = session_stamp()
    session["admin_name"] = name
    session.permanent = True  # idle expiry: PERMANENT_SESSION_LIFETIME


@bp.post("/logout")
def logout():
    # Only a live session may end them all: a stranger with a CSRF token of
    # his own must not be able to log every admin out.
    if is_admin():
        get_store().log_admin_action(admin_name(), "logout", "every admin session ended")
        get_store().end_admin_sessions()
    session.clear()
    flash("Logged out.", "ok")
    return redirect(url_for("auth.login"))


def _login_buckets() -> list[tuple[str, int]]:
    return [
        (f"login:{request.remote_addr}", LOGIN_TRIES_PER_ADDRESS),
        ("login:*", LOGIN_TRIES_IN_ALL),
    ]


def spend_login_try() -> float:
    """Count a password check; the seconds to wait instead when a limit is reached."""
    store = get_store()
    counted: list[str] = []
    for bucket, limit in _login_buckets():
        if store.hit_rate_limit(bucket, limit=limit, window=LOGIN_WINDOW_SECONDS):
            # Refused unchecked, so not a guess: the counts before this one
            # get their hit back (an address over its own limit never
            # reaches the overall count).
            for earlier in counted:
                store.forget_rate_limit_hit(earlier)
            return max(1.0, store.rate_limit_wait(bucket, window=LOGIN_WINDOW_SECONDS))
        counted.append(bucket)
    return 0.0


def give_login_try_back() -> None:
    """A correct password does not count against anyone's limit."""
    store = get_store()
    for bucket, _ in _login_buckets():
        store.forget_rate_limit_hit(bucket)


def _too_many_tries(form: LoginForm, wait: float, oauth: dict):
    seconds = max(1, math.ceil(wait))
    body = render_template("auth/login.html", form=form, wait=seconds, oauth=oauth)
    return body, 429, {"Retry-After": str(seconds)}


def _page_of(current_url: str) -> str | None:
    """The path (and query) of the page an HTMX request came from, when it is this site's."""
    parts = urlsplit(current_url)
    if parts.netloc != request.host or not parts.path.startswith(request.script_root or "/"):
        return None
    path = parts.path[len(request.script_root) :] or "/"
    return f"{path}?{parts.query}" if parts.query else path


def safe_next(target: str | None) -> str:
    """Only local paths: a login link must not bounce the admin to another site."""
    if target and LOCAL_PATH.fullmatch(target):
        return request.script_root + target
    return url_for("admin.dashboard")
