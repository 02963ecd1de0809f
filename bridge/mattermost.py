"""Mattermost REST API v4 client: every HTTP call the bridge makes to Mattermost.

One :class:`requests.Session` per process (connection pooling); each
environment has its own bot token, so the token travels in the request's
headers rather than the shared session's. Every call has a (connect, read)
timeout. Failures raise a :class:`MattermostError` subclass whose message an
admin can act on; the token never appears in one.

Where bot accounts are disabled, an environment may use an ordinary account
instead (:class:`AccountLogin`): the client logs in with
``POST /api/v4/users/login``, keeps the session token from the ``Token``
header in a per-process cache (:data:`_sessions`), and on a 401 logs in again
once and re-sends the same request.
"""

from __future__ import annotations

import hashlib
import http.cookiejar
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests

DEFAULT_TIMEOUT = (3.05, 10.0)
MAX_POST_SIZE = 16383

_session: requests.Session | None = None
_session_pid: int | None = None
_session_lock = threading.Lock()


def shared_session() -> requests.Session:
    """The process's one Session; a forked gunicorn worker makes its own."""
    global _session, _session_pid
    with _session_lock:
        if _session is None or _session_pid != os.getpid():
            _session = requests.Session()
            _session.headers["User-Agent"] = "mattermost-bridge/0.1"
            # Shared by both environments and the host callbacks: keep no cookies,
            # so nothing one server sets is ever sent to another.
            _session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
            # requests re-reads the whole environment for proxy and CA settings on
            # every call (a fifth of a message's own time here). Read the CA bundle
            # once; keep the per-call lookup only where a proxy is configured.
            _session.trust_env = any(name.lower().endswith("_proxy") for name in os.environ)
            _session.verify = (
                os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
            )
            _session_pid = os.getpid()
        return _session


# -- errors ---------------------------------------------------------------------


class MattermostError(Exception):
    """A call to Mattermost failed; ``str(error)`` is meant for an admin."""

    retryable = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error_id: str = "",
        detail: str = "",
    ):
        super().__init__(message)
        self.message = message
        self.status = status
        self.error_id = error_id
        self.detail = detail


class Unreachable(MattermostError):
    """No HTTP answer at all: DNS, refused connection, timeout."""

    retryable = True


class TLSFailure(MattermostError):
    """The TLS handshake failed (self-signed or expired certificate, wrong host)."""


class NotMattermost(MattermostError):
    """Something answered, but not a Mattermost API."""


class BadRequest(MattermostError):
    """400: invalid root_id, archived channel, message too long, ..."""


class Unauthorized(MattermostError):
    """401: the token is invalid or revoked."""


class LoginFailed(Unauthorized):
    """The server refused the account's login (wrong password, locked, MFA, ...)."""


class Forbidden(MattermostError):
    """403: typically the bot is not a member of the channel."""


class NotFound(MattermostError):
    """404: no such user, channel or post (or no permission to see it)."""


class RateLimited(MattermostError):
    """429: wait ``retry_after`` seconds."""

    retryable = True

    def __init__(self, message: str, *, retry_after: float, **kwargs: Any):
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class ServerError(MattermostError):
    """5xx: the server failed; trying again later may work."""

    retryable = True


# -- call records -----------------------------------------------------------------


@dataclass
class CallRecord:
    """What one HTTP call did, for the integration log (never the token)."""

    action: str
    method: str
    target: str
    status: int | None
    duration_ms: float
    error: str = ""
    post_id: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


Observer = Callable[[CallRecord], None]


# -- account login ------------------------------------------------------------------

# Mattermost's answer to a wrong login id or password (api4/user.go login, whose
# deferred handler rewrites every credential failure to one of these ids).
INVALID_CREDENTIALS = "api.user.login.invalid_credentials"


@dataclass(frozen=True)
class AccountLogin:
    """An ordinary account that logs in: its username or e-mail, and password."""

    login_id: str
    password: str = field(repr=False)

    def cache_key(self, base_url: str) -> tuple[str, str, str]:
        # The password's digest is part of the key: a changed (or mistyped)
        # password never rides on a session the old one opened.
        digest = hashlib.sha256(self.password.encode()).hexdigest()
        return (base_url, self.login_id.lower(), digest)


class _SessionCache:
    """Session tokens of logged-in accounts, shared by the threads of one process.

    One lock per account, so that when a session expires under several threads
    at once only one of them logs in and the others take its token. After a 429
    from the login, nobody tries again before the server's Retry-After.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._tokens: dict[tuple, str] = {}
        self._account_locks: dict[tuple, threading.Lock] = {}
        self._not_before: dict[tuple, float] = {}

    def account_lock(self, key: tuple) -> threading.Lock:
        with self._lock:
            if self._pid != os.getpid():  # a forked worker starts with nothing held
                self._reset()
            return self._account_locks.setdefault(key, threading.Lock())

    def get(self, key: tuple) -> str:
        with self._lock:
            return self._tokens.get(key, "")

    def put(self, key: tuple, token: str) -> None:
        with self._lock:
            self._tokens[key] = token
            self._not_before.pop(key, None)

    def drop(self, key: tuple, token: str) -> None:
        """Forget ``token`` if it is still the account's (another thread may have renewed it)."""
        with self._lock:
            if self._tokens.get(key) == token:
                del self._tokens[key]

    def wait_left(self, key: tuple) -> float:
        with self._lock:
            return max(0.0, self._not_before.get(key, 0.0) - time.monotonic())

    def hold_off(self, key: tuple, seconds: float) -> None:
        with self._lock:
            self._not_before[key] = time.monotonic() + seconds

    def clear(self) -> None:
        with self._lock:
            self._reset()


_sessions = _SessionCache()


# -- the client ---------------------------------------------------------------------


class MattermostClient:
    """The calls the bridge makes to one Mattermost server as one bot.

    :param base_url: the server, e.g. ``https://chat.example.com``.
    :param token: the bot's personal access token.
    :param login: an ordinary account to log in as instead of ``token``.
    :param session: the Session to use; the process's shared one by default.
    :param timeout: ``(connect, read)`` seconds for every call.
    :param on_call: called with a :class:`CallRecord` after every call.
    """

    def __init__(
        self,
        base_url: str,
        token: str = "",
        *,
        login: AccountLogin | None = None,
        session: requests.Session | None = None,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        on_call: Observer | None = None,
    ):
        self.base_url = normalize_server_url(base_url)
        self.token = token
        self.login = login
        self.session = session or shared_session()
        self.timeout = timeout
        self.on_call = on_call

    # -- endpoints ----------------------------------------------------------------

    def me(self) -> tuple[dict[str, Any], str]:
        """The bot's own user and the server version (``X-Version-Id``)."""
        response, user = self._call("verify", "GET", "/api/v4/users/me", target="users/me")
        return user, server_version(response.headers.get("X-Version-Id", ""))

    def max_post_size(self) -> int | None:
        """The server's MaxPostSize from its client config; None when it does not say."""
        path = "/api/v4/config/client"
        config = self._call(
            "config", "GET", path, target="config/client", params={"format": "old"}
        )[1]
        value = str(config.get("MaxPostSize", ""))
        return int(value) if value.isdigit() and int(value) > 0 else None

    def user(self, user_id: str) -> dict[str, Any]:
        return self._call("user", "GET", f"/api/v4/users/{user_id}", target=user_id)[1]

    def teams(self) -> list[dict[str, Any]]:
        return self._call("teams", "GET", "/api/v4/users/me/teams", target="me", expect=list)[1]

    def channels_for_team(self, user_id: str, team_id: str) -> list[dict[str, Any]]:
        path = f"/api/v4/users/{user_id}/teams/{team_id}/channels"
        return self._call("channels", "GET", path, target=team_id, expect=list)[1]

    def channel(self, channel_id: str) -> dict[str, Any]:
        path = f"/api/v4/channels/{channel_id}"
        return self._call("channel", "GET", path, target=channel_id)[1]

    def is_member(self, channel_id: str, user_id: str) -> bool:
        """Whether the user is in the channel; a 404 means not a member."""
        path = f"/api/v4/channels/{channel_id}/members/{user_id}"
        try:
            self._call("member", "GET", path, target=channel_id)
        except NotFound:
            return False
        return True

    def create_post(
        self,
        channel_id: str,
        message: str,
        *,
        root_id: str = "",
        pending_post_id: str = "",
        props: dict[str, Any] | None = None,
        action: str = "post",
        file_ids: list[str] | None = None,
    ) -> dict[str, Any]:
        """Create a post; ``root_id`` makes it a reply in that thread.

        ``pending_post_id`` makes the server drop a repeat of the same post
        within 30 s, so a retry after a lost answer never posts twice.
        """
        body: dict[str, Any] = {"channel_id": channel_id, "message": message}
        if root_id:
            body["root_id"] = root_id
        if pending_post_id:
            body["pending_post_id"] = pending_post_id
        if props:
            body["props"] = props
        if file_ids:
            body["file_ids"] = list(file_ids)
        return self._call(action, "POST", "/api/v4/posts", target=channel_id, json=body)[1]

    def post(self, post_id: str) -> dict[str, Any]:
        return self._call("lookup", "GET", f"/api/v4/posts/{post_id}", target=post_id)[1]

    def thread(self, post_id: str) -> list[dict[str, Any]]:
        """Every post of the thread ``post_id`` belongs to (root included)."""
        path = f"/api/v4/posts/{post_id}/thread"
        return _posts_of(self._call("thread", "GET", path, target=post_id)[1])

    def channel_posts_since(self, channel_id: str, since_ms: int) -> list[dict[str, Any]]:
        """Posts of a channel created or changed since ``since_ms`` (Unix milliseconds)."""
        path = f"/api/v4/channels/{channel_id}/posts"
        post_list = self._call(
            "recent_posts", "GET", path, target=channel_id, params={"since": since_ms}
        )[1]
        return _posts_of(post_list)

    # -- private notices and files (issue 10) -------------------------------------

    def ephemeral_post(
        self, user_id: str, channel_id: str, message: str, *, root_id: str = ""
    ) -> dict[str, Any]:
        """A post only ``user_id`` sees; 403 unless the bot may (system admins by default)."""
        post = {"channel_id": channel_id, "root_id": root_id, "message": message}
        body = {"user_id": user_id, "post": post}
        return self._call(
            "notice", "POST", "/api/v4/posts/ephemeral", target=channel_id, json=body
        )[1]

    def direct_channel(self, user_id: str, other_user_id: str) -> dict[str, Any]:
        """The DM channel of two users, created when missing (idempotent)."""
        return self._call(
            "direct_channel",
            "POST",
            "/api/v4/channels/direct",
            target=other_user_id,
            json=[user_id, other_user_id],
        )[1]

    def upload_file(
        self, channel_id: str, name: str, content: bytes, mime_type: str
    ) -> dict[str, Any]:
        """Upload one file to a channel; its FileInfo (``id`` goes in a post's file_ids)."""
        answer = self._call(
            "upload",
            "POST",
            "/api/v4/files",
            target=channel_id,
            data={"channel_id": channel_id},
            files={"files": (name, content, mime_type)},
        )[1]
        infos = answer.get("file_infos")
        if not isinstance(infos, list) or not infos or not isinstance(infos[0], dict):
            raise NotMattermost("the upload's answer holds no file_infos.")
        return infos[0]

    def file_info(self, file_id: str) -> dict[str, Any]:
        """Name, size and mime_type of an uploaded file."""
        return self._call("file_info", "GET", f"/api/v4/files/{file_id}/info", target=file_id)[1]

    def open_file(self, file_id: str) -> requests.Response:
        """The file's bytes as a streamed response; the caller closes it."""
        started = time.perf_counter()
        try:
            # Through _send: an account login's session (and its one re-login) too.
            response = self._send("GET", f"/api/v4/files/{file_id}", {"stream": True})
        except MattermostError as error:  # the transport failed
            self._record("download", "GET", file_id, None, started, error=str(error))
            raise
        if response.status_code != 200:
            error = _http_error(self.base_url, response)
            response.close()
            self._record(
                "download", "GET", file_id, response.status_code, started, error=str(error)
            )
            raise error
        self._record("download", "GET", file_id, 200, started)
        return response

    # -- plumbing -----------------------------------------------------------------

    def _call(
        self,
        action: str,
        method: str,
        path: str,
        *,
        target: str,
        expect: type = dict,
        **kwargs: Any,
    ) -> tuple[requests.Response, Any]:
        """One HTTP call: the response and its JSON (of type ``expect``), or an error."""
        started = time.perf_counter()
        status = None
        try:
            response = self._send(method, path, kwargs)
            status = response.status_code
            if status >= 400 or status in (301, 302, 303, 307, 308):
                error = _http_error(self.base_url, response)
                if isinstance(error, Unauthorized) and self.login is not None:
                    error = _session_refused(self.login, error)
                raise error
            data = _json_body(self.base_url, response, expect)
        except MattermostError as exc:
            self._record(action, method, target, status, started, error=str(exc))
            raise
        post_id = data.get("id", "") if method == "POST" else ""
        self._record(action, method, target, status, started, post_id=post_id)
        return response, data

    def _send(self, method: str, path: str, kwargs: dict[str, Any]) -> requests.Response:
        """Send with the bot token, or with the account's session, logging in as needed."""
        if self.login is None:
            return self._request(method, path, self.token, kwargs)
        token = self._session_token()
        response = self._request(method, path, token, kwargs)
        if response.status_code == 401:
            # Sessions expire (SessionLengthWebInHours) or get revoked: log in again
            # ONCE and re-send the very same request; a post keeps its
            # pending_post_id, so the server still drops a repeat. A second 401
            # is reported, never retried in a loop.
            response.close()  # a streamed answer would keep its connection
            token = self._session_token(stale=token)
            response = self._request(method, path, token, kwargs)
        return response

    def _request(
        self, method: str, path: str, token: str, kwargs: dict[str, Any]
    ) -> requests.Response:
        try:
            return self.session.request(
                method,
                self.base_url + path,
                headers={"Authorization": f"Bearer {token}"} if token else {},
                timeout=self.timeout,
                allow_redirects=False,
                **kwargs,
            )
        except requests.RequestException as exc:
            raise _transport_error(self.base_url, exc) from None

    def _session_token(self, stale: str = "") -> str:
        """The account's session token; a new login when there is none or it is ``stale``."""
        assert self.login is not None
        key = self.login.cache_key(self.base_url)
        with _sessions.account_lock(key):
            if stale:
                _sessions.drop(key, stale)
            token = _sessions.get(key)
            if token:
                return token  # ours, or one another thread got meanwhile
            wait = _sessions.wait_left(key)
            if wait > 0:
                raise RateLimited(
                    f"Mattermost limited the logins of {self.login.login_id!r} (429): "
                    f"the next login is in {wait:.0f} s.",
                    retry_after=wait,
                    status=429,
                )
            try:
                token = self._log_in()
            except RateLimited as exc:
                _sessions.hold_off(key, exc.retry_after)
                raise
            _sessions.put(key, token)
            return token

    def _log_in(self) -> str:
        """``POST /api/v4/users/login``: the session token from the ``Token`` header."""
        assert self.login is not None
        login_id = self.login.login_id
        started = time.perf_counter()
        status = None
        try:
            body = {"login_id": login_id, "password": self.login.password}
            response = self._request("POST", "/api/v4/users/login", "", {"json": body})
            status = response.status_code
            if status >= 400 or status in (301, 302, 303, 307, 308):
                raise _login_error(self.base_url, login_id, response)
            _json_body(self.base_url, response, dict)
            token = response.headers.get("Token", "")
            if not token:
                raise NotMattermost(
                    f"{urlsplit(self.base_url).netloc} answered the login of {login_id!r} "
                    "without a session token (no Token header). Check the server URL.",
                    status=status,
                )
        except MattermostError as exc:
            self._record("login", "POST", login_id, status, started, error=str(exc))
            raise
        self._record("login", "POST", login_id, status, started)
        return token

    def _record(self, action, method, target, status, started, error="", post_id="") -> None:
        if self.on_call is None:
            return
        duration_ms = (time.perf_counter() - started) * 1000
        self.on_call(CallRecord(action, method, target, status, duration_ms, error, post_id))

    # -- issue 10: agents work from Mattermost ----------------------------------------

    def patch_post(self, post_id: str, message: str, props: dict[str, Any]) -> dict[str, Any]:
        """Rewrite a post's message and props (``PUT /posts/{id}/patch``: the props given
        replace the post's; the bot may edit its own posts)."""
        path = f"/api/v4/posts/{post_id}/patch"
        body = {"message": message, "props": props}
        return self._call("patch_post", "PUT", path, target=post_id, json=body)[1]


# -- helpers ----------------------------------------------------------------------


def _posts_of(post_list: dict[str, Any]) -> list[dict[str, Any]]:
    """The posts of a Mattermost PostList ``{"order": [...], "posts": {id: post}}``."""
    posts = post_list.get("posts") or {}
    return (
        [post for post in posts.values() if isinstance(post, dict)]
        if isinstance(posts, dict)
        else []
    )


def normalize_server_url(url: str) -> str:
    """``chat.example.com/`` -> ``https://chat.example.com``; rejects junk."""
    given = (url or "").strip()
    url = given if "://" in given else "https://" + given
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise ValueError(f"{given!r} has an invalid port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{given!r} is not a server URL like https://chat.example.com")
    path = parts.path.rstrip("/")
    path = path.removesuffix("/api/v4")
    return f"{parts.scheme}://{parts.netloc}{path}"


def server_version(header: str) -> str:
    """``9.11.0.9.11.0.abc.false`` -> ``9.11.0`` (the header repeats build data)."""
    return ".".join(header.split(".")[:3]) if header else ""


def _transport_error(base_url: str, exc: requests.RequestException) -> MattermostError:
    host = urlsplit(base_url).netloc
    if isinstance(exc, requests.exceptions.SSLError):
        return TLSFailure(
            f"TLS error talking to {host}: the certificate is not trusted or does not match "
            "the host name. Use the server's public https:// address, or write http:// in "
            "front if the server does not use TLS."
        )
    if isinstance(exc, requests.exceptions.Timeout):
        return Unreachable(f"{host} did not answer in time (timeout).")
    if isinstance(exc, requests.exceptions.ConnectionError):
        return Unreachable(f"cannot reach {host}: connection refused or host unknown.")
    return Unreachable(f"cannot talk to {host}: {type(exc).__name__}.")


def _error_body(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _http_error(base_url: str, response: requests.Response) -> MattermostError:
    status = response.status_code
    body = _error_body(response)
    fields = {
        "status": status,
        "error_id": str(body.get("id", "")),
        "detail": str(body.get("detailed_error", "")),
    }
    server_says = str(body.get("message", "")).strip()
    suffix = f" (Mattermost says: {server_says})" if server_says else ""
    if status == 429:
        return RateLimited(
            "rate limited by Mattermost (429); retrying after the reset time.",
            retry_after=_retry_after(response),
            **fields,
        )
    if not body and status >= 500:
        host = urlsplit(base_url).netloc
        # nginx's 502/503/504 page while Mattermost restarts: worth retrying.
        return ServerError(
            f"{status} from {host} with no Mattermost error body (a proxy in front of "
            "Mattermost, or Mattermost restarting).",
            **fields,
        )
    if not body and "X-Version-Id" not in response.headers:
        host = urlsplit(base_url).netloc
        return NotMattermost(
            f"{host} answered HTTP {status} but is not a Mattermost API. "
            "Check the server URL (no path, no /api/v4).",
            **fields,
        )
    if status == 401:
        return Unauthorized("401: the bot token is invalid or has been revoked." + suffix, **fields)
    if status == 403:
        return Forbidden(
            "403: the bot has no permission here; usually it is not a member of the channel."
            + suffix,
            **fields,
        )
    if status == 404:
        return NotFound("404: not found, or the bot cannot see it." + suffix, **fields)
    if status == 400:
        return BadRequest("400: Mattermost refused the request." + suffix, **fields)
    if status >= 500:
        return ServerError(f"{status}: Mattermost server error." + suffix, **fields)
    return MattermostError(f"unexpected HTTP {status} from Mattermost." + suffix, **fields)


def _login_error(base_url: str, login_id: str, response: requests.Response) -> MattermostError:
    """Why the login of ``login_id`` failed, naming the account (never the password)."""
    error = _http_error(base_url, response)
    if isinstance(error, RateLimited):
        error.message = (
            f"Mattermost limited the logins of {login_id!r} (429): the next login is "
            f"in {error.retry_after:.0f} s."
        )
        error.args = (error.message,)
        return error
    if not isinstance(error, (Unauthorized, BadRequest, Forbidden)):
        return error
    body = _error_body(response)
    server_says = str(body.get("message", "")).strip()
    if str(body.get("id", "")).startswith(INVALID_CREDENTIALS):
        reason = "wrong username/e-mail or password"
    else:
        reason = server_says.rstrip(".") or f"HTTP {response.status_code}"
    return LoginFailed(
        f"Mattermost refused the login of account {login_id!r}: {reason}.",
        status=error.status,
        error_id=error.error_id,
        detail=error.detail,
    )


def _session_refused(login: AccountLogin, error: MattermostError) -> Unauthorized:
    """A 401 that even a fresh login did not cure (the session revoked at once, ...)."""
    server_says = error.message.partition("(Mattermost says:")[2]
    suffix = f" (Mattermost says:{server_says}" if server_says else ""
    return Unauthorized(
        f"401 for account {login.login_id!r} even right after logging in again." + suffix,
        status=error.status,
        error_id=error.error_id,
        detail=error.detail,
    )


def _json_body(base_url: str, response: requests.Response, expect: type) -> Any:
    """The answer's JSON, which must be a ``expect``; otherwise this is not Mattermost."""
    content_type = response.headers.get("Content-Type", "")
    host = urlsplit(base_url).netloc
    if "json" not in content_type:
        raise NotMattermost(
            f"{host} answered, but not with Mattermost's JSON API "
            f"(content type {content_type or 'none'}). Check the server URL.",
            status=response.status_code,
        )
    try:
        data = response.json()
    except ValueError:
        data = None
    if not isinstance(data, expect):
        raise NotMattermost(
            f"{host} answered with JSON that is not what Mattermost sends. Check the server URL.",
            status=response.status_code,
        )
    return data


def _retry_after(response: requests.Response) -> float:
    """Seconds to wait: ``Retry-After``, else ``X-Ratelimit-Reset``, else 1."""
    for header in ("Retry-After", "X-Ratelimit-Reset"):
        value = response.headers.get(header)
        if value:
            try:
                seconds = float(value)
            except ValueError:
                continue
            # Some proxies send an epoch time rather than seconds remaining.
            if seconds > 1_000_000_000:
                seconds -= time.time()
            return max(0.0, seconds)
    return 1.0
