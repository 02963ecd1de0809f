"""Mattermost outgoing-webhook calls: parse, verify, guard against loops, route.

The payload carries no ``root_id``: the post is looked up to find its thread,
and the thread's root post maps to a conversation. The bridge answers with an
empty body whatever happens (unless the token is wrong or fields are
missing), so Mattermost never posts noise in the channel.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import requests

from . import mattermost as mm
from .callbacks import INLINE_ATTEMPTS, CallbackSender
from .integration import logged_client
from .store import Store

REQUIRED_FIELDS = ("token", "post_id", "user_id", "channel_id")
OPTIONAL_FIELDS = (
    "team_id",
    "team_domain",
    "channel_name",
    "user_name",
    "text",
    "trigger_word",
    "timestamp",
)
# Agents write these at the start of a reply in the thread.
NOTE_PREFIX = "note:"
CLOSE_COMMAND = "!close"
USER_CACHE_SECONDS = 3600
# Mattermost waits for our answer, so an inline retry stays short.
INLINE_WAIT_LIMIT = 1.0
# Delay before the next try of a kept call after n failed ones.
QUEUE_BACKOFF = (0, 30, 120, 600, 3600)
MAX_FIELD = 70_000  # Mattermost posts are at most 16383 characters (65535 bytes)


class PayloadError(ValueError):
    """The body is not an outgoing-webhook payload; the message names the problem."""


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


@dataclass
class Outcome:
    """What the route answers and what the log says."""

    http_status: int
    outcome: str  # ok / rejected / ignored / error
    reason: str
    message: dict[str, Any] | None = None
    logged: bool = False


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
            f"unsupported content type {mimetype or '(none)'}: Mattermost sends "
            "application/x-www-form-urlencoded or application/json"
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
    """Decides what one webhook call means and stores the agent's reply."""

    def __init__(
        self,
        store: Store,
        *,
        session: requests.Session | None = None,
        callbacks: CallbackSender | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.store = store
        self.session = session
        self.callbacks = callbacks or CallbackSender(store)
        self.sleep = sleep
        self._started = time.perf_counter()  # of the call being handled, for the log

    def handle(self, env: str, payload: WebhookPayload) -> Outcome:
        self._started = time.perf_counter()
        outcome = self._route(env, payload)
        if not outcome.logged:
            self._log(env, payload, outcome)
        message = outcome.message or {}
        if message.get("delivery_status") == "pending":
            self.callbacks.deliver(message["id"], attempts=INLINE_ATTEMPTS)
        return outcome

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

    def _route(self, env: str, payload: WebhookPayload) -> Outcome:
        settings = self.store.environment(env)
        expected = settings["webhook_token"]
        if not expected:
            return Outcome(403, "rejected", "token mismatch: no webhook token is saved yet")
        if not hmac.compare_digest(payload.token.encode(), expected.encode()):
            return Outcome(403, "rejected", "token mismatch")
        if not settings["active"]:
            return Outcome(200, "ignored", "environment is inactive")
        if payload.user_id == settings["bot_user_id"] or (
            payload.user_name and payload.user_name == settings["bot_username"]
        ):
            return Outcome(200, "ignored", "post by the bridge's own bot (reply-loop guard)")
        if payload.channel_id != settings["mirror_channel_id"]:
            return Outcome(200, "ignored", "not the mirror channel")
        if self.store.inbound_post_seen(env, payload.post_id):
            return Outcome(200, "ignored", "duplicate delivery: post already stored")
        return self._route_post(env, settings, payload)

    def _route_post(self, env: str, settings: dict, payload: WebhookPayload) -> Outcome:
        """Look the post up to find its thread, then store the reply."""
        client = logged_client(self.store, settings, session=self.session)
        try:
            post = self._lookup(client, payload.post_id)
        except mm.NotFound:
            return Outcome(200, "ignored", "the post is gone (deleted before it was looked up)")
        except mm.MattermostError as exc:
            # Mattermost never repeats a webhook call: keep it, or the reply is lost.
            failures = self.store.inbound_attempts(env, payload.post_id)
            delay = QUEUE_BACKOFF[min(failures, len(QUEUE_BACKOFF) - 1)]
            self.store.queue_inbound(env, payload.post_id, _kept_fields(payload), str(exc), delay)
            return Outcome(
                200, "error", f"cannot look the post up: {exc} Kept; 'flask retry' tries again."
            )
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
        return self._store_reply(env, settings, client, conversation, payload, text)

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

    def retry_queued(self, env: str | None = None) -> dict[str, int]:
        """Route again the kept calls whose post lookup failed; counts by outcome."""
        counts = {"stored": 0, "ignored": 0, "failed": 0}
        for row in self.store.due_inbound(env):
            self._started = time.perf_counter()
            settings = self.store.environment(row["env"])
            if not settings["active"]:
                continue
            payload = WebhookPayload(token="", **row["payload"])
            if self.store.inbound_post_seen(row["env"], payload.post_id):
                outcome = Outcome(200, "ignored", "duplicate delivery: post already stored")
            else:
                outcome = self._route_post(row["env"], settings, payload)
            if not outcome.logged:
                self._log(row["env"], payload, outcome, action="webhook_retry")
            if outcome.outcome != "error":
                self.store.dequeue_inbound(row["env"], payload.post_id)
            counts[{"ok": "stored", "ignored": "ignored"}.get(outcome.outcome, "failed")] += 1
            message = outcome.message or {}
            if message.get("delivery_status") == "pending":
                self.callbacks.deliver(message["id"], attempts=1)
        return counts

    def _store_reply(self, env, settings, client, conversation, payload, text) -> Outcome:
        author, is_bot = self._author(env, client, payload)
        if is_bot and not settings["accept_other_bots"]:
            return Outcome(200, "ignored", "post by another bot or integration")
        stripped = text.strip()
        if stripped.lower().startswith(NOTE_PREFIX):
            direction, delivery, reason = "note", "", "internal note, not shown to the visitor"
        elif stripped.lower() == CLOSE_COMMAND:
            direction, reason = "event", "conversation closed by the agent"
            delivery = "pending" if settings["callback_url"] else ""
            text = f"{author} closed the conversation."
        else:
            direction, reason = "agent", "agent reply stored"
            delivery = "pending" if settings["callback_url"] else ""
        # The reply, the close and the log row commit together: one transaction.
        with self.store.immediate():
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
                if direction == "event":
                    self.store.close_conversation(conversation["id"])
            self._log(env, payload, outcome)
        if message is not None and direction == "event":
            self._confirm_close(client, conversation)
        return outcome

    def _confirm_close(self, client: mm.MattermostClient, conversation: dict) -> None:
        """Say in the thread that it is closed.

        Posted over REST: Mattermost refuses a webhook-response comment on a
        post that is itself a reply. The hook fires for this bot post too and
        the loop guard ignores it. A failure is in the log and changes nothing.
        """
        try:
            client.create_post(
                conversation["channel_id"],
                "Conversation closed. The visitor sees that it has ended.",
                root_id=conversation["root_post_id"],
                action="close_notice",
            )
        except mm.MattermostError:
            pass  # logged by the client; the close itself has happened

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


def _kept_fields(payload: WebhookPayload) -> dict[str, Any]:
    """What is kept of a call for a later try: everything but the token."""
    fields = dataclasses.asdict(payload)
    fields.pop("token")
    return fields


def display_name(user: dict[str, Any]) -> str:
    """``First Last``, else the nickname, else the username (as Chatwoot shows agents)."""
    full = " ".join(part for part in (user.get("first_name"), user.get("last_name")) if part)
    return full or user.get("nickname") or user.get("username") or ""


def _from_integration(props: dict[str, Any]) -> bool:
    return any(
        str(props.get(key, "")).lower() == "true"
        for key in ("from_bot", "from_webhook", "from_plugin")
    )
