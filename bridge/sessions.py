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
from flask.sessions import SecureCookieSessionInterface

DEFAULT_IDLE_HOURS = 12.0


class ProxyAwareSessionInterface(SecureCookieSessionInterface):
    """Signed-cookie sessions whose cookie follows the request's scheme and prefix."""

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
