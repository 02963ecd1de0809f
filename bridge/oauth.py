"""Admin sign-in with Mattermost: the OAuth 2.0 authorization-code flow, as a client.

The browser goes to the server's ``/oauth/authorize`` with a random ``state``
that this browser's session keeps; Mattermost sends it back to the callback
with a ``code``; the bridge trades the code for an access token
(``POST /oauth/access_token``, form-encoded, with the client secret) and asks
``GET /api/v4/users/me`` (and ``users/me/teams``) with it who signed in. The
token is used for those two calls only and then dropped.

Who may sign in: a Mattermost system admin (``roles`` holds ``system_admin``),
or a member of the one team the settings name. Everything here raises
:class:`SignInError` with a message for the page; the client secret and the
tokens never appear in one. The HTTP goes through the process's shared
session of bridge/mattermost.py, with its timeout.
"""

from __future__ import annotations

import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests

from . import mattermost as mm

# A state older than this is refused (Mattermost's own codes live 10 minutes:
# model.AuthCodeExpireTime).
STATE_TTL_SECONDS = 600
SYSTEM_ADMIN_ROLE = "system_admin"


@dataclass(frozen=True)
class OAuthSettings:
    """The OAuth app registered in Mattermost, and who may sign in with it."""

    server_url: str = ""
    client_id: str = ""
    client_secret: str = ""
    team: str = ""  # a team's name (as in its URL); its members may sign in
    password_disabled: bool = False

    @property
    def configured(self) -> bool:
        return bool(self.server_url and self.client_id and self.client_secret)


class SignInError(Exception):
    """The sign-in did not happen; ``str(error)`` is for the page.

    ``status`` is the page's HTTP status: 400 for a bad or replayed state,
    403 for a user who is not allowed, 502 when Mattermost failed or refused.
    """

    def __init__(self, message: str, *, status: int, title: str, who: str = ""):
        super().__init__(message)
        self.status = status
        self.title = title
        self.who = who  # the Mattermost username, when one was refused


def new_state() -> str:
    return secrets.token_urlsafe(32)


def check_state(expected: Any, issued_at: Any, given: str | None, now: float) -> None:
    """The ``state`` Mattermost sent back is the one this session was given, and fresh.

    :raises SignInError: (400) otherwise: a forged or replayed callback, or one
        from another browser.
    """
    if not (isinstance(expected, str) and expected and given):
        raise SignInError(
            "This sign-in link was not started in this browser, or was used already. "
            "Start again with Sign in with Mattermost.",
            status=400,
            title="Sign-in link not valid",
        )
    if not hmac.compare_digest(expected.encode(), given.encode()):
        raise SignInError(
            "The sign-in answer does not match the sign-in this browser started "
            "(wrong state). Start again with Sign in with Mattermost.",
            status=400,
            title="Sign-in link not valid",
        )
    if not isinstance(issued_at, int | float) or now - issued_at > STATE_TTL_SECONDS:
        raise SignInError(
            "The sign-in took more than 10 minutes. Start again with Sign in with Mattermost.",
            status=400,
            title="Sign-in expired",
        )


def authorize_url(settings: OAuthSettings, redirect_uri: str, state: str) -> str:
    """Where the browser goes to sign in: the server's /oauth/authorize."""
    query = urlencode(
        {
            "response_type": "code",
            "client_id": settings.client_id,
            "redirect_uri": redirect_uri,
            "state": state,
        }
    )
    return f"{mm.normalize_server_url(settings.server_url)}/oauth/authorize?{query}"


def exchange_code(
    settings: OAuthSettings,
    code: str,
    redirect_uri: str,
    *,
    session: requests.Session | None = None,
    timeout: tuple[float, float] = mm.DEFAULT_TIMEOUT,
) -> str:
    """The access token for ``code`` (POST /oauth/access_token, grant_type=authorization_code)."""
    base_url = mm.normalize_server_url(settings.server_url)
    host = urlsplit(base_url).netloc
    try:
        response = (session or mm.shared_session()).post(
            base_url + "/oauth/access_token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect_uri,
                "client_id": settings.client_id,
                "client_secret": settings.client_secret,
            },
            timeout=timeout,
            allow_redirects=False,
        )
    except requests.RequestException as exc:
        raise _failed(str(mm._transport_error(base_url, exc))) from None
    if response.status_code != 200:
        server_says = str(mm._error_body(response).get("message", "")).strip()[:300]
        said = f" (Mattermost says: {server_says})" if server_says else ""
        raise _failed(
            f"{host} refused to exchange the sign-in code (HTTP {response.status_code}){said}. "
            "The code may have expired or been used already, or the client id, client "
            "secret or callback URL in the settings do not match the OAuth app in Mattermost."
        )
    try:
        body = response.json()
    except ValueError:
        body = None
    token = body.get("access_token") if isinstance(body, dict) else None
    if not isinstance(token, str) or not token:
        raise _failed(f"{host} answered the code exchange without an access token.")
    return token


def signed_in_user(
    settings: OAuthSettings,
    access_token: str,
    *,
    session: requests.Session | None = None,
    timeout: tuple[float, float] = mm.DEFAULT_TIMEOUT,
) -> str:
    """The Mattermost username behind ``access_token``, if that user may administer.

    :raises SignInError: 403 for a user who is not allowed, 502 when the calls fail.
    """
    client = mm.MattermostClient(
        settings.server_url, access_token, session=session, timeout=timeout
    )
    try:
        user, _ = client.me()
        if is_system_admin(user):
            return _username(user)
        if settings.team and in_team(client.teams(), settings.team):
            return _username(user)
    except mm.MattermostError as exc:
        raise _failed(f"Mattermost did not say who signed in: {exc.message}") from None
    who = _username(user)
    allowed = "system admins" + (
        f" and members of the team {settings.team}" if settings.team else ""
    )
    raise SignInError(
        f"@{who} signed in to Mattermost, but only {allowed} may administer the bridge. "
        "Ask an admin of the bridge to name a team you are in, or sign in to Mattermost "
        "as another user.",
        status=403,
        title="Not allowed",
        who=who,
    )


def is_system_admin(user: dict[str, Any]) -> bool:
    roles = user.get("roles")
    return isinstance(roles, str) and SYSTEM_ADMIN_ROLE in roles.split()


def in_team(teams: list[dict[str, Any]], team: str) -> bool:
    """``team`` (a team's name, or its id) is one of ``teams`` (case does not matter)."""
    wanted = team.strip().lower()
    return any(
        isinstance(entry, dict)
        and wanted in (str(entry.get("name", "")).lower(), str(entry.get("id", "")).lower())
        and not entry.get("delete_at")
        for entry in teams
    )


def _username(user: dict[str, Any]) -> str:
    name = user.get("username")
    if not isinstance(name, str) or not name:
        raise _failed("Mattermost answered users/me without a username.")
    return name


def _failed(message: str) -> SignInError:
    return SignInError(
        message + " Nobody was signed in.", status=502, title="Sign-in with Mattermost failed"
    )


# -- settings ---------------------------------------------------------------------

CLIENT_ID = re.compile(r"[A-Za-z0-9]{1,64}")  # Mattermost's are 26 lowercase letters and digits
TEAM_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def settings_problems(fields: dict[str, str]) -> list[str]:
    """What is wrong with ``server_url``, ``client_id``, ``client_secret``, ``team``.

    ``server_url`` is normalized in place (``chat.example.com/`` -> ``https://chat.example.com``).
    """
    problems = []
    try:
        fields["server_url"] = mm.normalize_server_url(fields.get("server_url", ""))
    except ValueError as exc:
        problems.append(f"Server URL: {exc}.")
    if not CLIENT_ID.fullmatch(fields.get("client_id", "")):
        problems.append(
            "Client ID: the OAuth app's client id (letters and digits), as Mattermost shows it."
        )
    if not CLIENT_ID.fullmatch(fields.get("client_secret", "")):
        problems.append("Client secret: the OAuth app's client secret (letters and digits).")
    team = fields.get("team", "")
    if team and not TEAM_NAME.fullmatch(team):
        problems.append("Team: a team's name as in its URL (letters, digits, - and _), or empty.")
    return problems


def sign_in_proven(settings: OAuthSettings, last_sign_in: dict[str, Any] | None) -> bool:
    """A Mattermost sign-in has succeeded with this server and OAuth app."""
    return bool(
        settings.configured
        and last_sign_in
        and last_sign_in.get("server_url") == settings.server_url
        and last_sign_in.get("client_id") == settings.client_id
    )


DISABLE_REFUSED = (
    "The password login can be turned off only after a sign-in with Mattermost has succeeded "
    "with these settings: sign in with Mattermost once (log out, then use the button), then "
    "turn the password login off."
)
