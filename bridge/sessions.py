"""The admin session cookie: Secure on HTTPS, scoped to the proxy prefix, idle expiry.

Flask's SESSION_COOKIE_SECURE and SESSION_COOKIE_PATH are fixed at start,
but the bridge learns both per request: behind nginx (BRIDGE_BEHIND_PROXY)
ProxyFix turns X-Forwarded-Proto into the request's scheme and
X-Forwarded-Prefix into its SCRIPT_NAME. A plain-HTTP `make run` still gets
a cookie it can use.

The cookie is signed, not stored: ending sessions (logout, a new password)
is done by the stamp each session carries (bridge/views/auth.py).
"""

from __future__ import annotations

from datetime import timedelta

from flask import Flask, has_request_context, request
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface, SessionMixin

DEFAULT_IDLE_HOURS = 12.0


class ProxyAwareSessionInterface(SecureCookieSessionInterface):
    """Signed-cookie sessions whose cookie follows the request's scheme and prefix."""

    def open_session(self, app: Flask, request) -> SecureCookieSession | None:
        # Mattermost's calls and the host API carry no cookie: an empty session
        # without building the signing serializer first (Flask builds it on
        # every request, a tenth of a webhook's framework time).
        if app.secret_key and not request.environ.get("HTTP_COOKIE"):
            return self.session_class()
        return super().open_session(app, request)

    def save_session(self, app: Flask, session: SessionMixin, response) -> None:
        # An untouched empty session writes nothing: skip working out the cookie.
        if not session and not session.modified and not session.accessed:
            return
        super().save_session(app, session, response)

    def get_cookie_secure(self, app: Flask) -> bool:
        if has_request_context() and request.is_secure:
            return True
        return super().get_cookie_secure(app)

    def get_cookie_path(self, app: Flask) -> str:
        if has_request_context():
            return request.script_root or "/"
        return super().get_cookie_path(app)


def idle_lifetime(hours: str | None) -> timedelta:
    """BRIDGE_SESSION_IDLE_HOURS (default 12) as the session lifetime.

    Flask re-signs a permanent session's cookie on every request
    (SESSION_REFRESH_EACH_REQUEST), so the lifetime counts from the last
    request: an idle timeout, checked on the signature's timestamp.
    """
    problem = "BRIDGE_SESSION_IDLE_HOURS must be a positive number of hours"
    try:
        value = float(hours) if hours and hours.strip() else DEFAULT_IDLE_HOURS
    except ValueError:
        raise ValueError(f"{problem}, not {hours!r}") from None
    if not value > 0:
        raise ValueError(problem)
    return timedelta(hours=value)


def init_app(app: Flask) -> None:
    app.session_interface = ProxyAwareSessionInterface()
