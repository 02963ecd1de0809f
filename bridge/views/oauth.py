"""Sign in with Mattermost: the two public steps of the OAuth flow, and its settings screen.

``/login/mattermost`` gives this browser's session a fresh ``state`` and
sends the browser to the server's ``/oauth/authorize``; the server sends it
back to ``/login/mattermost/callback``, which checks the state (once: it is
taken out of the session and marked used in the shared rate_limits table,
so an old copy of the cookie cannot replay it), trades the code and asks
Mattermost who signed in (bridge/oauth.py). The callback is throttled like a
password: a bad state or code counts as a failed login.
"""

from __future__ import annotations

import hashlib
import math
import time

from flask import Blueprint, flash, redirect, render_template, request, session, url_for

from .. import oauth
from ..db import get_store
from ..integration import mask_secret
from .admin import public_url
from .auth import (
    give_login_try_back,
    login_required,
    safe_next,
    spend_login_try,
    start_admin_session,
)

bp = Blueprint("oauth_login", __name__)  # public: the way in
settings_bp = Blueprint("oauth_settings", __name__)


@settings_bp.before_request
@login_required
def require_login():
    """The settings screen is behind the login."""


def current_settings() -> oauth.OAuthSettings:
    return oauth.OAuthSettings(**get_store().oauth_settings())


def callback_url() -> str:
    """The redirect URI to register in Mattermost's OAuth app (and to send in both steps)."""
    return public_url(url_for("oauth_login.callback"))


@bp.get("/login/mattermost")
def start():
    settings = current_settings()
    if not settings.configured:
        return _error_page(_not_set_up())
    state = oauth.new_state()
    session["oauth_state"] = state
    session["oauth_state_at"] = time.time()
    session["oauth_next"] = request.args.get("next") or ""
    # A 302 on a GET: CSP form-action does not apply (a form POST redirecting
    # to Mattermost would be blocked by form-action 'self').
    return redirect(oauth.authorize_url(settings, callback_url(), state))


@bp.get("/login/mattermost/callback")
def callback():
    wait = spend_login_try()
    if wait:
        seconds = max(1, math.ceil(wait))
        error = oauth.SignInError(
            f"Too many login attempts. Wait {seconds} second{'' if seconds == 1 else 's'}, "
            "then sign in again.",
            status=429,
            title="Too many login attempts",
        )
        return _error_page(error, {"Retry-After": str(seconds)})
    # Single use: whatever happens next, this session's state is spent.
    expected = session.pop("oauth_state", None)
    issued_at = session.pop("oauth_state_at", None)
    came_from = session.pop("oauth_next", None)
    settings = current_settings()
    try:
        if not settings.configured:
            raise _not_set_up()
        oauth.check_state(expected, issued_at, request.args.get("state"), time.time())
        _spend_state(expected)
        denied = request.args.get("error")
        if denied:
            raise oauth.SignInError(
                f"Mattermost did not sign you in ({denied[:100]}). Nobody was signed in.",
                status=403,
                title="Sign-in cancelled",
            )
        code = request.args.get("code", "")
        if not code:
            raise oauth.SignInError(
                "Mattermost sent no sign-in code. Start again with Sign in with Mattermost.",
                status=400,
                title="Sign-in link not valid",
            )
        token = oauth.exchange_code(settings, code, callback_url())
        username = oauth.signed_in_user(settings, token)
    except oauth.SignInError as error:
        if error.who:  # a Mattermost user who is not allowed
            get_store().log_admin_action(error.who, "sign-in refused", "Mattermost: " + error.title)
        return _error_page(error)
    give_login_try_back()
    store = get_store()
    store.record_oauth_sign_in(username, settings.server_url, settings.client_id)
    start_admin_session(username)
    store.log_admin_action(username, "sign-in", "Mattermost")
    return redirect(safe_next(came_from))


def _spend_state(state: str) -> None:
    """Refuse a state seen before, even with an old copy of the session cookie."""
    bucket = "oauth-state:" + hashlib.sha256(state.encode()).hexdigest()[:32]
    if get_store().hit_rate_limit(bucket, limit=1, window=oauth.STATE_TTL_SECONDS):
        raise oauth.SignInError(
            "This sign-in answer was used already. Start again with Sign in with Mattermost.",
            status=400,
            title="Sign-in link not valid",
        )


def _not_set_up() -> oauth.SignInError:
    return oauth.SignInError(
        "Sign in with Mattermost is not set up on this bridge. Log in with the admin password.",
        status=404,
        title="Not set up",
    )


def _error_page(error: oauth.SignInError, headers: dict[str, str] | None = None):
    body = render_template("auth/oauth_error.html", error=error)
    return body, error.status, headers or {}


# -- settings screen ------------------------------------------------------------------


@settings_bp.route("/settings/sign-in", methods=["GET", "POST"])
def settings_page():
    store = get_store()
    saved = store.oauth_settings()
    form = dict(saved)
    problems: list[str] = []
    if request.method == "POST":
        form = {
            key: request.form.get(key, "").strip()
            for key in ("server_url", "client_id", "client_secret", "team")
        }
        # Blank keeps the saved secret, but only for the saved server: it is never
        # sent to a server it was not typed for (as the bot token, DESIGN 10).
        moved = bool(saved["client_secret"]) and form["server_url"] != saved["server_url"]
        if not form["client_secret"] and not moved:
            form["client_secret"] = saved["client_secret"]
        form["password_disabled"] = request.form.get("password_disabled") == "1"
        problems = oauth.settings_problems(form)
        if moved and not request.form.get("client_secret", "").strip():
            problems.append(
                "Client secret: type it again for the new server URL; the saved one "
                "is only sent to the server it was saved for."
            )
        if not problems and form["password_disabled"]:
            proven = oauth.sign_in_proven(oauth.OAuthSettings(**form), store.last_oauth_sign_in())
            if not proven:
                problems.append(oauth.DISABLE_REFUSED)
        if not problems:
            store.save_oauth_settings(**form)
            flash("Sign-in settings saved.", "ok")
            return redirect(url_for("oauth_settings.settings_page"))
    return _settings_page(form, problems, status=400 if problems else 200)


def _settings_page(form: dict, problems: list[str], *, status: int):
    store = get_store()
    saved = oauth.OAuthSettings(**store.oauth_settings())
    last = store.last_oauth_sign_in()
    body = render_template(
        "auth/oauth_settings.html",
        form=form,
        problems=problems,
        secret_mask=mask_secret(saved.client_secret),
        callback_url=callback_url(),
        last_sign_in=last,
        proven=oauth.sign_in_proven(saved, last),
    )
    return body, status
