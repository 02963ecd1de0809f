"""Mattermost outgoing-webhook calls: parse, verify, keep in the inbox, route.

Mattermost calls a hook once, never again, and waits at most 30 s. So the
route checks the token and the payload's shape, keeps the call in the inbox
in one short transaction and answers; routing follows once the answer is
sent (and again from the worker, ``retry_queued``, when Mattermost failed).
The payload carries no ``root_id``: routing looks the post up to find its
thread, and the thread's root post maps to a conversation. The answer's body
is empty whatever happens (unless the token is wrong or fields are missing),
so Mattermost never posts noise in the channel.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import requests

from . import mattermost as mm
from .actions import after_close, record_close
from .buttons import Buttons
from .callbacks import INLINE_ATTEMPTS, CallbackSender
from .integration import call_log_fields, logged_client
from .notices import CLOSED, tell_agent
from .store import Store

log = logging.getLogger(__name__)

REQUIRED_FIELDS = ("token", "post_id", "user_id", "channel_id")
OPTIONAL_FIELDS = (
    "team_id",
    "team_domain",
    "channel_name",
    "user_name",
    "text",
    "trigger_word",
    "timestamp",
    "file_ids",
)
# A post carries at most 10 files (model.PostFileidsMaxRunes holds 10 ids,
# server/public/model/post.go); the payload sends them comma-separated, in
# JSON as in a form (model/outgoing_webhook.go: FileIds string).
MAX_FILES = 10
# Agents write these at the start of a reply in the thread.
NOTE_PREFIX = "note:"
CLOSE_COMMAND = "!close"
USER_CACHE_SECONDS = 3600
# Mattermost waits for our answer, so an inline retry stays short.
INLINE_WAIT_LIMIT = 1.0
# Delay before the next try of a kept call after n failed ones.
QUEUE_BACKOFF = (0, 30, 120, 600, 3600)
# Ids the server makes (model.NewId: 26 characters of a lowercase base32
# alphabet) and what it accepts back: server/public/model/utils.go IsValidId,
# 26 bytes that are each a letter or a digit; only ASCII ones reach 26 bytes
# in 26 characters, and NewId never makes any other.
ID_FIELDS = ("post_id", "user_id", "channel_id", "team_id")
MATTERMOST_ID = re.compile(r"[A-Za-z0-9]{26}")
# No field of a real call is longer than a post's database column
# (model.PostMessageMaxBytesV2 = 65535): anything longer is refused.
MAX_FIELD = 65_535
# What is kept of each field. A post's message is at most 16383 runes
# (server/public/model/post.go PostMessageMaxRunesV2 = 65535 bytes / 4), so
# cutting text there loses nothing Mattermost can send; user, channel and team
# names are at most 64 characters (model.UserNameMaxLength,
# ChannelNameMaxLength, TeamNameMaxLength); a hook's trigger words at most
# 1024 bytes together (model/outgoing_webhook.go IsValid).
MAX_TEXT = 16_383
KEPT_LENGTH = {
    "text": MAX_TEXT,
    "user_name": 64,
    "channel_name": 64,
    "team_domain": 64,
    "trigger_word": 1024,
}


class PayloadError(ValueError):
    """The body is not an outgoing-webhook payload; the message names the problem.

    :param reason: the same without the caller's data, for the log, where
        rejections are counted per reason (default: the message itself).
    """

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = reason or message


@dataclass
class WebhookPayload:
    """The fields of Mattermost's OutgoingWebhookPayload that the bridge uses."""

    token: str
    post_id: str
    user_id: str
    channel_id: str
    team_id: str = ""
    team_domain: str = ""
    channel_name: str = ""
    user_name: str = ""
    text: str = ""
    trigger_word: str = ""
    timestamp: float | None = None  # seconds, whatever the content type sent
    file_ids: str = ""  # comma-separated Mattermost file ids, as the payload sends them


KEPT_FIELDS = tuple(f.name for f in dataclasses.fields(WebhookPayload) if f.name != "token")


@dataclass
class Outcome:
    """What the route answers and what the log says."""

    http_status: int
    outcome: str  # ok / rejected / ignored / error
    reason: str
    message: dict[str, Any] | None = None
    logged: bool = False
    # Kept in the inbox and claimed, to be routed right after the answer, with
    # the row, settings and payload the call has just read.
    routing: _Routing | None = None


class ClaimLost(Exception):
    """The row's claim ran out and another router took it: this one writes nothing."""


@dataclass
class _Routing:
    """One kept call being routed: its inbox row, settings, payload, calls made."""

    row: dict[str, Any]
    settings: dict[str, Any] = dataclasses.field(repr=False)  # holds the tokens
    payload: WebhookPayload
    action: str  # "webhook" right after the answer, "webhook_retry" later
    calls: list[mm.CallRecord] = dataclasses.field(default_factory=list)

    @property
    def env(self) -> str:
        return self.row["env"]


def parse_payload(content_type: str, form: Mapping[str, str], raw_body: bytes) -> WebhookPayload:
    """Read a form-encoded or JSON payload; form timestamps are seconds, JSON ms."""
    mimetype = content_type.split(";")[0].strip().lower()
    if mimetype == "application/json":
        try:
            data = json.loads(raw_body or b"null")
        except (ValueError, UnicodeDecodeError, RecursionError):  # too deeply nested: 400 too
            raise PayloadError("the body is not valid JSON") from None
        if not isinstance(data, dict):
            raise PayloadError("the JSON body must be an object")
        divisor = 1000.0
    elif mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        data = dict(form)
        divisor = 1.0
    else:
        raise PayloadError(
            f"unsupported content type {mimetype[:100] or '(none)'}: Mattermost sends "
            "application/x-www-form-urlencoded or application/json",
            reason="unsupported content type",
        )
    missing = [name for name in REQUIRED_FIELDS if not _as_text(data.get(name))]
    if missing:
        raise PayloadError(
            f"missing field{'s' if len(missing) > 1 else ''}: {', '.join(missing)} "
            f"(body read as {mimetype}; is the webhook's content type right?)"
        )
    values = {name: _as_text(data.get(name)) for name in REQUIRED_FIELDS + OPTIONAL_FIELDS}
    if any(len(value) > MAX_FIELD for value in values.values()):
        raise PayloadError("a field is longer than any Mattermost post can be")
    for name in ID_FIELDS:
        # team_id may be absent; when present it is an id like the others.
        if values[name] and not MATTERMOST_ID.fullmatch(values[name]):
            raise PayloadError(f"{name} is not a Mattermost id (26 letters and digits)")
    for name, limit in KEPT_LENGTH.items():
        values[name] = values[name][:limit]
    file_ids = [part.strip() for part in values["file_ids"].split(",") if part.strip()]
    if len(file_ids) > MAX_FILES or not all(MATTERMOST_ID.fullmatch(f) for f in file_ids):
        raise PayloadError("file_ids is not a comma-separated list of Mattermost ids")
    values["file_ids"] = ",".join(file_ids)
    timestamp_text = values.pop("timestamp")
    timestamp = None
    if timestamp_text:
        try:
            timestamp = float(timestamp_text) / divisor
        except ValueError:
            raise PayloadError("timestamp is not a number") from None
    return WebhookPayload(**values, timestamp=timestamp)


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool) or isinstance(value, (dict, list)):
        return ""
    return str(value)


class InboundRouter:
    """Decides what one webhook call means and stores the agent's reply.

    :meth:`accept` is the webhook call itself (no Mattermost call);
    :meth:`route_kept` routes the call it kept, right after the answer;
    :meth:`route` retries one kept call, :meth:`retry_queued` every due one.
    """

    def __init__(
        self,
        store: Store,
        *,
        session: requests.Session | None = None,
        callbacks: CallbackSender | None = None,
        sleep: Callable[[float], None] = time.sleep,
        buttons: Buttons | None = None,
    ):
        self.store = store
        self.session = session
        self.buttons = buttons  # to rewrite a root post when !close closes it
        self.callbacks = callbacks or CallbackSender(store)
        self.sleep = sleep
        self._started = time.perf_counter()  # of the call being handled, for the log

    # -- the webhook call -------------------------------------------------------------

    def accept(self, env: str, payload: WebhookPayload) -> Outcome:
        """Answer a webhook call without calling Mattermost.

        The token is compared (constant time) before anything of the payload
        is written. What needs no lookup is ignored at once (inactive
        environment, the bot's own post, another channel, a post already
        stored); the rest is kept in the inbox, in one short transaction, for
        :meth:`route_kept`. A database that cannot be written raises before
        anything is kept or any Mattermost call is made.
        """
        self._started = time.perf_counter()
        settings = self.store.environment(env)
        expected = settings["webhook_token"]
        if not expected:
            return self.reject(env, 403, "token mismatch: no webhook token is saved yet")
        if not hmac.compare_digest(payload.token.encode(), expected.encode()):
            return self.reject(env, 403, "token mismatch")
        ignored = _ignored_without_lookup(settings, payload)
        if ignored is not None:
            self._log(env, payload, ignored)
            return ignored
        # Kept already claimed by this process, which routes it right after its
        # answer; if it dies first, the claim runs out and a retry takes it.
        kept = self.store.add_to_inbox(env, payload.post_id, _kept_fields(payload))
        if kept is None:  # stored already, or kept by an earlier delivery
            outcome = Outcome(200, "ignored", "duplicate delivery: post already stored")
            self._log(env, payload, outcome)
            return outcome
        # What routing right after the answer needs, so it reads none of it again.
        routing = _Routing(
            row={**kept, "env": env, "attempts": 1},
            settings=settings,
            payload=dataclasses.replace(payload, token=""),
            action="webhook",
        )
        return Outcome(200, "accepted", "kept in the inbox", routing=routing)

    def reject(self, env: str, http_status: int, reason: str) -> Outcome:
        """Count a refused call: one log row per reason and window, not a row each.

        :param reason: a fixed sentence, never the caller's data.
        """
        self.store.log_counted(
            env=env,
            direction="inbound",
            action="webhook",
            outcome="rejected",
            reason=reason,
            http_status=http_status,
        )
        return Outcome(http_status, "rejected", reason, logged=True)

    def _log(
        self, env: str, payload: WebhookPayload, outcome: Outcome, action: str = "webhook"
    ) -> None:
        message = outcome.message or {}
        self.store.log(
            env=env,
            direction="inbound",
            action=action,
            target=payload.channel_id,
            outcome=outcome.outcome,
            http_status=outcome.http_status,
            duration_ms=(time.perf_counter() - self._started) * 1000,
            error=outcome.reason,
            conversation_id=message.get("conversation_id") or "",
            message_id=message.get("id"),
            post_id=payload.post_id,
        )
        outcome.logged = True

    # -- routing kept calls -----------------------------------------------------------

    def route(self, inbox_id: int) -> Outcome | None:
        """Retry one kept call (the worker, ``flask retry``), if this router wins its claim.

        :returns: what happened, or None when the row is not due, another
            router holds it, or its environment is inactive now.
        """
        row = self.store.claim_inbox(inbox_id)
        if row is None:
            return None
        self._started = time.perf_counter()
        settings = self.store.environment(row["env"])
        if not settings["active"]:
            # Kept until the environment is active again (due_inbox_ids skips it).
            self.store.release_inbox(
                inbox_id, row["claim"], error="environment is inactive", delay=QUEUE_BACKOFF[1]
            )
            return None
        routing = _Routing(
            row=row,
            settings=settings,
            payload=WebhookPayload(token="", **row["payload"]),
            action="webhook_retry",
        )
        return self._route_claimed(routing, check_stored=True)

    def route_kept(self, routing: _Routing) -> Outcome | None:
        """Route the call :meth:`accept` kept (``Outcome.routing``), right after the answer.

        The settings and the check that the reply is not stored yet are the
        ones the call read a moment ago; only the claim is checked again (a
        stall past the lease lets a retry take the row). An environment
        deactivated in between still gets this one reply.

        :returns: what happened, or None when the claim was lost.
        """
        if not self.store.holds_inbox_claim(routing.row["id"], routing.row["claim"]):
            return None
        return self._route_claimed(routing, check_stored=False)

    def _route_claimed(self, routing: _Routing, *, check_stored: bool) -> Outcome | None:
        """Look the post up and store the reply; nothing written once the claim is lost
        (the row's own update checks it, in the same transaction as the reply).

        :param check_stored: look for the reply first (a retry: another
            delivery of the post may have been stored meanwhile).
        """
        self._started = time.perf_counter()
        try:
            if check_stored and self.store.inbound_post_seen(
                routing.env, routing.payload.post_id
            ):
                outcome = Outcome(200, "ignored", "duplicate delivery: post already stored")
            else:
                outcome = self._route_post(routing)
            if not outcome.logged:
                self._settle(routing, outcome)
        except ClaimLost:
            return None
        message = outcome.message or {}
        if message.get("delivery_status") == "pending":
            inline = routing.action == "webhook"  # a reply callback is tried twice then
            self.callbacks.deliver(message["id"], attempts=INLINE_ATTEMPTS if inline else 1)
        return outcome

    def retry_queued(self, env: str | None = None) -> dict[str, int]:
        """Route every due inbox row; counts by outcome.

        Due: a failed lookup whose delay has passed, a row whose router died
        (its claim ran out). Safe to run in several processes at once: each
        row is routed by the one that claims it.
        """
        counts = {"stored": 0, "ignored": 0, "failed": 0}
        for inbox_id in self.store.due_inbox_ids(env):
            outcome = self.route(inbox_id)
            if outcome is not None:
                counts[{"ok": "stored", "ignored": "ignored"}.get(outcome.outcome, "failed")] += 1
        return counts

    def _settle(self, routing: _Routing, outcome: Outcome) -> None:
        """Record an outcome that stored no reply, in one transaction."""
        with self.store.immediate():
            self._record_outcome(routing, outcome)

    def _record_outcome(
        self, routing: _Routing, outcome: Outcome, message: dict | None = None
    ) -> None:
        """The row's new state, the lookups' and the call's log rows (in a transaction)."""
        row = routing.row
        if outcome.outcome == "error":
            delay = QUEUE_BACKOFF[min(row["attempts"] - 1, len(QUEUE_BACKOFF) - 1)]
            held = self.store.release_inbox(
                row["id"], row["claim"], error=outcome.reason, delay=delay
            )
        else:
            held = self.store.finish_inbox(row["id"], row["claim"], outcome.outcome)
        if not held:  # another router has the row: it writes the outcome, not this one
            raise ClaimLost(row["id"])
        for record in routing.calls:
            self.store.log(**call_log_fields(routing.env, message, record))
        self._log(routing.env, routing.payload, outcome, action=routing.action)

    def _route_post(self, routing: _Routing) -> Outcome:
        """Look the post up to find its thread, then store the reply."""
        env, settings, payload = routing.env, routing.settings, routing.payload
        # Its calls are logged with the outcome, in the same commit.
        client = logged_client(self.store, settings, session=self.session, sink=routing.calls)
        try:
            post = self._lookup(client, payload.post_id)
        except mm.NotFound:
            return Outcome(200, "ignored", "the post is gone (deleted before it was looked up)")
        except mm.MattermostError as exc:
            # Mattermost never repeats a webhook call: the row stays in the inbox.
            return Outcome(200, "error", f"cannot look the post up: {exc} Kept; tried again later.")
        props = post.get("props") or {}
        if not settings["accept_other_bots"] and _from_integration(props):
            return Outcome(200, "ignored", "post by another bot or integration")
        root_id = post.get("root_id") or ""
        if not root_id:
            return Outcome(200, "ignored", "top-level post, not a reply in a mirrored thread")
        conversation = self.store.conversation_for_root_post(env, root_id)
        if conversation is None:
            return Outcome(200, "ignored", "reply in a thread that is not a mirrored conversation")
        text = post.get("message", payload.text)
        # The files are the fetched post's, like its text: never the payload's word.
        file_ids = post.get("file_ids") or []
        return self._store_reply(routing, client, conversation, text, file_ids)

    def _lookup(self, client: mm.MattermostClient, post_id: str) -> dict[str, Any]:
        """``GET /posts/{id}``, tried once more after a short wait when worth it."""
        try:
            return client.post(post_id)
        except mm.MattermostError as exc:
            wait = exc.retry_after if isinstance(exc, mm.RateLimited) else 0.5
            if not exc.retryable or wait > INLINE_WAIT_LIMIT:
                raise
            self.sleep(wait)
            return client.post(post_id)

    def _store_reply(self, routing: _Routing, client, conversation, text, file_ids=()) -> Outcome:
        env, settings, payload = routing.env, routing.settings, routing.payload
        author, is_bot = self._author(env, client, payload)
        if is_bot and not settings["accept_other_bots"]:
            return Outcome(200, "ignored", "post by another bot or integration")
        stripped = text.strip()
        files: list[dict[str, Any]] = []
        if stripped.lower().startswith(NOTE_PREFIX):
            direction, delivery, reason = "note", "", "internal note, not shown to the visitor"
        elif conversation["status"] == "closed":
            # Before !close: closing it again would repeat the event and its callback.
            return self._reply_to_closed(routing, conversation)
        elif stripped.lower() == CLOSE_COMMAND:
            direction, delivery, reason = "event", "", "conversation closed by the agent"
        else:
            direction, reason = "agent", "agent reply stored"
            delivery = "pending" if settings["callback_url"] else ""
            try:
                files = [client.file_info(file_id) for file_id in file_ids]
            except mm.MattermostError as exc:
                return Outcome(
                    200, "error", f"cannot read the attached files: {exc} Kept; tried again later."
                )
        # The reply, the close, the inbox row and the log rows: one transaction.
        with self.store.immediate():
            if direction == "event":
                # The same close as the Close button's and /bridge close's (actions.py).
                message = record_close(
                    self.store, env, conversation, author=author, post_id=payload.post_id
                )
            else:
                message = self.store.add_inbound_message(
                    env=env,
                    conversation_id=conversation["id"],
                    direction=direction,
                    author=author,
                    text=text,
                    post_id=payload.post_id,
                    delivery_status=delivery,
                )
            if message is None:
                outcome = Outcome(200, "ignored", "duplicate delivery: post already stored")
            else:
                outcome = Outcome(200, "ok", reason, message)
                for info in files:
                    self.store.add_message_file(
                        message_id=message["id"],
                        conversation_id=conversation["id"],
                        env=env,
                        file_id=str(info.get("id", "")),
                        name=str(info.get("name") or "file"),
                        size=int(info.get("size") or 0),
                        mime_type=str(info.get("mime_type") or "application/octet-stream"),
                    )
            self._record_outcome(routing, outcome, message)
        if message is not None and direction == "event":
            after_close(
                self.store,
                logged_client(self.store, settings, session=self.session),
                conversation,
                buttons=self.buttons,
                actor=f"@{payload.user_name}" if payload.user_name else author,
            )
        return outcome

    def _reply_to_closed(self, routing: _Routing, conversation: dict) -> Outcome:
        """A reply the visitor will never see: not stored; the agent is told privately."""
        outcome = Outcome(
            200, "ignored", "reply to a closed conversation: the agent is told privately"
        )
        self._settle(routing, outcome)
        tell_agent(
            self.store,
            routing.settings,
            agent_user_id=routing.payload.user_id,
            conversation=conversation,
            text=(
                "Your reply was not delivered: this conversation is closed, so the visitor "
                "no longer sees new messages."
            ),
            reason=CLOSED,
            session=self.session,
        )
        return outcome

    def _author(self, env: str, client: mm.MattermostClient, payload: WebhookPayload):
        """The agent's display name (cached), falling back to the username."""
        cached = self.store.cached_user(env, payload.user_id, USER_CACHE_SECONDS)
        if cached:
            return cached["display_name"], bool(cached["is_bot"])
        try:
            user = client.user(payload.user_id)
        except mm.MattermostError:
            return payload.user_name or "Agent", False
        name = display_name(user) or payload.user_name or "Agent"
        self.store.cache_user(env, payload.user_id, name, bool(user.get("is_bot")))
        return name, bool(user.get("is_bot"))


def route_after_answer(
    database: str,
    routing: _Routing,
    *,
    session: requests.Session | None = None,
    buttons: Buttons | None = None,
) -> None:
    """Route a call the webhook kept, once its answer is on its way.

    Runs from the response's ``call_on_close`` (gunicorn calls it after the
    response is written), on the store of this thread. A failure here loses
    nothing: the row stays in the inbox and the worker routes it.
    """
    store = Store(database, shared=True)
    try:
        InboundRouter(store, session=session, buttons=buttons).route_kept(routing)
    except Exception:
        log.exception("routing inbox row %s failed; the worker tries again", routing.row["id"])
    finally:
        store.close()


def _ignored_without_lookup(settings: dict[str, Any], payload: WebhookPayload) -> Outcome | None:
    """What a call with the right token is ignored for before any lookup."""
    if not settings["active"]:
        return Outcome(200, "ignored", "environment is inactive")
    if payload.user_id == settings["bot_user_id"] or (
        payload.user_name and payload.user_name == settings["bot_username"]
    ):
        return Outcome(200, "ignored", "post by the bridge's own bot (reply-loop guard)")
    if payload.channel_id != settings["mirror_channel_id"]:
        return Outcome(200, "ignored", "not the mirror channel")
    return None


def _kept_fields(payload: WebhookPayload) -> dict[str, Any]:
    """What is kept of a call for routing: everything but the token."""
    return {name: getattr(payload, name) for name in KEPT_FIELDS}


def display_name(user: dict[str, Any]) -> str:
    """``First Last``, else the nickname, else the username (as Chatwoot shows agents)."""
    full = " ".join(part for part in (user.get("first_name"), user.get("last_name")) if part)
    return full or user.get("nickname") or user.get("username") or ""


def _from_integration(props: dict[str, Any]) -> bool:
    return any(
        str(props.get(key, "")).lower() == "true"
        for key in ("from_bot", "from_webhook", "from_plugin")
    )
