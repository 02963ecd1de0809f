"""Admin access: first-run setup, login, logout, and the guard on every admin page."""

from __future__ import annotations

import functools
import hmac
import re

from flask import (
    Blueprint,
    current_app,
    flash,
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


def login_required(view):
    """Send anonymous visitors to setup (first run) or login."""

    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        if session.get("admin"):
            return view(*args, **kwargs)
        target = "auth.setup" if not password_is_set() else "auth.login"
        came_from = request.full_path.rstrip("?") if request.method == "GET" else None
        location = url_for(target, next=came_from)
        if htmx:
            # A fragment request cannot show a login page: reload into it.
            return "", 200, {"HX-Redirect": location}
        return redirect(location)

    return wrapped


def admin_name() -> str:
    return session.get("admin_name", "admin")


@bp.route("/setup", methods=["GET", "POST"])
def setup():
    if password_is_set():
        return redirect(url_for("admin.dashboard" if session.get("admin") else "auth.login"))
    form = SetupForm()
    if form.validate_on_submit():
        get_store().set_meta("admin_password_hash", generate_password_hash(form.password.data))
        flash("Admin password set. Log in with it.", "ok")
        return redirect(url_for("auth.login"))
    return render_template("auth/setup.html", form=form)


@bp.route("/login", methods=["GET", "POST"])
def login():
    if not password_is_set():
        return redirect(url_for("auth.setup"))
    if session.get("admin") and request.method == "GET":
        return redirect(_safe_next(request.args.get("next")))
    form = LoginForm()
    if form.validate_on_submit():
        if password_matches(form.password.data):
            session.clear()
            session["admin"] = True
            session["admin_name"] = form.name.data.strip()
            session.permanent = True
            return redirect(_safe_next(request.args.get("next")))
        form.password.errors.append("Wrong password.")
    return render_template("auth/login.html", form=form)


@bp.post("/logout")
def logout():
    session.clear()
    flash("Logged out.", "ok")
    return redirect(url_for("auth.login"))


def _safe_next(target: str | None) -> str:
    """Only local paths: a login link must not bounce the admin to another site."""
    if target and LOCAL_PATH.fullmatch(target):
        return request.script_root + target
    return url_for("admin.dashboard")
