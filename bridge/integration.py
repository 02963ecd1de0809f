"""Setting an environment up: verify the bot, list its channels, activation rules.

Shared by the admin screens and the ``configure`` CLI so both apply the same
rules. Every Mattermost call goes through :func:`logged_client`, so it lands
in the integration log.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import requests

from . import mattermost as mm
from .store import Store, hash_api_key

CHANNEL_TYPES = {"O": "public", "P": "private"}
NOTIFICATION_TYPE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
NOTIFICATION_TYPE_RULE = "use letters, digits and . _ : - (like booking.created)"


def valid_notification_type(kind: str) -> bool:
    """The same rule for the web screen and the CLI."""
    return bool(NOTIFICATION_TYPE.match(kind))


class TokenNeeded(ValueError):
    """A new server URL came without a token: the saved one must not go there."""


# How an environment signs in to Mattermost: a bot's access token, or an
# ordinary account's login (for servers where bot accounts are disabled).
AUTH_MODES = {"token": "bot token", "login": "account login"}


def has_credentials(settings: dict[str, Any]) -> bool:
    """Whether the environment has what its auth mode needs to reach Mattermost."""
    if settings.get("auth_mode") == "login":
        return bool(settings["login_id"] and settings["password"])
    return bool(settings["bot_token"])


def saved_login(settings: dict[str, Any]) -> mm.AccountLogin | None:
    """The saved account login, when the environment signs in that way."""
    if settings.get("auth_mode") == "login" and settings["login_id"]:
        return mm.AccountLogin(settings["login_id"], settings["password"])
    return None


def token_for_server(settings: dict[str, Any], server_url: str, typed_token: str | None) -> str:
    """The bot token that may be sent to ``server_url``.

    The typed token, else the saved one, but the saved one only to the saved
    server URL: whoever changes the URL (a mistake, or someone at an
    unattended admin screen) must not receive the bot's token.

    :raises TokenNeeded: the URL differs from the saved one and no token was typed.
    """
    typed = (typed_token or "").strip()
    if typed:
        return typed
    if settings["bot_token"] and server_url != settings["server_url"]:
        raise TokenNeeded(
            "The server URL changed: type the bot token again. The saved token is only "
            f"sent to the saved server ({settings['server_url']})."
        )
    return settings["bot_token"]


def password_for_server(
    settings: dict[str, Any], server_url: str, login_id: str, typed_password: str | None
) -> str:
    """The password that may be sent to ``server_url`` for ``login_id``.

    The same rule as :func:`token_for_server`: the saved password goes only to
    the saved server, and only for the saved account.

    :raises TokenNeeded: the URL or the account differs and no password was typed.
    """
    typed = typed_password or ""
    if typed:
        return typed
    saved = settings["password"] if settings.get("auth_mode") == "login" else ""
    if saved and server_url != settings["server_url"]:
        raise TokenNeeded(
            "The server URL changed: type the password again. The saved password is only "
            f"sent to the saved server ({settings['server_url']})."
        )
    if saved and login_id.strip().lower() != settings["login_id"].lower():
        raise TokenNeeded(
            "The account changed: type its password. The saved password is only sent "
            f"for the saved account ({settings['login_id']})."
        )
    return saved


@dataclass
class Credential:
    """What an environment signs in with, as typed on a screen or the command line."""

    mode: str  # a key of AUTH_MODES
    token: str = ""
    login: mm.AccountLogin | None = None
    new: bool = False  # differs from the saved one: verify before saving

    @property
    def present(self) -> bool:
        return bool(self.token) if self.mode == "token" else bool(self.login)

    @property
    def label(self) -> str:
        return AUTH_MODES[self.mode]

    def as_fields(self) -> dict[str, Any]:
        """The columns to save; the other mode's secret is cleared, so it never
        reaches a server it was not saved for."""
        if self.mode == "login" and self.login:
            return {
                "auth_mode": "login",
                "login_id": self.login.login_id,
                "password": self.login.password,
                "bot_token": "",
            }
        return {"auth_mode": "token", "bot_token": self.token, "login_id": "", "password": ""}


def credential_for_server(
    settings: dict[str, Any],
    server_url: str,
    mode: str,
    *,
    typed_token: str | None = None,
    login_id: str | None = None,
    typed_password: str | None = None,
) -> Credential:
    """The credential of ``mode`` that may be sent to ``server_url``: typed, else saved.

    :raises TokenNeeded: a saved secret would go to another server or account.
    """
    switched = mode != settings["auth_mode"]
    if mode != "login":
        if switched:  # from an account login: no saved token to fall back on
            token = (typed_token or "").strip()
        else:
            token = token_for_server(settings, server_url, typed_token)
        return Credential("token", token=token, new=switched or token != settings["bot_token"])
    login_id = (login_id or "").strip() or settings["login_id"]
    password = password_for_server(settings, server_url, login_id, typed_password)
    if not login_id or not password:
        return Credential("login", new=True)
    new = switched or login_id != settings["login_id"] or password != settings["password"]
    return Credential("login", login=mm.AccountLogin(login_id, password), new=new)


def logged_client(
    store: Store,
    settings: dict[str, Any],
    *,
    session: requests.Session | None = None,
    timeout: tuple[float, float] = mm.DEFAULT_TIMEOUT,
    message: dict[str, Any] | None = None,
    server_url: str | None = None,
    token: str | None = None,
    login: mm.AccountLogin | None = None,
    sink: list[mm.CallRecord] | None = None,
) -> mm.MattermostClient:
    """A client for an environment whose every call is written to the log.

    It signs in as the environment's auth mode says: the bot token, or the
    account login. ``server_url`` and ``token`` or ``login`` override the
    saved ones (verifying before saving).
    With ``sink``, the calls are collected there instead, for the caller to
    write in the same transaction as the outcome (:func:`call_log_fields`).
    """
    env = settings["name"]

    def log_call(record: mm.CallRecord) -> None:
        if sink is not None:
            sink.append(record)
        else:
            store.log(**call_log_fields(env, message, record))

    if token is None and login is None:
        login = saved_login(settings)
        token = settings["bot_token"]
    return mm.MattermostClient(
        server_url if server_url is not None else settings["server_url"],
        "" if login else token or "",
        login=login,
        session=session,
        timeout=timeout,
        on_call=log_call,
    )


def call_log_fields(
    env: str, message: dict[str, Any] | None, record: mm.CallRecord
) -> dict[str, Any]:
    """The integration-log row for one Mattermost call (never the token)."""
    message = message or {}
    return {
        "env": env,
        "direction": "outbound",
        "action": record.action,
        "target": record.target,
        "outcome": "ok" if record.ok else "error",
        "http_status": record.status,
        "duration_ms": record.duration_ms,
        "error": record.error,
        "conversation_id": message.get("conversation_id") or "",
        "message_id": message.get("id"),
        "post_id": record.post_id,
    }


@dataclass
class BotIdentity:
    """Who the token belongs to, as ``GET /api/v4/users/me`` says."""

    user_id: str
    username: str
    is_bot: bool
    server_version: str
    max_post_size: int | None = None

    def as_fields(self) -> dict[str, Any]:
        fields = {
            "bot_user_id": self.user_id,
            "bot_username": self.username,
            "bot_is_bot": int(self.is_bot),
            "server_version": self.server_version,
            "verified_at": time.time(),
        }
        if self.max_post_size:
            fields["max_post_size"] = self.max_post_size
        return fields


def verify_bot(client: mm.MattermostClient) -> BotIdentity:
    """Ask the server who the token is; raises :class:`mattermost.MattermostError`."""
    user, version = client.me()
    if not isinstance(user, dict) or not user.get("id"):
        raise mm.NotMattermost("the server's answer to users/me has no user id: not Mattermost?")
    try:
        # Long text is split at this size; servers on an old schema allow only 4000.
        max_post_size = client.max_post_size()
    except mm.MattermostError:
        max_post_size = None  # logged; keep the size known so far
    return BotIdentity(
        user_id=user["id"],
        username=user.get("username", ""),
        is_bot=bool(user.get("is_bot")),
        server_version=version,
        max_post_size=max_post_size,
    )


@dataclass
class ChannelGroup:
    """The channels of one team the bot may post in."""

    team_id: str
    team_name: str
    channels: list[dict[str, Any]] = field(default_factory=list)


def channel_groups(client: mm.MattermostClient, bot_user_id: str) -> list[ChannelGroup]:
    """Public and private channels the bot is a member of, grouped by team.

    DMs and group messages come back from Mattermost too: they are left out.
    """
    groups = []
    for team in sorted(client.teams(), key=lambda t: t.get("display_name", "").lower()):
        group = ChannelGroup(team["id"], team.get("display_name") or team.get("name", ""))
        for channel in client.channels_for_team(bot_user_id, team["id"]):
            if channel.get("type") in CHANNEL_TYPES and not channel.get("delete_at"):
                group.channels.append(
                    {
                        "id": channel["id"],
                        "name": channel.get("name", ""),
                        "display_name": channel.get("display_name") or channel.get("name", ""),
                        "type": channel["type"],
                        "team_name": group.team_name,
                    }
                )
        group.channels.sort(key=lambda c: c["display_name"].lower())
        groups.append(group)
    return groups


def team_channel_label(channel: dict[str, Any]) -> str:
    """``Acme / Support`` — how admins recognise a channel."""
    return f"{channel['team_name']} / {channel['display_name']}"


def activation_problems(settings: dict[str, Any]) -> list[str]:
    """What stops an environment from being activated; empty when it can be."""
    problems = []
    what = "account login" if settings.get("auth_mode") == "login" else "bot token"
    if not settings["server_url"] or not has_credentials(settings):
        problems.append(f"fill in the server URL and {what}")
    elif not settings["bot_user_id"]:
        problems.append(f"verify the {what}")
    if not settings["mirror_channel_id"]:
        problems.append("choose a mirror channel")
    return problems


def new_api_key(store: Store, env: str) -> str:
    """A fresh host API key for the environment; the old one stops working."""
    key = f"mmb_{env[:4]}_{secrets.token_urlsafe(32)}"
    store.update_environment(env, api_key_hash=hash_api_key(key))
    return key


def mask_password(password: str) -> str:
    """A saved password shows as dots only: not one of its characters."""
    return "•" * 8 if password else ""


def mask_secret(secret: str) -> str:
    """``••••••wxyz``: enough to recognise a token, not to use it."""
    if not secret:
        return ""
    return "•" * 6 + (secret[-4:] if len(secret) >= 16 else "")
