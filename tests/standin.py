"""A live Mattermost stand-in for integration tests.

``MattermostStandin`` is a real HTTP server on 127.0.0.1 that answers the
Mattermost REST API v4 endpoints the bridge uses, in the shapes and with the
error bodies of the real server (Mattermost 9.x, ``server/channels/api4`` and
``server/channels/app``), and fires outgoing webhooks the way the server does.
The bridge, running under gunicorn in another process, talks to it over HTTP.

    with MattermostStandin() as mm:
        mm.add_outgoing_webhook(mm.channels["support"]["id"], bridge_url + "/hooks/mattermost/test")
        ...                      # drive the bridge against mm.url with mm.bot["token"]
        mm.user_post(mm.agent, mm.channels["support"]["id"], "hello", root_id=root["id"])
        mm.wait_for_webhooks()

Where the real server and a simpler model disagree, the real server wins; the
places where that is surprising say so in a comment.
"""

from __future__ import annotations

import collections
import json
import re
import secrets
import socket
import threading
import time
import traceback
from dataclasses import dataclass
from urllib.parse import urlencode

import requests
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

VERSION_ID = "9.11.0.9.11.0.abc123.false"
MAX_POST_SIZE = 16383  # model.PostMessageMaxRunesV2, the default MaxPostSize
POST_PROPS_MAX_RUNES = 800_000  # model.PostPropsMaxRunes (server/public/model/post.go)
PENDING_POST_TTL = 30.0  # app/post.go pendingPostIDsCacheTTL
GET_POSTS_SINCE_LIMIT = 1000  # sqlstore/post_store.go GetPostsSince: LIMIT 1000
WEBHOOK_TIMEOUT = 30.0  # ServiceSettings.OutgoingIntegrationRequestsTimeout default
WEBHOOK_USER_AGENT = "Mattermost-Bot/1.1"  # services/httpservice default user agent
HOLD_LIMIT = 60.0  # a held post is let go after this long, so no test hangs for ever

# model.NewId(): 16 random bytes, base32 with this alphabet, padding cut -> 26 chars.
_ID_ALPHABET = "ybndrfg8ejkmcpqxot1uwisza345h769"
_VALID_ID = re.compile(r"^[A-Za-z0-9]{26}$")  # model.IsValidId

_PERMISSION_MESSAGE = "You do not have the appropriate permissions."

ROUTES = Map(
    [
        Rule("/api/v4/system/ping", endpoint="ping", methods=["GET"]),
        Rule("/api/v4/config/client", endpoint="client_config", methods=["GET"]),
        # Static paths win over <user_id> in werkzeug, as in the server's router.
        Rule("/api/v4/users/login", endpoint="login", methods=["POST"]),
        Rule("/api/v4/users/logout", endpoint="logout", methods=["POST"]),
        Rule("/api/v4/users/<user_id>", endpoint="get_user", methods=["GET"]),
        Rule("/api/v4/users/<user_id>/teams", endpoint="get_user_teams", methods=["GET"]),
        Rule(
            "/api/v4/users/<user_id>/teams/<team_id>/channels",
            endpoint="get_user_channels",
            methods=["GET"],
        ),
        Rule("/api/v4/channels/<channel_id>", endpoint="get_channel", methods=["GET"]),
        Rule(
            "/api/v4/channels/<channel_id>/members/<user_id>",
            endpoint="get_channel_member",
            methods=["GET"],
        ),
        Rule("/api/v4/channels/<channel_id>/posts", endpoint="get_channel_posts", methods=["GET"]),
        Rule("/api/v4/posts", endpoint="create_post", methods=["POST"]),
        Rule("/api/v4/posts/<post_id>", endpoint="get_post", methods=["GET"]),
        Rule("/api/v4/posts/<post_id>/thread", endpoint="get_post_thread", methods=["GET"]),
        Rule("/api/v4/posts/<post_id>/patch", endpoint="patch_post", methods=["PUT"]),
        Rule("/api/v4/reactions", endpoint="save_reaction", methods=["POST"]),
        # Issue 10: private notices and files.
        Rule("/api/v4/posts/ephemeral", endpoint="create_ephemeral_post", methods=["POST"]),
        Rule("/api/v4/channels/direct", endpoint="create_direct_channel", methods=["POST"]),
        Rule("/api/v4/files", endpoint="upload_file", methods=["POST"]),
        Rule("/api/v4/files/<file_id>", endpoint="get_file", methods=["GET"]),
        Rule("/api/v4/files/<file_id>/info", endpoint="get_file_info", methods=["GET"]),
        # OAuth 2.0 provider (server/channels/web/oauth.go InitOAuth): outside /api/v4.
        Rule("/oauth/authorize", endpoint="oauth_authorize", methods=["GET"]),
        Rule("/oauth/access_token", endpoint="oauth_access_token", methods=["POST"]),
    ]
)
# Endpoints the server serves without a session (api4 APIHandler, not APISessionRequired;
# the OAuth ones are APIHandlerTrustRequester).
_PUBLIC_ENDPOINTS = {"ping", "login", "logout", "oauth_authorize", "oauth_access_token"}
# api4/user.go login: every credential failure not in its unmaskedErrors list is
# rewritten to this (the default config: sign-in by username and e-mail, no SSO).
_INVALID_CREDENTIALS = (
    401,
    "api.user.login.invalid_credentials_email_username",
    "Enter a valid email or username and/or password.",
)
OAUTH_CODE_TTL = 600.0  # model.AuthCodeExpireTime (10 minutes)
SSO_SESSION_SECONDS = 720 * 3600  # ServiceSettings.SessionLengthSSOInHours default (30 days)
# api4/file.go uploadFileMultipart: the form's parts beyond this are refused,
# and FileSettings.MaxFileSize (100 MB by default) bounds each file.
MAX_FILE_SIZE = 100 * 1024 * 1024

# A queued fault: do the work, then cut the connection instead of answering.
LOST = "lost"


@dataclass(frozen=True)
class Slow:
    """A queued fault: answer this request ``seconds`` late."""

    seconds: float


class Gate:
    """Holds requests to one endpoint until released; counts the arrivals."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._open = False
        self.arrivals = 0

    def wait_for_arrivals(self, n: int, timeout: float = 10.0) -> None:
        """Block until ``n`` requests have reached the gate in all."""
        with self._condition:
            if not self._condition.wait_for(lambda: self.arrivals >= n, timeout):
                raise TimeoutError(f"{self.arrivals} of {n} requests reached the gate")

    def release(self) -> None:
        """Let the held requests (and every later one) through."""
        with self._condition:
            self._open = True
            self._condition.notify_all()

    def _pass(self) -> None:
        with self._condition:
            self.arrivals += 1
            self._condition.notify_all()
            # Bounded, so a test that forgets release() cannot hang a handler forever.
            self._condition.wait_for(lambda: self._open, WEBHOOK_TIMEOUT)


def new_id() -> str:
    """Return a new 26-character id shaped like Mattermost's ``model.NewId()``."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(26))


def now_ms() -> int:
    """Return the current time in milliseconds, like ``model.GetMillis()``."""
    return int(time.time() * 1000)


class AppError(Exception):
    """A Mattermost ``model.AppError``: an HTTP status and a JSON error body."""

    def __init__(self, status: int, error_id: str, message: str) -> None:
        super().__init__(f"{status} {error_id}: {message}")
        self.status = status
        self.error_id = error_id
        self.message = message

    def body(self, request_id: str) -> dict:
        """The JSON body the server sends (detailed_error is wiped outside developer mode)."""
        return {
            "id": self.error_id,
            "message": self.message,
            "detailed_error": "",
            "request_id": request_id,
            "status_code": self.status,
        }


def _permission_error() -> AppError:
    return AppError(403, "api.context.permissions.app_error", _PERMISSION_MESSAGE)


def _invalid_url_param(name: str) -> AppError:
    return AppError(
        400,
        "api.context.invalid_url_param.app_error",
        f"Invalid or missing {name} parameter in request URL.",
    )


def _invalid_body_param(name: str) -> AppError:
    return AppError(
        400,
        "api.context.invalid_body_param.app_error",
        f"Invalid or missing {name} in request body.",
    )


def _parse_bool(value: str | None) -> bool:
    """Go's strconv.ParseBool, with anything unparseable read as false."""
    return (value or "") in {"1", "t", "T", "true", "TRUE", "True"}


def _token_from_header(value: str) -> str:
    """The token in an Authorization header, as app.ParseAuthTokenFromRequest reads it."""
    if len(value) > 6 and value[:6].upper() == "BEARER":
        return value[7:]
    if len(value) > 5 and value[:5].lower() == "token":
        return value[6:]
    return ""


class _Handler(WSGIRequestHandler):
    """Request handler that stays quiet and lets stop() cut the requests in flight."""

    def setup(self) -> None:
        super().setup()
        self.server.standin._track_connection(self.connection)

    def finish(self) -> None:
        self.server.standin._untrack_connection(self.connection)
        super().finish()

    def log(self, type: str, message: str, *args) -> None:  # noqa: A002 - werkzeug's signature
        """Silence werkzeug's per-request log lines."""


class MattermostStandin:
    """A seeded Mattermost world behind a real HTTP server on 127.0.0.1.

    State lives on the object and is guarded by one lock; every HTTP request
    runs on its own thread, every webhook delivery on another.
    """

    def __init__(self, *, pending_post_ttl: float = PENDING_POST_TTL) -> None:
        """:param pending_post_ttl: seconds a ``pending_post_id`` is remembered (30 on a
        real server); a test shortens it to reach "retried after the window" quickly."""
        self._lock = threading.RLock()
        self.url: str | None = None
        self.delay = 0.0
        # Seconds every create-post request takes (a slow server), on top of ``delay``.
        self.post_delay = 0.0
        # Create-post requests being answered right now; ``_in_flight`` wakes waiters.
        self.posts_in_flight = 0
        self._in_flight = threading.Condition(self._lock)
        self._gate: _Gate | None = None
        # The server's MaxPostSize (4000 on an old database schema), as the client config says.
        self.max_post_size = MAX_POST_SIZE
        self.rate_limit_every = 0
        self.pending_post_ttl = pending_post_ttl

        self.posts: list[dict] = []
        # Ephemeral posts only their user sees (never in posts / GET answers): from
        # posts/ephemeral, a command's or a click's answer. {"user_id", "channel_id",
        # "root_id", "message"} (+ "post" from posts/ephemeral).
        self.ephemeral_posts: list[dict] = []
        self.files: dict[str, dict] = {}  # file id -> FileInfo plus "content" (never served)
        self.reactions: list[dict] = []
        self.requests_seen: list[tuple[str, str]] = []
        self.webhook_deliveries: list[dict] = []
        self.internal_errors: list[str] = []  # tracebacks of stand-in bugs (answered as 500)
        # Slash commands and button clicks (issue 10): each call made.
        self.commands: list[dict] = []
        self.command_calls: list[dict] = []
        self.action_calls: list[dict] = []

        self._users: dict[str, dict] = {}
        self._tokens: dict[str, str] = {}  # token -> user id
        # Login sessions (app/login.go DoLogin): session token -> user id, and the
        # passwords of the accounts that may log in (kept here, never served).
        self._sessions: dict[str, str] = {}
        self._passwords: dict[str, str] = {}
        self.logins: list[tuple[str, bool]] = []  # (login_id, succeeded), in order
        self._team_members: set[str] = set()
        self._channels_by_id: dict[str, dict] = {}
        self._members: dict[tuple[str, str], dict] = {}  # (channel id, user id) -> ChannelMember
        self._posts_by_id: dict[str, dict] = {}
        self._hooks: list[dict] = []
        self._pending: dict[str, tuple[str, float]] = {}  # pending_post_id -> (post id, expiry)
        # Per-request faults, consumed one per API request in the order queued:
        # an HTTP status, LOST (answer lost after the work is done) or Slow(seconds).
        self._failures: collections.deque[int | str | Slow] = collections.deque()
        self.failing_status: int | None = None  # every request once the queue is empty
        self._gates: dict[str, Gate] = {}
        self._request_count = 0
        # OAuth provider: registered apps by client id, issued codes, and the
        # user logged in to Mattermost in "the browser" (None: not logged in).
        self._oauth_apps: dict[str, dict] = {}
        self._auth_codes: dict[str, dict] = {}
        self.oauth_user: dict | None = None

        self._server = None
        self._serve_thread: threading.Thread | None = None
        self._port = 0
        self._down = True
        self._connections: set[socket.socket] = set()
        self._webhook_threads: list[threading.Thread] = []
        self._seed()

    # ------------------------------------------------------------------ world

    def _seed(self) -> None:
        """Create team "acme", the two bots, alice, the channels and the DM."""
        created = now_ms()
        self.team = {
            "id": new_id(),
            "create_at": created,
            "update_at": created,
            "delete_at": 0,
            "display_name": "Acme",
            "name": "acme",
            "description": "",
            "email": "",
            "type": "O",
            "company_name": "",
            "allowed_domains": "",
            "invite_id": "",
            "allow_open_invite": False,
            "last_team_icon_update": 0,
            "scheme_id": None,
            "group_constrained": None,
            "policy_id": None,
            "cloud_limits_archived": False,
        }
        self.bot = self._add_user("bridge-bot", first_name="Bridge Bot", is_bot=True)
        self.prod_bot = self._add_user("bridge-bot-prod", first_name="Bridge Bot Prod", is_bot=True)
        # The DM name is the two user ids sorted; pick alice's id so it reads "<bot>__<alice>".
        agent_id = new_id()
        while agent_id < self.bot["id"]:
            agent_id = new_id()
        self.agent = self._add_user(
            "alice", first_name="Alice", last_name="Agent", is_bot=False, user_id=agent_id
        )
        self._team_members.update(self._users)

        self.channels: dict[str, dict] = {}
        bots = (self.bot["id"], self.prod_bot["id"])
        for name, display, kind, with_bots, archived in (
            ("town-square", "Town Square", "O", True, False),
            ("support", "Support", "O", True, False),
            ("sales", "Sales", "O", True, False),
            ("billing", "Billing", "O", True, False),
            ("private-ops", "Private Ops", "P", True, False),
            ("not-joined", "Not Joined", "O", False, False),
            ("archived", "Archived", "O", True, True),
        ):
            channel = self._add_channel(name, display, kind, self.team["id"])
            if archived:
                channel["delete_at"] = channel["update_at"] = now_ms()
            for user_id in (*bots, self.agent["id"]) if with_bots else (self.agent["id"],):
                self.add_member(channel["id"], user_id)
        self.dm_channel = self._add_channel(
            f"{self.bot['id']}__{self.agent['id']}", "", "D", team_id=""
        )
        self.add_member(self.dm_channel["id"], self.bot["id"])
        self.add_member(self.dm_channel["id"], self.agent["id"])

    def _add_user(
        self,
        username: str,
        *,
        first_name: str = "",
        last_name: str = "",
        is_bot: bool,
        user_id: str | None = None,
    ) -> dict:
        """Create a user with a personal access token (kept in the dict, never served)."""
        created = now_ms()
        user = {
            "id": user_id or new_id(),
            "create_at": created,
            "update_at": created,
            "delete_at": 0,
            "username": username,
            "auth_service": "",
            "email": f"{username}@acme.example",
            "nickname": "",
            "first_name": first_name,
            "last_name": last_name,
            "position": "",
            "roles": "system_user",
            "props": {},
            "notify_props": {
                "channel": "true",
                "comments": "never",
                "desktop": "mention",
                "desktop_sound": "true",
                "email": "true",
                "first_name": "false",
                "mention_keys": "",
                "push": "mention",
                "push_status": "away",
            },
            "last_password_update": created,
            "locale": "en",
            "timezone": {
                "automaticTimezone": "",
                "manualTimezone": "",
                "useAutomaticTimezone": "true",
            },
            "is_bot": is_bot,
            "bot_description": "Mirrors web chat conversations" if is_bot else "",
            "disable_welcome_email": False,
            "token": new_id(),
        }
        self._users[user["id"]] = user
        self._tokens[user["token"]] = user["id"]
        return user

    def _add_channel(self, name: str, display_name: str, kind: str, team_id: str) -> dict:
        created = now_ms()
        channel = {
            "id": new_id(),
            "create_at": created,
            "update_at": created,
            "delete_at": 0,
            "team_id": team_id,
            "type": kind,
            "display_name": display_name,
            "name": name,
            "header": "",
            "purpose": "",
            "last_post_at": created,
            "total_msg_count": 0,
            "extra_update_at": 0,
            "creator_id": self.agent["id"],
            "scheme_id": None,
            "props": None,
            "group_constrained": None,
            "shared": None,
            "total_msg_count_root": 0,
            "policy_id": None,
            "last_root_post_at": created,
        }
        self.channels[name] = channel
        self._channels_by_id[channel["id"]] = channel
        return channel

    # ------------------------------------------------------- helpers for tests

    def add_member(self, channel_id: str, user_id: str) -> None:
        """Make ``user_id`` a member of ``channel_id`` (no-op if already one)."""
        with self._lock:
            if (channel_id, user_id) in self._members:
                return
            self._members[(channel_id, user_id)] = {
                "channel_id": channel_id,
                "user_id": user_id,
                "roles": "channel_user",
                "last_viewed_at": 0,
                "msg_count": 0,
                "mention_count": 0,
                "mention_count_root": 0,
                "urgent_mention_count": 0,
                "msg_count_root": 0,
                "notify_props": {
                    "channel_auto_follow_threads": "off",
                    "desktop": "default",
                    "email": "default",
                    "ignore_channel_mentions": "default",
                    "mark_unread": "all",
                    "push": "default",
                },
                "last_update_at": now_ms(),
                "scheme_guest": False,
                "scheme_user": True,
                "scheme_admin": False,
                "explicit_roles": "",
            }

    def remove_member(self, channel_id: str, user_id: str) -> None:
        """Remove ``user_id`` from ``channel_id`` (no-op if not a member)."""
        with self._lock:
            self._members.pop((channel_id, user_id), None)

    def add_account(self, username: str, password: str) -> dict:
        """An ordinary (not bot) account that logs in with ``password``, in the team and
        in every channel the bots are in: for servers where bot accounts are disabled."""
        with self._lock:
            user = self._add_user(username, first_name=username.title(), is_bot=False)
            self._passwords[user["id"]] = password
            self._team_members.add(user["id"])
            bot_channels = [c for (c, u) in self._members if u == self.bot["id"]]
        for channel_id in bot_channels:
            self.add_member(channel_id, user["id"])
        return user

    def expire_sessions(self, user: dict | str) -> None:
        """End every login session of ``user``: its next request gets the real 401
        (api.context.session_expired.app_error), as when SessionLengthWebInHours passes."""
        user_id = user["id"] if isinstance(user, dict) else user
        with self._lock:
            for token in [t for t, u in self._sessions.items() if u == user_id]:
                del self._sessions[token]

    def sessions_of(self, user: dict | str) -> int:
        """How many login sessions ``user`` has open."""
        user_id = user["id"] if isinstance(user, dict) else user
        with self._lock:
            return sum(1 for u in self._sessions.values() if u == user_id)

    def add_user(self, username: str, *, roles: str = "system_user", in_team: bool = True) -> dict:
        """Another person (not in any channel): a system admin with roles="system_admin system_user"."""
        with self._lock:
            user = self._add_user(username, is_bot=False)
            user["roles"] = roles
            if in_team:
                self._team_members.add(user["id"])
            return user

    def add_oauth_app(self, callback_urls: list[str], *, trusted: bool = True) -> dict:
        """Register an OAuth 2.0 app (System Console: Integrations > OAuth 2.0 Applications).

        A trusted app is authorized without the consent page (authorizeOAuthPage).
        Returns the app with its ``id`` (the client id) and ``client_secret``.
        """
        app = {
            "id": new_id(),
            "client_secret": new_id(),  # CreateOAuthApp: ClientSecret = model.NewId()
            "name": "Mattermost Bridge",
            "callback_urls": list(callback_urls),
            "is_trusted": trusted,
        }
        with self._lock:
            self._oauth_apps[app["id"]] = app
        return dict(app)

    def revoke_token(self, token: str) -> None:
        """Revoke a token: every later request with it gets 401."""
        with self._lock:
            self._tokens.pop(token, None)

    def fail_next(self, n: int, status: int) -> None:
        """Answer the next ``n`` API requests with ``status`` (429: the rate limiter's reply).

        Faults queued by fail_next, lose_next_answers and slow_next apply in the
        order they were queued, one per request.
        """
        with self._lock:
            self._failures.extend([status] * n)

    def lose_next_answers(self, n: int) -> None:
        """Serve the next ``n`` API requests fully (a post is saved, a pending id
        recorded), then cut the connection without answering: a lost answer."""
        with self._lock:
            self._failures.extend([LOST] * n)

    def slow_next(self, n: int, seconds: float) -> None:
        """Serve the next ``n`` API requests ``seconds`` late (mid-way for a create-post:
        the pending_post_id is reserved but the post not yet saved)."""
        with self._lock:
            self._failures.extend([Slow(seconds)] * n)

    def faults_left(self) -> int:
        """How many queued per-request faults have not been used yet."""
        with self._lock:
            return len(self._failures)

    def hold(self, endpoint: str) -> Gate:
        """Stop requests to ``endpoint`` (e.g. "create_post", "ping") at the point
        where ``delay`` is spent, until the returned gate is released.

        Tests use it to order events: wait for ``gate.wait_for_arrivals(n)``, act,
        then ``gate.release()``. Released gates let everything through.
        """
        gate = Gate()
        with self._lock:
            self._gates[endpoint] = gate
        return gate

    def wait_for_pending_windows_to_close(self, timeout: float = 10.0) -> None:
        """Block until no pending_post_id is remembered any more (each is kept for
        ``pending_post_ttl`` seconds after its post was saved)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                now = time.monotonic()
                open_windows = [e for e in self._pending.values() if e[1] >= now]
            if not open_windows:
                return
            if now >= deadline:
                raise TimeoutError(f"{len(open_windows)} pending_post_id windows still open")
            time.sleep(0.05)

    def posts_in(self, channel_id: str) -> list[dict]:
        """The posts of one channel, oldest first (deleted ones included, see delete_at)."""
        with self._lock:
            return [post for post in self.posts if post["channel_id"] == channel_id]

    def get_post(self, post_id: str) -> dict | None:
        """The stored post with that id, or None."""
        with self._lock:
            return self._posts_by_id.get(post_id)

    def delete_post(self, post_id: str) -> None:
        """Delete a post as a user would; deleting a root deletes its replies too."""
        with self._lock:
            deleted = now_ms()
            for post in self.posts:
                if post["id"] == post_id or post["root_id"] == post_id:
                    post["delete_at"] = post["update_at"] = deleted

    def add_outgoing_webhook(
        self,
        channel_id: str,
        callback_url: str,
        *,
        content_type: str = "application/x-www-form-urlencoded",
        trigger_words: tuple[str, ...] | list[str] = (),
        token: str | None = None,
        trigger_when: int = 0,
        creator_id: str | None = None,
        display_name: str = "Bridge",
    ) -> str:
        """Register an outgoing webhook and return its 26-character token.

        ``channel_id`` may be "" for a team-wide hook, which then needs trigger
        words. ``trigger_when`` 0 = first word equals a trigger word, 1 = starts
        with one. ``creator_id`` (default: the bot) authors the posts created
        from the hook's responses.
        """
        with self._lock:
            if channel_id:
                channel = self._channels_by_id[channel_id]
                # api4/webhook.go refuses hooks on anything but a public channel.
                if channel["type"] != "O":
                    raise ValueError("outgoing webhooks can only watch public channels")
            elif not trigger_words:
                raise ValueError("a hook needs a channel or trigger words")
            hook = {
                "id": new_id(),
                "token": token or new_id(),
                "creator_id": creator_id or self.bot["id"],
                "channel_id": channel_id,
                "team_id": self.team["id"],
                "trigger_words": list(trigger_words),
                "trigger_when": trigger_when,
                "callback_urls": [callback_url],
                "display_name": display_name,
                "content_type": content_type,
            }
            self._hooks.append(hook)
            return hook["token"]

    def update_outgoing_webhook(self, token: str, *, content_type: str) -> None:
        """Change a hook's content type, as an admin editing it in Integrations would."""
        with self._lock:
            (hook,) = [hook for hook in self._hooks if hook["token"] == token]
            hook["content_type"] = content_type

    def user_post(
        self,
        user: dict | str,
        channel_id: str,
        message: str,
        root_id: str = "",
        file_ids: list[str] | None = None,
    ) -> dict:
        """Post as ``user`` the way the web app does (same checks, fires webhooks).

        ``file_ids``: files the user uploaded first (:meth:`upload_as`).
        Raises ``AppError`` when the server would refuse the post.
        """
        with self._lock:
            author = self._users[user if isinstance(user, str) else user["id"]]
            channel = self._check_can_post(author, channel_id)
        fields = {"channel_id": channel_id, "message": message, "root_id": root_id}
        if file_ids:
            fields["file_ids"] = list(file_ids)
        return self._finish_create(author, channel, fields)

    def hold_posts(self, *, after_save: bool = False) -> None:
        """Hold every create-post request from now on open until :meth:`release_posts`.

        ``after_save`` False holds them before the post is saved (a server that
        has not got to it yet), True after it is saved but before the answer
        (the answer is what gets lost).
        """
        with self._lock:
            self._gate = _Gate(after_save)

    def release_posts(self, *, save: bool = True) -> None:
        """Let the held requests go; ``save`` False abandons the ones held before saving.

        An abandoned request saves nothing and frees its pending_post_id, as
        app/post.go CreatePost does (its deferred seenPendingPostIdsCache.Remove)
        when the post cannot be saved, e.g. once the client has gone.
        """
        with self._lock:
            gate, self._gate = self._gate, None
        if gate is not None:
            gate.save = save
            gate.event.set()

    def wait_for_posts_in_flight(self, count: int, timeout: float = 10.0) -> None:
        """Block until at least ``count`` create-post requests are being answered."""
        with self._in_flight:
            if not self._in_flight.wait_for(lambda: self.posts_in_flight >= count, timeout):
                raise TimeoutError(
                    f"{self.posts_in_flight} create-post requests in flight, not {count}"
                )

    def wait_for_webhooks(self, timeout: float = 5.0) -> None:
        """Block until every webhook delivery started so far has finished.

        Raises ``TimeoutError`` if some are still running after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._webhook_threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                raise TimeoutError("webhook deliveries still running")
        with self._lock:
            self._webhook_threads = [t for t in self._webhook_threads if t.is_alive()]

    # ------------------------------------------------------------- lifecycle

    def start(self) -> MattermostStandin:
        """Start listening on a free port of 127.0.0.1 and set ``self.url``."""
        if self._server is not None:
            raise RuntimeError("the stand-in is already running")
        self._listen(0)
        return self

    def restart(self) -> None:
        """Listen again on the same port as before, with the same state."""
        if not self._port:
            raise RuntimeError("restart() needs an earlier start()")
        if self._server is None:
            self._listen(self._port)

    def stop(self) -> None:
        """Go down: close the listening socket (refused) and reset requests in flight."""
        server, thread = self._server, self._serve_thread
        if server is None:
            return
        self._server = self._serve_thread = None
        self._down = True
        server.shutdown()
        server.server_close()
        thread.join()
        # Cut requests still in flight (e.g. sleeping in ``delay``), as a crash would.
        # (werkzeug answers "Connection: close", so there are no idle keep-alives.)
        with self._lock:
            connections = list(self._connections)
            gates = list(self._gates.values())
            self._gates.clear()
        for connection in connections:
            _shut(connection)
        for gate in gates:  # their requests were cut above; let the threads end
            gate.release()

    def close(self) -> None:
        """Stop the server and wait (briefly) for webhook deliveries; idempotent."""
        self.release_posts(save=False)  # no handler thread left waiting on a gate
        self.stop()
        try:
            self.wait_for_webhooks(timeout=5.0)
        except TimeoutError:
            pass  # daemon threads; a hung receiver must not hang the test run

    def __enter__(self) -> MattermostStandin:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _listen(self, port: int) -> None:
        server = make_server(
            "127.0.0.1", port, self._wsgi_app, threaded=True, request_handler=_Handler
        )
        server.standin = self
        self._port = server.server_port
        self.url = f"http://127.0.0.1:{self._port}"
        self._down = False
        self._server = server
        self._serve_thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"mattermost-standin-{self._port}",
            daemon=True,
        )
        self._serve_thread.start()

    def _track_connection(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.add(connection)
        if self._down:  # accepted just as stop() ran
            _shut(connection)

    def _untrack_connection(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.discard(connection)

    # ------------------------------------------------------------ HTTP layer

    def _wsgi_app(self, environ, start_response):
        request = Request(environ)
        try:
            response = self._respond(request)
        finally:
            request.close()  # the spooled files of a multipart upload
        if environ.get("standin.lost"):
            # The work is done (a post saved), but the client never hears of it.
            _shut(environ["werkzeug.socket"])
            raise ConnectionAbortedError("stand-in: answer lost on purpose")
        return response(environ, start_response)

    def _respond(self, request: Request) -> Response:
        """Record, inject failures, route, authenticate, dispatch."""
        request_id = new_id()
        with self._lock:
            # Path only: a query string could carry access_token.
            self.requests_seen.append((request.method, request.path))
            fault = self._next_fault()
        if fault == LOST:
            request.environ["standin.lost"] = True
        elif isinstance(fault, Slow):
            request.environ["standin.delay"] = fault.seconds
        elif fault is not None:
            self._pause(request, "")
            if fault == 429:
                return _rate_limited()
            error = AppError(fault, "stand_in.injected.app_error", f"Injected {fault}.")
            return self._json(fault, error.body(request_id), request_id)
        try:
            endpoint, args = ROUTES.bind_to_environ(request.environ).match()
        except NotFound:
            error = AppError(404, "api.context.404.app_error", "Sorry, we could not find the page.")
            return self._json(404, error.body(request_id), request_id)
        except MethodNotAllowed:
            return Response("", 405)  # gorilla/mux: empty body
        request.environ["standin.endpoint"] = endpoint
        try:
            if endpoint != "create_post":  # create_post pauses mid-way, see there
                self._pause(request, endpoint)
            user = None if endpoint in _PUBLIC_ENDPOINTS else self._authenticate(request)
            result = getattr(self, f"_api_{endpoint}")(request, user, **args)
            if isinstance(result, Response):  # OAuth pages, file downloads: not JSON
                return result
            status, body = result
        except AppError as error:
            return self._json(error.status, error.body(request_id), request_id)
        except Exception:  # a stand-in bug: answer like the server would, keep the trace
            with self._lock:
                self.internal_errors.append(traceback.format_exc())
            error = AppError(500, "stand_in.internal.app_error", "Stand-in bug: internal_errors.")
            return self._json(500, error.body(request_id), request_id)
        response = self._json(status, body, request_id)
        response.headers.update(request.environ.get("standin.headers", {}))
        return response

    def _next_fault(self) -> int | str | Slow | None:
        """The next queued fault, else failing_status, else rate_limit_every (lock held)."""
        self._request_count += 1
        if self._failures:
            return self._failures.popleft()
        if self.failing_status is not None:
            return self.failing_status
        if self.rate_limit_every and self._request_count % self.rate_limit_every == 0:
            return 429
        return None

    @staticmethod
    def _json(status: int, body, request_id: str) -> Response:
        return Response(
            json.dumps(body),
            status,
            headers={"X-Version-Id": VERSION_ID, "X-Request-Id": request_id},
            content_type="application/json",
        )

    def _pause(self, request: Request, endpoint: str) -> None:
        """Where a request spends ``delay`` (a slow server) and waits at a held gate."""
        delay = self.delay + request.environ.get("standin.delay", 0.0)
        if delay > 0:
            time.sleep(delay)
        with self._lock:
            gate = self._gates.get(endpoint)
        if gate is not None:
            gate._pass()

    def _authenticate(self, request: Request) -> dict:
        token = _token_from_header(request.headers.get("Authorization", ""))
        with self._lock:
            user_id = (self._tokens.get(token) or self._sessions.get(token)) if token else None
            if user_id is not None:
                return self._users[user_id]
        raise AppError(
            401,
            "api.context.session_expired.app_error",
            "Invalid or expired session, please login again.",
        )

    # ----------------------------------------------------------- endpoints

    def _api_oauth_authorize(self, request, user):
        """GET /oauth/authorize: web/oauth.go authorizeOAuthPage with a trusted app.

        Errors are redirects to the web app's /error page (utils.RenderWebError);
        not logged in is a redirect to /login?redirect_to=...; a trusted (or
        already authorized) app gets a code at once (app/oauth.go
        GetOAuthCodeRedirect): 302 to redirect_uri?code=...&state=... The
        consent page for an untrusted app is the web app's, not modelled here.
        """
        args = request.args
        client_id, redirect_uri = args.get("client_id", ""), args.get("redirect_uri", "")
        state = args.get("state", "")
        # model.AuthorizeRequest.IsValid
        if (
            not _VALID_ID.match(client_id)
            or args.get("response_type") not in ("code", "token")
            or not redirect_uri.startswith(("http://", "https://"))
            or len(state) > 1024
            or len(args.get("scope", "")) > 128
        ):
            return _web_error(self.url, "oauth_invalid_param", "Invalid authorize request.")
        with self._lock:
            app = self._oauth_apps.get(client_id)
            user = self.oauth_user
            if app is None:
                return _web_error(self.url, "", "OAuth app not found.")
            if user is None:
                return _redirect(
                    f"{self.url}/login?" + urlencode({"redirect_to": request.full_path})
                )
            if redirect_uri not in app["callback_urls"]:  # OAuthApp.IsValidRedirectURL: exact
                return _web_error(
                    self.url,
                    "oauth_invalid_redirect_url",
                    "Invalid redirect_uri: it must match a registered callback URL.",
                )
            if not app["is_trusted"]:
                return Response(
                    "<html>consent page (web app)</html>", 200, content_type="text/html"
                )
            code = new_id() + new_id()  # GetOAuthCodeRedirect: model.NewId() + model.NewId()
            self._auth_codes[code] = {
                "client_id": client_id,
                "user_id": user["id"],
                "redirect_uri": redirect_uri,
                "expires": time.monotonic() + OAUTH_CODE_TTL,
            }
        separator = "&" if "?" in redirect_uri else "?"
        return _redirect(redirect_uri + separator + urlencode({"code": code, "state": state}))

    def _api_oauth_access_token(self, request, user):
        """POST /oauth/access_token: web/oauth.go getAccessToken, app/oauth.go
        GetOAuthAccessTokenForCodeFlow (authorization_code grant; a code works once)."""
        form = request.form
        code, grant = form.get("code", ""), form.get("grant_type", "")
        if grant == "refresh_token":
            raise AppError(501, "stand_in.not_modelled.app_error", "refresh_token: not modelled.")
        if grant != "authorization_code":
            raise AppError(
                400,
                "api.oauth.get_access_token.bad_grant.app_error",
                "invalid_request: Bad grant_type.",
            )
        if not code:
            raise AppError(
                400,
                "api.oauth.get_access_token.missing_code.app_error",
                "invalid_request: Missing code.",
            )
        client_id = form.get("client_id", "")
        if not _VALID_ID.match(client_id):
            raise AppError(
                400,
                "api.oauth.get_access_token.bad_client_id.app_error",
                "invalid_request: Bad client_id.",
            )
        credentials = "api.oauth.get_access_token.credentials.app_error"
        expired = "api.oauth.get_access_token.expired_code.app_error"
        with self._lock:
            app = self._oauth_apps.get(client_id)
            if app is None:
                raise AppError(404, credentials, "invalid_client: Invalid client credentials.")
            if not secrets.compare_digest(app["client_secret"], form.get("client_secret", "")):
                raise AppError(403, credentials, "invalid_client: Invalid client credentials.")
            grant_data = self._auth_codes.get(code)
            if grant_data is None or grant_data["client_id"] != client_id:
                raise AppError(
                    400, expired, "invalid_grant: Invalid or expired authorization code."
                )
            if grant_data["expires"] < time.monotonic():
                del self._auth_codes[code]
                raise AppError(
                    403, expired, "invalid_grant: Invalid or expired authorization code."
                )
            if grant_data["redirect_uri"] != form.get("redirect_uri", ""):
                raise AppError(
                    400,
                    "api.oauth.get_access_token.redirect_uri.app_error",
                    "invalid_request: Supplied redirect_uri does not match authorization code "
                    "redirect_uri.",
                )
            # A new OAuth session; its token works as a Bearer token on /api/v4.
            token, refresh = new_id(), new_id()
            self._tokens[token] = grant_data["user_id"]
            del self._auth_codes[code]  # RemoveAuthData: the code is spent
        body = {
            "access_token": token,
            "token_type": "bearer",  # model.AccessTokenType
            "expires_in": SSO_SESSION_SECONDS,
            "scope": "user",  # model.DefaultScope
            "refresh_token": refresh,
        }
        response = self._json(200, body, new_id())
        response.headers["Cache-Control"] = "no-store"
        response.headers["Pragma"] = "no-cache"
        return response

    def _api_client_config(self, request, user):
        """GetClientConfig, format=old: strings only, MaxPostSize among the computed ones."""
        if request.args.get("format") != "old":
            raise AppError(501, "api.config.client.old_format.app_error", "Not implemented.")
        return 200, {
            "Version": ".".join(VERSION_ID.split(".")[:3]),
            "SiteName": "Acme Chat",
            "MaxPostSize": str(self.max_post_size),
            "NoAccounts": "false",
        }

    def _api_login(self, request, user):
        """api4/user.go login -> app/login.go DoLogin: the user JSON, and the new
        session's token in the ``Token`` header (a cookie only for X-Requested-With:
        XMLHttpRequest, which the bridge never sends)."""
        try:
            props = json.loads(request.get_data(as_text=True) or "{}")
        except ValueError:
            props = {}  # model.MapFromJSON: bad JSON reads as an empty map
        props = props if isinstance(props, dict) else {}
        login_id = str(props.get("login_id") or "")
        password = str(props.get("password") or "")
        with self._lock:
            found = self._user_for_login(login_id)
            if found is not None and found["delete_at"]:
                self.logins.append((login_id, False))
                raise AppError(  # unmasked in api4/user.go login
                    401,
                    "api.user.login.inactive.app_error",
                    "Login failed because your account has been deactivated.  "
                    "Please contact an administrator.",
                )
            # A bot has no password (app/authentication.go refuses bot logins): masked too.
            known = found is not None and found["id"] in self._passwords
            if not known or not secrets.compare_digest(
                self._passwords[found["id"]].encode(), password.encode()
            ):
                self.logins.append((login_id, False))
                raise AppError(*_INVALID_CREDENTIALS)
            token = new_id()  # app/session.go CreateSession: model.NewId()
            self._sessions[token] = found["id"]
            self.logins.append((login_id, True))
            request.environ["standin.headers"] = {"Token": token}
            return 200, _user_for_client(found)

    def _user_for_login(self, login_id: str) -> dict | None:
        """app/user.go GetUserForLogin: by username, else by e-mail (lock held)."""
        wanted = login_id.strip().lower()
        for user in self._users.values():
            if wanted and wanted in (user["username"], user["email"].lower()):
                return user
        return None

    def _api_logout(self, request, user):
        """api4/user.go Logout: revoke the session the request carries, if any; always OK."""
        token = _token_from_header(request.headers.get("Authorization", ""))
        with self._lock:
            self._sessions.pop(token, None)
        return 200, {"status": "OK"}

    def _api_ping(self, request, user):
        return 200, {
            "ActiveSearchBackend": "database",
            "AndroidLatestVersion": "",
            "AndroidMinVersion": "",
            "IosLatestVersion": "",
            "IosMinVersion": "",
            "status": "OK",
        }

    def _api_get_user(self, request, user, user_id):
        user_id = _resolve_user_id(user_id, user)
        with self._lock:
            found = self._users.get(user_id)
            if found is None:
                raise AppError(404, "app.user.missing_account.const", "Unable to find the user.")
            return 200, _user_for_client(found)

    def _api_get_user_teams(self, request, user, user_id):
        user_id = _resolve_user_id(user_id, user)
        if user_id != user["id"]:
            raise _permission_error()
        with self._lock:
            return 200, [dict(self.team)] if user_id in self._team_members else []

    def _api_get_user_channels(self, request, user, user_id, team_id):
        user_id = _resolve_user_id(user_id, user)
        if not _VALID_ID.match(team_id):
            raise _invalid_url_param("team_id")
        if user_id != user["id"]:
            raise _permission_error()
        include_deleted = _parse_bool(request.args.get("include_deleted"))
        with self._lock:
            if team_id != self.team["id"] or user_id not in self._team_members:
                raise _permission_error()
            # The store query is "TeamId = ? OR TeamId = ''": DMs and GMs come along.
            return 200, [
                dict(channel)
                for channel in self._channels_by_id.values()
                if (channel["id"], user_id) in self._members
                and channel["team_id"] in (team_id, "")
                and (include_deleted or not channel["delete_at"])
            ]

    def _api_get_channel(self, request, user, channel_id):
        with self._lock:
            channel = self._find_channel(channel_id)
            if not self._can_read_channel(user, channel):
                raise _permission_error()
            return 200, dict(channel)

    def _api_get_channel_posts(self, request, user, channel_id):
        """getPostsForChannel (api4/post.go): with ``since`` > 0, GetPostsSince.

        As in sqlstore/post_store.go GetPostsSince (non-collapsed threads): the
        channel's posts with ``UpdateAt > since`` -- deleted ones included, with
        their delete_at set -- at most 1,000 of them (``LIMIT 1000`` with no ORDER
        BY: which 1,000 is up to the database; here the oldest, in storage order),
        plus the roots of those replies in ``posts``; ``order`` lists only the
        posts changed after ``since``, newest CreateAt first. app/post.go
        GetPostsSince passes the list on unchanged (filterInaccessiblePosts only
        matters with Cloud's history limit). A reply bumps its root's UpdateAt
        (SaveMultiple), so the root of a thread with new replies comes along too.

        Without ``since`` the real server pages through the channel (GetPostsPage);
        here: the newest ``per_page`` (default 60) posts that are not deleted.
        """
        since_text = request.args.get("since", "")
        if since_text and not re.fullmatch(r"[+-]?[0-9]+", since_text):  # strconv.ParseInt
            raise _invalid_url_param("since")
        since = int(since_text or 0)
        with self._lock:
            channel = self._find_channel(channel_id)
            if not self._can_read_channel(user, channel):
                raise _permission_error()
            in_channel = [p for p in self.posts if p["channel_id"] == channel_id]
            position = {p["id"]: n for n, p in enumerate(in_channel)}  # same-ms ties
            if since > 0:
                changed = [p for p in in_channel if p["update_at"] > since][:GET_POSTS_SINCE_LIMIT]
                listed = {p["id"]: p for p in changed}
                for post in changed:
                    if post["root_id"] and post["root_id"] in self._posts_by_id:
                        listed.setdefault(post["root_id"], self._posts_by_id[post["root_id"]])
                found = sorted(
                    listed.values(),
                    key=lambda p: (p["create_at"], position.get(p["id"], -1)),
                    reverse=True,
                )
                order = [p["id"] for p in found if p["update_at"] > since]
            else:
                per_page = request.args.get("per_page", "60")
                per_page = int(per_page) if per_page.isdigit() else 60
                found = [p for p in in_channel if not p["delete_at"]][::-1][:per_page]
                order = [p["id"] for p in found]
            # One pass for every thread's reply count: a retry reads long threads.
            replies = self._reply_stats({p["root_id"] or p["id"] for p in found})
            return 200, {
                "order": order,
                "posts": {p["id"]: self._post_for_client(p, replies=replies) for p in found},
                "next_post_id": "",
                "prev_post_id": "",
                "has_next": False,
            }

    def _api_get_channel_member(self, request, user, channel_id, user_id):
        user_id = _resolve_user_id(user_id, user)
        if not _VALID_ID.match(channel_id):
            raise _invalid_url_param("channel_id")
        with self._lock:
            channel = self._channels_by_id.get(channel_id)
            if channel is None or not self._can_read_channel(user, channel):
                raise _permission_error()
            member = self._members.get((channel_id, user_id))
            if member is None:
                raise AppError(
                    404,
                    "app.channel.get_member.missing.app_error",
                    "No channel member found for that user ID and channel ID.",
                )
            return 200, dict(member)

    def _api_create_post(self, request, user):
        fields = _parse_post_body(request)
        with self._lock:
            channel = self._check_can_post(user, fields["channel_id"])
            existing = self._dedupe_begin(fields.get("pending_post_id", ""))
            if existing is not None:
                return 201, self._post_for_client(existing)
            gate = self._gate
            self.posts_in_flight += 1
            self._in_flight.notify_all()
        try:
            # ``delay`` (and a held gate) is spent while the pending_post_id is reserved
            # but the post not yet saved, so a retry during it sees the server's "pending" 500.
            self._pause(request, "create_post")
            if self.post_delay > 0:
                time.sleep(self.post_delay)
            if gate is not None and not gate.after_save:
                gate.event.wait(HOLD_LIMIT)
                if not gate.save:
                    self._abandon(fields.get("pending_post_id", ""))
            post = self._finish_create(user, channel, fields)
            if gate is not None and gate.after_save:
                gate.event.wait(HOLD_LIMIT)
            with self._lock:
                return 201, self._post_for_client(post, keep_pending_id=True)
        finally:
            with self._lock:
                self.posts_in_flight -= 1
                self._in_flight.notify_all()

    def _api_patch_post(self, request, user, post_id):
        """api4/post.go patchPost: the author edits (a bot its own posts; another's
        needs edit_others_posts, which a member-role bot lacks); model/post.go
        Post.Patch: a given ``message`` replaces it, given ``props`` replace them
        all; app.UpdatePost sets edit_at when the message changed."""
        patch = _json_body(request, "post")
        message, props = patch.get("message"), patch.get("props")
        if (message is not None and not isinstance(message, str)) or (
            props is not None and not isinstance(props, dict)
        ):
            raise _invalid_body_param("post")
        with self._lock:
            post = self._readable_post(user, post_id)
            if post["user_id"] != user["id"]:
                raise _permission_error()
            if message is not None and len(message) > self.max_post_size:
                raise AppError(
                    400, "model.post.is_valid.message_length.app_error", "Message too long."
                )
            self._apply_update(post, message, props)
            return 200, self._post_for_client(post)

    def _apply_update(self, post: dict, message: str | None, props: dict | None) -> None:
        """app/post.go UpdatePost (lock held): new message and props, edit time."""
        changed = now_ms()
        if message is not None and message != post["message"]:
            post["message"] = message
            post["edit_at"] = changed
        if props is not None:
            post["props"] = json.loads(json.dumps(props))
        post["update_at"] = changed

    # ------------------------------------------ issue 10: notices and files

    def make_system_admin(self, user_id: str) -> None:
        """Give a user the system_admin role (the only default role with create_post_ephemeral)."""
        with self._lock:
            self._users[user_id]["roles"] = "system_user system_admin"

    def _api_create_ephemeral_post(self, request, user):
        """api4/post.go createEphemeralPost: user_id and post required, then the
        PermissionCreatePostEphemeral check (system_admin only in the default roles:
        model/role.go); app.SendEphemeralPost sends it over the websocket to that
        user alone and saves nothing. 201 with the post."""
        body = _json_body(request, "body")
        if not body.get("user_id"):
            raise _invalid_body_param("user_id")
        post = body.get("post")
        if not isinstance(post, dict):
            raise _invalid_body_param("post")
        if "system_admin" not in user["roles"].split():
            raise _permission_error()
        created = now_ms()
        ephemeral = {
            "id": new_id(),
            "create_at": created,
            "update_at": created,
            "user_id": user["id"],
            "channel_id": str(post.get("channel_id", "")),
            "root_id": str(post.get("root_id", "")),
            "message": str(post.get("message", "")),
            "type": "system_ephemeral",
            "props": {},
        }
        with self._lock:
            # The same record as a command's or a click's ephemeral answer, plus the post.
            self.ephemeral_posts.append(
                {
                    "user_id": body["user_id"],
                    "channel_id": ephemeral["channel_id"],
                    "root_id": ephemeral["root_id"],
                    "message": ephemeral["message"],
                    "post": ephemeral,
                }
            )
        return 201, ephemeral

    def _api_create_direct_channel(self, request, user):
        """api4/channel.go createDirectChannel: a JSON array of exactly two valid user
        ids, one of them the caller's (else PermissionManageSystem, 403); then
        app/channel.go GetOrCreateDirectChannel: the existing channel named by
        model.GetDMNameFromIds (the two ids sorted, joined by "__"), or a new one
        with both as members. 201 either way."""
        try:
            ids = json.loads(request.get_data(as_text=True))
        except ValueError:
            ids = None
        if not isinstance(ids, list) or len(ids) != 2:
            raise _invalid_body_param("user_ids")
        for user_id in ids:
            if not isinstance(user_id, str) or not _VALID_ID.match(user_id):
                raise _invalid_body_param("user_id")
        if user["id"] not in ids and "system_admin" not in user["roles"].split():
            raise _permission_error()
        name = "__".join(sorted(ids))
        with self._lock:
            if any(user_id not in self._users for user_id in ids):
                raise AppError(
                    400,
                    "api.channel.create_direct_channel.invalid_user.app_error",
                    "Invalid user ID for direct channel creation.",
                )
            channel = self.channels.get(name)
            if channel is None:
                channel = self._add_channel(name, "", "D", team_id="")
                for user_id in set(ids):
                    self.add_member(channel["id"], user_id)
            return 201, dict(channel)

    def _api_upload_file(self, request, user):
        """api4/file.go uploadFileStream, multipart: channel_id from the form (or the
        query), PermissionUploadFile on that channel (members only: 403), every
        part named "files" saved as a FileInfo by the caller, not yet attached to
        a post (post_id ""). 201 {"file_infos": [...], "client_ids": [...]}."""
        if request.mimetype != "multipart/form-data":
            raise AppError(
                400,
                "api.file.upload_file.incorrect_channelId.app_error",
                "Unable to upload the file. Incorrect channel ID: ",
            )
        channel_id = request.form.get("channel_id") or request.args.get("channel_id", "")
        if not _VALID_ID.match(channel_id):
            raise _invalid_url_param("channel_id")
        uploads = request.files.getlist("files")
        if not uploads:
            raise AppError(
                400, "api.file.upload_file.read_request.app_error", "Unable to read the request."
            )
        with self._lock:
            channel = self._channels_by_id.get(channel_id)
            if channel is None or (channel_id, user["id"]) not in self._members:
                raise _permission_error()
        infos = []
        for upload in uploads:
            content = upload.read()
            if len(content) > MAX_FILE_SIZE:
                raise AppError(
                    413,
                    "api.file.upload_file.too_large_detailed.app_error",
                    "Unable to upload file. File is too large.",
                )
            name = upload.filename or "file"
            created = now_ms()
            info = {
                "id": new_id(),
                "user_id": user["id"],
                "channel_id": channel_id,
                "post_id": "",
                "create_at": created,
                "update_at": created,
                "delete_at": 0,
                "name": name,
                "extension": name.rpartition(".")[2].lower() if "." in name else "",
                "size": len(content),
                # app/file.go: the type comes from the extension (mime.TypeByExtension).
                "mime_type": upload.mimetype or "application/octet-stream",
                "width": 0,
                "height": 0,
                "has_preview_image": False,
                "mini_preview": None,
                "remote_id": "",
                "archived": False,
            }
            with self._lock:
                self.files[info["id"]] = dict(info, content=content)
            infos.append(info)
        client_ids = request.form.getlist("client_ids")
        return 201, {"file_infos": infos, "client_ids": client_ids}

    def _readable_file(self, user: dict, file_id: str) -> dict:
        """api4/file.go getFileInfo/getFile: a valid id, a file that exists (404
        otherwise), and read access: its uploader, or a reader of its post's channel
        (403 otherwise)."""
        if not _VALID_ID.match(file_id):
            raise _invalid_url_param("file_id")
        with self._lock:
            info = self.files.get(file_id)
            if info is None or info["delete_at"]:
                raise AppError(404, "app.file_info.get.app_error", "Unable to get the file info.")
            if info["user_id"] != user["id"]:
                channel = self._channels_by_id.get(info["channel_id"])
                if (
                    not info["post_id"]
                    or channel is None
                    or not self._can_read_channel(user, channel)
                ):
                    raise _permission_error()
            return info

    def _api_get_file_info(self, request, user, file_id):
        info = self._readable_file(user, file_id)
        return 200, {key: value for key, value in info.items() if key != "content"}

    def _api_get_file(self, request, user, file_id):
        """The bytes, with the headers web.WriteFileResponse sets: the stored type, an
        attachment disposition, nosniff and a CSP that forbids everything."""
        info = self._readable_file(user, file_id)
        return Response(
            info["content"],
            200,
            headers={
                "X-Version-Id": VERSION_ID,
                "Content-Disposition": f'attachment;filename="{info["name"]}"',
                "X-Content-Type-Options": "nosniff",
                "Content-Security-Policy": "Frame-ancestors 'none'",
            },
            content_type=info["mime_type"],
        )

    def file_infos_of(self, post: dict) -> list[dict]:
        """The FileInfos a post carries (its metadata.files), for tests."""
        with self._lock:
            return [
                {key: value for key, value in self.files[f].items() if key != "content"}
                for f in post.get("file_ids") or []
            ]

    def file_content(self, file_id: str) -> bytes:
        with self._lock:
            return self.files[file_id]["content"]

    def upload_as(
        self, user: dict, channel_id: str, name: str, content: bytes, mime_type: str
    ) -> dict:
        """A file a user uploads, as the web app does before posting with its id."""
        response = requests.post(
            f"{self.url}/api/v4/files",
            headers={"Authorization": f"Bearer {user['token']}"},
            data={"channel_id": channel_id},
            files={"files": (name, content, mime_type)},
            timeout=10,
        )
        response.raise_for_status()
        return response.json()["file_infos"][0]

    def _abandon(self, pending_post_id: str) -> None:
        """A held request let go unsaved: free its pending id and answer a 500."""
        with self._lock:
            if pending_post_id:
                self._pending.pop(pending_post_id, None)
        raise AppError(500, "app.post.save.app_error", "Unable to save the post.")

    def _api_get_post(self, request, user, post_id):
        with self._lock:
            return 200, self._post_for_client(self._readable_post(user, post_id))

    def _api_get_post_thread(self, request, user, post_id):
        with self._lock:
            post = self._readable_post(user, post_id)
            root_id = post["root_id"] or post["id"]
            root = self._posts_by_id[root_id]
            if root["delete_at"]:
                raise _post_not_found()
            thread = [
                p
                for p in self.posts
                if (p["id"] == root_id or p["root_id"] == root_id) and not p["delete_at"]
            ]
            # Newest first, like PostList.SortByCreateAt; creation order breaks same-ms ties.
            thread.sort(key=lambda p: p["create_at"])
            thread.reverse()
            replies = self._reply_stats({root_id})
            return 200, {
                "order": [p["id"] for p in thread],
                "posts": {p["id"]: self._post_for_client(p, replies=replies) for p in thread},
                "next_post_id": "",
                "prev_post_id": "",
                "has_next": False,
            }

    def _api_save_reaction(self, request, user):
        body = _json_body(request, "reaction")
        post_id, emoji = body.get("post_id"), body.get("emoji_name")
        if not isinstance(post_id, str) or not _VALID_ID.match(post_id):
            raise _invalid_body_param("reaction")
        if not isinstance(emoji, str) or not re.fullmatch(r"[a-z0-9_+\-]{1,64}", emoji):
            raise _invalid_body_param("reaction")
        if body.get("user_id") != user["id"]:
            raise _permission_error()
        with self._lock:
            post = self._posts_by_id.get(post_id)
            channel = post and self._channels_by_id[post["channel_id"]]
            if post is None or (channel["id"], user["id"]) not in self._members:
                raise _permission_error()
            created = now_ms()
            reaction = {
                "user_id": user["id"],
                "post_id": post_id,
                "emoji_name": emoji,
                "create_at": created,
                "update_at": created,
                "delete_at": 0,
                "remote_id": "",
                "channel_id": channel["id"],
            }
            self.reactions.append(reaction)
        # api4/reaction.go encodes the reaction without WriteHeader(201).
        return 200, reaction

    # ------------------------------------------------------ permission checks

    def _find_channel(self, channel_id: str) -> dict:
        if not _VALID_ID.match(channel_id):
            raise _invalid_url_param("channel_id")
        channel = self._channels_by_id.get(channel_id)
        if channel is None:
            raise AppError(
                404, "app.channel.get.existing.app_error", "Unable to find the existing channel."
            )
        return channel

    def _can_read_channel(self, user: dict, channel: dict) -> bool:
        """Members read any channel; team members also read public ones."""
        if (channel["id"], user["id"]) in self._members:
            return True
        return channel["type"] == "O" and user["id"] in self._team_members

    def _readable_post(self, user: dict, post_id: str) -> dict:
        if not _VALID_ID.match(post_id):
            raise _invalid_url_param("post_id")
        post = self._posts_by_id.get(post_id)
        if post is None or post["delete_at"]:
            raise _post_not_found()
        if not self._can_read_channel(user, self._channels_by_id[post["channel_id"]]):
            raise _permission_error()
        return post

    def _check_can_post(self, user: dict, channel_id: str) -> dict:
        """api4 createPost permission check, then app.CreatePostAsUser's archived check."""
        channel = self._channels_by_id.get(channel_id)
        # An unknown or missing channel fails the permission check too: 403, not 404.
        if channel is None or (channel_id, user["id"]) not in self._members:
            raise _permission_error()
        if channel["delete_at"]:
            raise AppError(
                400,
                "api.post.create_post.can_not_post_to_deleted.error",
                "Can not post to deleted channel.",
            )
        return channel

    # --------------------------------------------------------- post creation

    def _dedupe_begin(self, pending_post_id: str) -> dict | None:
        """app/post.go deduplicateCreatePost (lock held).

        Returns the already created post for a repeat, raises the "pending"
        500 while the first request is still saving, and otherwise reserves
        the pending id and returns None.
        """
        if not pending_post_id:
            return None
        entry = self._pending.get(pending_post_id)
        if entry is None or entry[1] < time.monotonic():
            self._pending[pending_post_id] = ("", time.monotonic() + self.pending_post_ttl)
            return None
        post_id = entry[0]
        if not post_id:
            raise AppError(
                500,
                "api.post.deduplicate_create_post.pending",
                "Rejected post since another client is making the same request.",
            )
        post = self._posts_by_id[post_id]
        if post["delete_at"]:
            raise AppError(
                500,
                "api.post.deduplicate_create_post.failed_to_get",
                "Could not fetch the original post after deduplication.",
            )
        return post

    def _finish_create(
        self, user: dict, channel: dict, fields: dict, *, trigger_webhooks: bool = True
    ) -> dict:
        """app.CreatePost after deduplication: validate, save, fire webhooks.

        On a failure the reserved pending_post_id is released so a retry can post.
        """
        pending_post_id = fields.get("pending_post_id", "")
        with self._lock:
            try:
                self._check_root(fields.get("root_id", ""), channel["id"])
                if len(fields.get("message", "")) > self.max_post_size:
                    raise AppError(
                        400,
                        "model.post.is_valid.message_length.app_error",
                        f"Message property length is greater than the maximum allowed "
                        f"({self.max_post_size}).",
                    )
                # Post.IsValid: the props as JSON are bounded in runes. Message
                # attachments (props.attachments) are otherwise kept as sent: the
                # server's propsIsValid only logs a warning for an invalid one
                # (post.go; message_attachment.go MessageAttachment.IsValid).
                props = fields.get("props") or {}
                props_json = json.dumps(props, ensure_ascii=False, separators=(",", ":"))
                if len(props_json) > POST_PROPS_MAX_RUNES:
                    raise AppError(400, "model.post.is_valid.props.app_error", "Invalid props.")
            except AppError:
                if pending_post_id:
                    self._pending.pop(pending_post_id, None)
                raise
            post = self._save_post(user, channel, fields)
            if pending_post_id:
                expires = time.monotonic() + self.pending_post_ttl
                self._pending[pending_post_id] = (post["id"], expires)
            if trigger_webhooks:
                self._fire_webhooks(post, channel, user)
            return post

    def _check_root(self, root_id: str, channel_id: str) -> None:
        """The parent checks of app.CreatePost (all answered 400 by CreatePostAsUser)."""
        if not root_id:
            return
        root = self._posts_by_id.get(root_id)
        if root is None or root["delete_at"] or root["root_id"]:
            raise AppError(
                400, "api.post.create_post.root_id.app_error", "Invalid RootId parameter."
            )
        if root["channel_id"] != channel_id:
            raise AppError(
                400,
                "api.post.create_post.channel_root_id.app_error",
                "Invalid ChannelId for RootId parameter.",
            )

    def _save_post(self, user: dict, channel: dict, fields: dict) -> dict:
        created = now_ms()
        props = dict(fields.get("props") or {})
        if user["is_bot"]:
            props["from_bot"] = "true"
        post = {
            "id": new_id(),
            "create_at": created,
            "update_at": created,
            "edit_at": 0,
            "delete_at": 0,
            "is_pinned": False,
            "user_id": user["id"],
            "channel_id": channel["id"],
            "root_id": fields.get("root_id", ""),
            "original_id": "",
            "message": fields.get("message", ""),
            "type": fields.get("type", ""),
            "props": props,
            "hashtags": "",
            "file_ids": self._attach_files(user, fields.get("file_ids") or []),
            "pending_post_id": fields.get("pending_post_id", ""),
            "metadata": {},
        }
        self.posts.append(post)
        self._posts_by_id[post["id"]] = post
        for file_id in post["file_ids"]:
            self.files[file_id]["post_id"] = post["id"]
        if post["root_id"]:
            # sqlstore/post_store.go SaveMultiple: "UPDATE Posts SET UpdateAt = ? WHERE
            # Id = ?" with the newest reply's CreateAt, for every thread replied to.
            root = self._posts_by_id[post["root_id"]]
            root["update_at"] = max(root["update_at"], created)
        channel["last_post_at"] = created
        channel["total_msg_count"] += 1
        if not post["root_id"]:
            channel["last_root_post_at"] = created
            channel["total_msg_count_root"] += 1
        return post

    def _attach_files(self, user: dict, file_ids: list) -> list[str]:
        """app/post.go attachFilesToPost: only files the poster uploaded and no post
        has yet are attached; the others are dropped from file_ids (logged, no error).
        At most 10 ids (model.PostFileidsMaxRunes)."""
        attached: list[str] = []
        for file_id in file_ids[:10]:
            info = self.files.get(file_id) if isinstance(file_id, str) else None
            mine = info and info["user_id"] == user["id"] and not info["post_id"]
            if mine and file_id not in attached:
                attached.append(file_id)
        return attached

    def _post_for_client(
        self, post: dict, *, keep_pending_id: bool = False, replies: dict | None = None
    ) -> dict:
        """The Post JSON: reply counts filled in, empty file_ids omitted.

        pending_post_id is not a database column, so only the creating
        response echoes it; reads (and a deduplicated repeat) carry "".

        :param replies: :meth:`_reply_stats` already computed for a list of posts.
        """
        root_id = post["root_id"] or post["id"]
        count, last = (replies or self._reply_stats({root_id})).get(root_id, (0, 0))
        client = dict(post, props=_strip_action_integrations(post["props"]), metadata={})
        client["reply_count"] = count
        client["last_reply_at"] = last
        client["participants"] = None
        if not keep_pending_id:
            client["pending_post_id"] = ""
        if not client["file_ids"]:
            del client["file_ids"]
        else:
            # PreparePostForClient: metadata.files holds the attached FileInfos.
            client["metadata"] = {
                "files": [
                    {k: v for k, v in self.files[f].items() if k != "content"}
                    for f in client["file_ids"]
                ]
            }
        return client

    def _reply_stats(self, root_ids: set[str]) -> dict[str, tuple[int, int]]:
        """Reply count and last reply time of each thread, in one pass over the posts."""
        stats: dict[str, tuple[int, int]] = {}
        for p in self.posts:
            if p["root_id"] in root_ids and not p["delete_at"]:
                count, last = stats.get(p["root_id"], (0, 0))
                stats[p["root_id"]] = (count + 1, max(last, p["create_at"]))
        return stats

    # ------------------------------------------- slash commands and buttons

    def add_slash_command(self, trigger: str, url: str, *, token: str | None = None) -> str:
        """Register a custom slash command (Integrations -> Slash Commands, method POST)
        for the team; its token (model.NewId, 26 characters) is returned."""
        with self._lock:
            command = {"trigger": trigger.lstrip("/"), "url": url, "token": token or new_id()}
            self.commands.append(command)
            return command["token"]

    def run_slash_command(self, user: dict | str, channel_id: str, text: str) -> dict:
        """Type ``text`` (``/bridge list``) in a channel, as the web app's executeCommand.

        app/command.go ExecuteCommand -> DoCommandRequest: a form POST with
        ``Authorization: Token <token>``, ``Accept: application/json``; the
        fields are exactly these (mention maps only when the text @-mentions
        someone). A non-200 answer fails the command
        (api.command.execute_command.failed_resp.app_error); otherwise the
        model.CommandResponse is handled by HandleCommandResponsePost:
        ``in_channel`` posts the text in the channel (from_webhook), anything
        else is an ephemeral post only the user sees. Returns the parsed answer.
        """
        trigger, _, message = text.lstrip("/").partition(" ")
        with self._lock:
            author = self._users[user if isinstance(user, str) else user["id"]]
            channel = self._channels_by_id[channel_id]
            (command,) = [c for c in self.commands if c["trigger"] == trigger]
            form = {
                "token": command["token"],
                "team_id": self.team["id"],
                "team_domain": self.team["name"],
                "channel_id": channel_id,
                "channel_name": channel["name"],
                "user_id": author["id"],
                "user_name": author["username"],
                "command": "/" + trigger,
                "text": message.strip(),
                "trigger_id": new_id(),
                "response_url": f"{self.url}/hooks/commands/{new_id()}",
            }
        record = {"url": command["url"], "form": form, "status": None, "body": ""}
        with requests.Session() as session:
            session.trust_env = False
            response = session.post(
                command["url"],
                data=urlencode(sorted(form.items())).encode(),
                headers={
                    "Content-Type": "application/x-www-form-urlencoded",
                    "Accept": "application/json",
                    "Authorization": "Token " + command["token"],
                },
                timeout=WEBHOOK_TIMEOUT,
            )
        record.update(status=response.status_code, body=response.text)
        with self._lock:
            self.command_calls.append(record)
        if response.status_code != 200:
            raise AppError(
                500,
                "api.command.execute_command.failed_resp.app_error",
                f"Command with a trigger of '/{trigger}' returned response {response.status_code}.",
            )
        answer = json.loads(response.text)
        if answer.get("response_type") == "in_channel":
            fields = {
                "channel_id": channel_id,
                "message": answer.get("text", ""),
                "props": {"from_webhook": "true"},
            }
            self._finish_create(author, channel, fields)
        else:
            with self._lock:
                self.ephemeral_posts.append(
                    {"user_id": author["id"], "channel_id": channel_id, "message": answer["text"]}
                )
        return answer

    def click_action(self, user: dict | str, post_id: str, action_id: str) -> dict:
        """Click a message attachment button, as app/integration_action.go
        DoPostActionWithCookie does for the web app (no cookie: the post is read).

        POSTs model.PostActionIntegrationRequest as JSON to the action's
        integration URL (only the server ever sees it); a non-200 answer is a
        400 for the client (api.post.do_action.action_integration.app_error).
        The answer's ``update`` replaces the post's message (an update without
        one empties it) and, when it has props, its props (keeping only the
        PostActionRetainPropKeys of the original); ``ephemeral_text`` becomes an
        ephemeral post for the clicking user. Returns the parsed answer.
        """
        with self._lock:
            clicker = self._users[user if isinstance(user, str) else user["id"]]
            post = self._readable_post(clicker, post_id)
            action = next(
                (
                    a
                    for attachment in post["props"].get("attachments") or []
                    for a in attachment.get("actions") or []
                    if a.get("id") == action_id and a.get("integration")
                ),
                None,
            )
            if action is None:
                raise AppError(404, "api.post.do_action.action_id.app_error", "Action not found.")
            channel = self._channels_by_id[post["channel_id"]]
            payload = {
                "user_id": clicker["id"],
                "user_name": clicker["username"],
                "channel_id": channel["id"],
                "channel_name": channel["name"],
                "team_id": channel["team_id"],
                "team_domain": self.team["name"],
                "post_id": post_id,
                "trigger_id": new_id(),
                "type": action.get("type", "button"),
                "context": json.loads(json.dumps(action["integration"].get("context") or {})),
            }
            url = action["integration"]["url"]
            original_props = post["props"]
        record = {"url": url, "payload": payload, "status": None, "body": ""}
        with requests.Session() as session:
            session.trust_env = False
            response = session.post(
                url,
                data=json.dumps(payload).encode(),
                headers={"Content-Type": "application/json", "Accept": "application/json"},
                timeout=WEBHOOK_TIMEOUT,
            )
        record.update(status=response.status_code, body=response.text)
        with self._lock:
            self.action_calls.append(record)
        if response.status_code != 200:
            raise AppError(
                400, "api.post.do_action.action_integration.app_error", "Unable to do the action."
            )
        answer = json.loads(response.text) if response.content else {}
        with self._lock:
            update = answer.get("update")
            if update is not None:
                props = update.get("props")
                if props is not None:
                    props = dict(props)
                    for key in ("from_webhook", "override_username", "override_icon_url"):
                        if key in original_props:
                            props[key] = original_props[key]
                        else:
                            props.pop(key, None)
                self._apply_update(post, update.get("message", ""), props)
            if answer.get("ephemeral_text"):
                self.ephemeral_posts.append(
                    {
                        "user_id": clicker["id"],
                        "channel_id": channel["id"],
                        "root_id": post["root_id"] or post["id"],
                        "message": answer["ephemeral_text"],
                    }
                )
        return answer

    # -------------------------------------------------------------- webhooks

    def _fire_webhooks(self, post: dict, channel: dict, user: dict) -> None:
        """app/webhook.go handleWebhookEvents: pick the hooks, deliver each on a thread."""
        if channel["type"] != "O":
            return
        words = post["message"].split()
        first_word = words[0] if words else ""
        for hook in self._hooks:
            if hook["channel_id"] not in (channel["id"], ""):
                continue
            trigger_word = _matching_trigger(hook, channel["id"], first_word)
            if trigger_word is None:
                continue
            payload = {
                "token": hook["token"],
                "team_id": hook["team_id"],
                "team_domain": self.team["name"],
                "channel_id": post["channel_id"],
                "channel_name": channel["name"],
                "timestamp": post["create_at"],
                "user_id": post["user_id"],
                "user_name": user["username"],
                "post_id": post["id"],
                "text": post["message"],
                "trigger_word": trigger_word,
                "file_ids": ",".join(post["file_ids"]),
            }
            thread = threading.Thread(
                target=self._deliver,
                args=(hook, payload, post, channel),
                name="mattermost-standin-webhook",
                daemon=True,
            )
            self._webhook_threads.append(thread)
            thread.start()

    def _deliver(self, hook: dict, payload: dict, post: dict, channel: dict) -> None:
        """app/webhook.go TriggerWebhook for one callback URL; the outcome is recorded."""
        as_json = hook["content_type"] == "application/json"
        if as_json:
            sent, content_type = payload, "application/json"
            body = json.dumps(payload)
        else:
            # model.OutgoingWebhookPayload.ToFormValues: strings, timestamp in seconds.
            sent = {key: str(value) for key, value in payload.items()}
            sent["timestamp"] = str(payload["timestamp"] // 1000)
            content_type = "application/x-www-form-urlencoded"
            body = urlencode(sorted(sent.items()))  # Go's url.Values.Encode sorts keys
        record = {
            "url": hook["callback_urls"][0],
            "content_type": content_type,
            "payload": sent,
            "status": None,
            "response_body": "",
            "error": None,
            "response_post_id": None,
        }
        try:
            with requests.Session() as session:
                session.trust_env = False  # never route 127.0.0.1 through an env proxy
                response = session.post(
                    record["url"],
                    data=body.encode(),
                    headers={
                        "Content-Type": content_type,
                        "Accept": "application/json",
                        "User-Agent": WEBHOOK_USER_AGENT,
                    },
                    timeout=WEBHOOK_TIMEOUT,
                )
                record["status"] = response.status_code
                record["response_body"] = response.text
            record["response_post_id"] = self._post_hook_response(
                hook, response.text, post, channel
            )
        except requests.RequestException as exc:
            record["error"] = f"{type(exc).__name__}: {exc}"
        except AppError as error:
            record["error"] = f"response post not created: {error.error_id}"
        except Exception:  # keep the thread from dying loudly; surface it to the test instead
            record["error"] = traceback.format_exc()
        finally:
            with self._lock:
                self.webhook_deliveries.append(record)

    def _post_hook_response(self, hook: dict, body: str, post: dict, channel: dict) -> str | None:
        """Create the post a hook's JSON response asks for (CreateWebhookPost); return its id.

        As in the server: the status code is not looked at; an empty body
        creates nothing; any "text" key that is not null creates a post, even
        "" (Text is a *string); "response_type": "comment" sets root_id to the
        triggering post itself, so a comment on a reply fails the root check
        and nothing is posted. These posts never fire webhooks.
        """
        reply = _decode_hook_response(body)
        if reply is None:
            return None
        attachments = reply.get("attachments") or []
        if reply.get("text") is None and not attachments:
            return None
        props = {
            key: value
            for key, value in (reply.get("props") or {}).items()
            if key not in ("override_icon_url", "override_username", "from_webhook")
        }
        props["from_webhook"] = "true"
        props["webhook_display_name"] = hook["display_name"]
        if attachments:
            props["attachments"] = attachments
        fields = {
            "channel_id": channel["id"],
            "message": reply.get("text") or "",
            "root_id": post["id"] if reply.get("response_type") == "comment" else "",
            "props": props,
            "type": reply.get("type") or "",
        }
        with self._lock:
            creator = self._users[hook["creator_id"]]
        return self._finish_create(creator, channel, fields, trigger_webhooks=False)["id"]


# ------------------------------------------------------------------ helpers


class _Gate:
    """Holds create-post requests open (see MattermostStandin.hold_posts)."""

    def __init__(self, after_save: bool) -> None:
        self.event = threading.Event()
        self.after_save = after_save
        self.save = True


def _shut(connection: socket.socket) -> None:
    """Reset a client connection; the handler thread then finishes and closes it."""
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _rate_limited() -> Response:
    """The rate limiter's reply: http.Error(w, "limit exceeded", 429) plus throttled headers.

    It runs before the API handler, so no X-Version-Id / X-Request-Id here.
    """
    return Response(
        "limit exceeded\n",
        429,
        headers={
            "X-RateLimit-Limit": "10",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": "1",
            "Retry-After": "1",
            "X-Content-Type-Options": "nosniff",
        },
        content_type="text/plain; charset=utf-8",
    )


def _strip_action_integrations(props: dict) -> dict:
    """A copy of a post's props as clients get them: model/post.go
    StripActionIntegrations drops every attachment action's ``integration``
    (URL and context), so only the server knows where a click goes and what
    it carries."""
    client = json.loads(json.dumps(props))
    for attachment in client.get("attachments") or []:
        for action in (attachment.get("actions") or []) if isinstance(attachment, dict) else []:
            if isinstance(action, dict):
                action.pop("integration", None)
    return client


def _post_not_found() -> AppError:
    return AppError(404, "app.post.get.app_error", "Unable to get the post.")


def _redirect(location: str) -> Response:
    return Response("", 302, headers={"Location": location})


def _web_error(site_url: str, kind: str, message: str) -> Response:
    """utils.RenderWebError: the browser goes to the web app's error page."""
    return _redirect(f"{site_url}/error?" + urlencode({"type": kind, "message": message}))


def _resolve_user_id(user_id: str, session_user: dict) -> str:
    """``me`` means the session's user; anything else must look like an id."""
    if user_id == "me":
        return session_user["id"]
    if not _VALID_ID.match(user_id):
        raise _invalid_url_param("user_id")
    return user_id


def _user_for_client(user: dict) -> dict:
    """The User JSON: no token, and Go's omitempty drops is_bot/bot_description when empty."""
    client = {key: value for key, value in user.items() if key != "token"}
    for key in ("is_bot", "bot_description"):
        if not client[key]:
            del client[key]
    return client


def _json_body(request: Request, name: str) -> dict:
    try:
        body = json.loads(request.get_data(as_text=True))
    except ValueError:
        raise _invalid_body_param(name) from None
    if not isinstance(body, dict):
        raise _invalid_body_param(name)
    return body


def _parse_post_body(request: Request) -> dict:
    """Decode a create-post body; a field of the wrong JSON type is a decode error (400)."""
    body = _json_body(request, "post")
    expected = {
        "channel_id": str,
        "message": str,
        "root_id": str,
        "pending_post_id": str,
        "type": str,
        "props": dict,
        "file_ids": list,
    }
    fields = {}
    for key, kind in expected.items():
        value = body.get(key)
        if value is None:
            continue
        if not isinstance(value, kind):
            raise _invalid_body_param("post")
        fields[key] = value
    fields.setdefault("channel_id", "")
    if fields.get("type", "").startswith("system_"):
        raise AppError(
            400,
            "api.context.invalid_param.app_error",
            "Invalid post.type parameter.",
        )
    return fields


def _decode_hook_response(body: str) -> dict | None:
    """model.OutgoingWebhookResponse from a response body; None when empty or null."""
    if not body.strip():
        return None  # io.EOF: no response wanted
    unreadable = AppError(500, "api.unmarshal_error", "Could not decode the webhook response.")
    try:
        reply = json.loads(body)
    except ValueError:
        raise unreadable from None
    if reply is None:
        return None
    shapes = {"text": str, "response_type": str, "type": str, "props": dict, "attachments": list}
    if not isinstance(reply, dict) or any(
        reply.get(key) is not None and not isinstance(reply[key], kind)
        for key, kind in shapes.items()
    ):
        raise unreadable
    return reply


def _matching_trigger(hook: dict, channel_id: str, first_word: str) -> str | None:
    """The trigger word a post fires ``hook`` with ("" for a channel hook), or None."""
    if hook["channel_id"] == channel_id and not hook["trigger_words"]:
        return ""
    for word in hook["trigger_words"]:
        if hook["trigger_when"] == 0 and first_word == word:
            return word
        if hook["trigger_when"] == 1 and first_word.startswith(word):
            return word
    return None
