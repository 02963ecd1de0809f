"""Synchronous send: persist -> post -> log, with bounded retries.

Every message is stored before it is sent, so nothing is lost when
Mattermost is down: it stays ``failed`` with the cause and the time of its
next attempt, and the worker (``flask --app app worker``) sends it then.
Each message carries a stable ``pending_key`` that is passed to
Mattermost as ``pending_post_id``, so a retry within the server's 30 s
deduplication window never posts twice; a later retry first looks for the
message's key in the props of the thread's or channel's posts. Split messages
remember which parts are already posted, so a retry continues where the last
attempt stopped.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import requests

from . import mattermost as mm
from .attachments import styled
from .buttons import Buttons, post_props, state_note
from .integration import call_log_fields, has_credentials, logged_client
from .store import Store
from .text import neutralize, split_text

# How long one synchronous send may keep retrying before the message is left
# `failed` for the worker: the host API caller is waiting on us.
RETRY_BUDGET_SECONDS = 8.0
MAX_ATTEMPTS = 4
BACKOFF_SECONDS = (0.5, 1.0, 2.0)
# When the worker tries a failed message again, after its 1st, 2nd, ... failed
# attempt; the last delay repeats. Short at first (a Mattermost restart takes
# a minute), then every 15 minutes for a long outage or a bot left out of a
# channel.
RETRY_SCHEDULE_SECONDS = (10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0)
# The longest a live sender holds a claim without recording progress: a look
# for parts an earlier attempt posted (one call, 3.05 + 10 s), then one
# part's post with its retries (the last attempt may start just inside the
# 8 s budget and take a whole call's timeout): 13.05 + 8 + 13.05 = 34.1 s.
# Split messages record each posted part. A reply whose thread root must go
# first adds the root's own send: about 55 s for a one-part root.
LONGEST_CLAIM_SECONDS = 2 * sum(mm.DEFAULT_TIMEOUT) + RETRY_BUDGET_SECONDS
# So a claim older than 120 s belongs to a sender that died (a web worker
# killed mid-send): the worker takes the message back. More than twice the
# longest live hold, and still short enough that a visitor's message waits
# about two minutes, not five, after a crash.
RECLAIM_AFTER_SECONDS = 120.0


class ConversationClosed(Exception):
    """A visitor wrote to a conversation an agent has closed."""


@dataclass
class TestMessageResult:
    ok: bool
    permalink: str = ""
    error: str = ""
    channel: str = ""


class Sender:
    """Sends stored messages of one database to Mattermost.

    :param store: the open :class:`Store`.
    :param session: the requests Session for Mattermost calls (tests inject one).
    :param sleep: how to wait between attempts (tests pass a no-op).
    :param retry_budget: seconds one send may spend retrying.
    :param schedule: delays before the worker's next attempt after the 1st,
        2nd, ... failed one (the last repeats).
    :param reclaim_after: seconds after which a 'sending' claim is taken back.
    :param buttons: how to build the root posts' buttons (None: posts without).
    """

    def __init__(
        self,
        store: Store,
        *,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        retry_budget: float = RETRY_BUDGET_SECONDS,
        timeout: tuple[float, float] = mm.DEFAULT_TIMEOUT,
        schedule: Sequence[float] = RETRY_SCHEDULE_SECONDS,
        reclaim_after: float = RECLAIM_AFTER_SECONDS,
        buttons: Buttons | None = None,
    ):
        self.store = store
        self.buttons = buttons  # Claim / Close on each new root post (None: none)
        self.session = session
        self.sleep = sleep
        self.retry_budget = retry_budget
        self.timeout = timeout
        self.schedule = tuple(schedule) or RETRY_SCHEDULE_SECONDS
        self.reclaim_after = reclaim_after

    # -- entry points ---------------------------------------------------------

    def start_conversation(
        self,
        env: str,
        visitor_name: str,
        text: str,
        visitor_email: str = "",
        external_id: str = "",
        source: str = "api",
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Store a new conversation with its first message and mirror it as a root post.

        :param source: ``chat`` for the public chat page, ``api`` for the host API.
        """
        conversation, message = self.store.create_conversation(
            env, visitor_name, visitor_email, external_id, text, source=source
        )
        message = self.deliver(
            message["id"], conversation=conversation, claimed=True, message=message
        )
        return self.store.conversation(conversation["id"]), message

    def add_visitor_message(
        self,
        env: str,
        conversation_id: str,
        text: str,
        *,
        settings: dict | None = None,
        files: Sequence[tuple[str, str, bytes]] = (),
    ) -> dict[str, Any]:
        """Store a visitor's next message and post it as a reply in the thread.

        :param settings: the environment's settings when the caller has them already.
        :param files: ``(name, mime_type, content)`` of checked files, stored
            with the message (one transaction) and uploaded with its post.
        :raises store.NotFound: no such conversation in this environment.
        """
        conversation = self.store.conversation(conversation_id, env=env)
        if conversation["status"] == "closed":
            raise ConversationClosed(f"conversation {conversation_id} is closed")
        # One transaction for the message and its files (none: a single insert).
        with self.store.immediate() if files else contextlib.nullcontext():
            message = self.store.add_visitor_message(
                env, conversation_id, conversation["visitor_name"], text
            )
            for name, mime_type, content in files:
                self.store.add_message_file(
                    message_id=message["id"],
                    conversation_id=conversation_id,
                    env=env,
                    name=name,
                    size=len(content),
                    mime_type=mime_type,
                    content=content,
                )
        return self.deliver(
            message["id"],
            settings=settings,
            conversation=conversation,
            claimed=True,
            message=message,
        )

    def notify(
        self,
        env: str,
        notification_type: str,
        text: str,
        attachments: list[dict[str, Any]] | None = None,
        *,
        on_stored: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Store a typed notification and post it to the channel mapped to its type.

        A type given a colour and a title on the configuration screen is posted
        as a message attachment holding the text; ``attachments`` (already
        validated) follow it in the post's ``props.attachments``.

        :param on_stored: called with the stored message in the same transaction
            as its insert, before anything is posted (a re-sent payload records
            which message it became, so it can never be sent twice).
        """
        settings = self.store.environment(env)
        channel_id = settings["notify_map"].get(notification_type, "")
        style = settings["notify_styles"].get(notification_type)
        if style and text.strip():
            attachments = [styled(text, style), *(attachments or [])]
            text = ""
        if on_stored is None:
            message = self.store.add_notification(
                env, notification_type, text, channel_id, attachments
            )
        else:
            with self.store.immediate():
                message = self.store.add_notification(
                    env, notification_type, text, channel_id, attachments
                )
                on_stored(message)
        if not channel_id:
            reason = f"type {notification_type!r} is not mapped to a channel"
            self._log_skip(env, message, reason)
            return self.store.finish_message(message["id"], "skipped", reason=reason)
        return self.deliver(message["id"], settings=settings, claimed=True, message=message)

    def retry_failed(self, env: str | None = None) -> dict[str, int]:
        """Send again every ``failed`` message now, whatever its schedule
        (``flask retry``, oldest first); counts by outcome."""
        counts = {"sent": 0, "failed": 0, "skipped": 0}
        for message_id in self.store.failed_message_ids(env, stale_after=self.reclaim_after):
            message = self.store.message(message_id)
            if not self.store.environment(message["env"])["active"]:
                counts["skipped"] += 1
                continue
            message = self.resend(message_id)
            if message is None:
                continue  # another worker or retry run is sending it, and counts it
            counts[message["status"] if message["status"] in counts else "failed"] += 1
        return counts

    def send_test_message(self, env: str) -> TestMessageResult:
        """Post a test message to the mirror channel; a permalink or the exact cause."""
        settings = self.store.environment(env)
        channel_id = settings["mirror_channel_id"]
        if not has_credentials(settings) or not settings["server_url"]:
            return TestMessageResult(
                False, error="Fill in and verify the authentication screen first."
            )
        if not channel_id:
            return TestMessageResult(False, error="Choose a mirror channel and save first.")
        client = self.client(settings)
        text = (
            f"Mattermost Bridge test message from the **{env}** environment. "
            "If you can read this, the bot can post here."
        )
        try:
            post = client.create_post(channel_id, text, action="test_message")
        except mm.MattermostError as exc:
            return TestMessageResult(False, error=explain(exc, settings, channel_id))
        return TestMessageResult(
            True,
            permalink=f"{client.base_url}/_redirect/pl/{post['id']}",
            channel=channel_label(settings, channel_id),
        )

    # -- the send itself ------------------------------------------------------

    def deliver(
        self,
        message_id: int,
        *,
        settings: dict | None = None,
        conversation: dict | None = None,
        claimed: bool = False,
        message: dict | None = None,
    ) -> dict[str, Any]:
        """Post a stored message (all its parts); returns it with its final status.

        :param claimed: the caller already holds the message as 'sending' (it has
            just stored it, or claimed it), so the claim is skipped.
        :param message: the message row when the caller has just stored it.
        """
        message = message or self.store.message(message_id)
        settings = settings or self.store.environment(message["env"])
        if not claimed:
            # Another worker may be sending it right now: then it stays as it is.
            return self.resend(message_id, settings=settings) or message
        if not settings["active"]:
            return self._skip_inactive(message)
        return self._send(message, settings, conversation, retrying=False)

    def resend(
        self, message_id: int, *, settings: dict | None = None, due_only: bool = False
    ) -> dict[str, Any] | None:
        """Claim a stored message and send it again; None when another sender has it.

        :param due_only: a failed message only once its next attempt is due
            (the worker: another worker may have just tried it).
        """
        message = self.store.message(message_id)
        settings = settings or self.store.environment(message["env"])
        if not settings["active"]:
            return self._skip_inactive(message)
        if not self.store.claim_message(
            message_id, stale_after=self.reclaim_after, due_only=due_only
        ):
            return None
        # Read as claimed: an earlier sender may have posted some parts meanwhile.
        return self._send(self.store.message(message_id), settings, None, retrying=True)

    def _skip_inactive(self, message: dict) -> dict[str, Any]:
        reason = "environment is inactive"
        self._log_skip(message["env"], message, reason)
        return self.store.finish_message(message["id"], "skipped", reason=reason)

    def _send(
        self, message: dict, settings: dict, conversation: dict | None, *, retrying: bool
    ) -> dict[str, Any]:
        """Place, post and record one claimed message.

        :param retrying: an earlier attempt may have posted it: look first.
        """
        channel_id = message["channel_id"]
        calls: list[mm.CallRecord] = []
        try:
            channel_id, root_id = self._placement(message, settings, conversation)
            posted = self._post_parts(
                message, settings, channel_id, root_id, calls, retrying=retrying
            )
        except mm.MattermostError as exc:
            error = explain(exc, settings, channel_id)
            return self._finish(message, calls, "failed", channel_id=channel_id, error=error)
        except _NotPlaceable as exc:
            return self._finish(message, calls, "failed", error=str(exc))
        except Exception:
            # Never leave a message stuck in 'sending': keep it for retry, then let
            # the error handler log the traceback.
            self._finish(message, calls, "failed", error="unexpected error while sending")
            raise
        is_new_root = not root_id and message["conversation_id"]
        return self._finish(
            message,
            calls,
            "sent",
            channel_id=channel_id,
            post_ids=posted,
            root=(posted[0], channel_id) if is_new_root else None,
        )

    def _finish(
        self,
        message: dict,
        calls: list[mm.CallRecord],
        status: str,
        *,
        root: tuple[str, str] | None = None,
        **outcome: Any,
    ) -> dict[str, Any]:
        """The calls' log rows, the thread root and the outcome: one transaction."""
        if status == "failed":
            outcome["next_attempt_at"] = time.time() + self.retry_delay(message["attempts"])
        with self.store.immediate():
            for record in calls:
                self.store.log(**call_log_fields(message["env"], message, record))
            if root:
                self.store.set_conversation_root(message["conversation_id"], *root)
            return self.store.finish_message(message["id"], status, **outcome)

    def retry_delay(self, attempts: int) -> float:
        """Seconds until the next attempt of a message that failed ``attempts`` times."""
        return self.schedule[min(max(attempts, 1), len(self.schedule)) - 1]

    def _placement(
        self, message: dict, settings: dict, conversation: dict | None
    ) -> tuple[str, str]:
        """The channel and thread root a message goes to."""
        if message["direction"] == "notification":
            return message["channel_id"], ""
        conversation = conversation or self.store.conversation(message["conversation_id"])
        if message["post_id"] and message["post_id"] == conversation["root_post_id"]:
            # The thread's own root, split, with later parts still to post.
            return conversation["channel_id"], ""
        if conversation["root_post_id"]:
            return conversation["channel_id"], conversation["root_post_id"]
        if not settings["mirror_channel_id"]:
            raise _NotPlaceable("no mirror channel is configured for this environment")
        first = self.store.first_message(conversation["id"])
        if first["id"] == message["id"]:
            return settings["mirror_channel_id"], ""
        # The thread's root failed earlier: post it first so the order holds.
        first = self.deliver(first["id"], settings=settings)
        conversation = self.store.conversation(conversation["id"])
        if not conversation["root_post_id"]:
            raise _NotPlaceable(
                "the conversation's first message is not posted yet: "
                + (first["error"] or first["status"])
            )
        return conversation["channel_id"], conversation["root_post_id"]

    def _post_parts(
        self,
        message: dict,
        settings: dict,
        channel_id: str,
        root_id: str,
        calls: list[mm.CallRecord],
        *,
        retrying: bool = False,
    ) -> list[str]:
        """Post every part not posted yet; the ids of all parts, in order.

        The calls made are collected in ``calls`` for the caller to log.
        """
        client = logged_client(
            self.store, settings, session=self.session, timeout=self.timeout, sink=calls
        )
        limit = settings.get("max_post_size") or mm.MAX_POST_SIZE
        parts = split_text(format_message(message, is_root=not root_id), limit)
        posted = list(message["chunk_post_ids"])
        if retrying:
            posted = (
                self._already_posted(client, channel_id, root_id, message, len(parts)) or posted
            )
        # Uploaded first: a failed upload leaves the message failed, its files kept.
        file_ids = []
        if len(posted) < len(parts):
            file_ids = self._upload_files(client, message, channel_id)
        for index, part in enumerate(parts):
            if index < len(posted):
                continue  # sent by an earlier attempt
            attachments: list[dict[str, Any]] = []
            if message.get("attachments") and index == len(parts) - 1:
                # Below the text, as Mattermost shows a post's attachments.
                attachments.extend(message["attachments"])
            if index == 0 and not root_id and message["conversation_id"] and self.buttons:
                attachments.append(self._buttons_attachment(message["conversation_id"]))
            props = post_props(message, index, attachments)
            post = self._post_with_retry(
                client,
                channel_id,
                part,
                root_id=root_id or (posted[0] if posted else ""),
                pending_post_id=f"{message['pending_key']}:{index}",
                props=props,
                file_ids=file_ids if index == len(parts) - 1 else None,
            )
            posted.append(post["id"])
            if len(parts) > 1:
                # Remember progress so a retry continues after the last posted part,
                # and make the thread known before its later parts go out.
                self.store.record_chunk_posted(message["id"], posted)
                if index == 0 and not root_id and message["conversation_id"]:
                    self.store.set_conversation_root(
                        message["conversation_id"], post["id"], channel_id
                    )
        if file_ids:
            self.store.drop_file_contents(message["id"])
        return posted

    def _upload_files(
        self, client: mm.MattermostClient, message: dict, channel_id: str
    ) -> list[str]:
        """Upload the message's files not uploaded yet; the ids of all of them, in order.

        An id is recorded as soon as Mattermost gives it, so a retry uploads
        only what is missing. A file uploaded but never attached is dropped
        by Mattermost's own cleanup, never shown.
        """
        if message["direction"] != "visitor":
            return []
        file_ids = []
        for row in self.store.files_to_upload(message["id"]):
            if not row["file_id"]:
                info = client.upload_file(channel_id, row["name"], row["content"], row["mime_type"])
                self.store.record_file_uploaded(row["id"], info["id"])
                row["file_id"] = info["id"]
            file_ids.append(row["file_id"])
        return file_ids

    def _already_posted(
        self,
        client: mm.MattermostClient,
        channel_id: str,
        root_id: str,
        message: dict,
        part_count: int,
    ) -> list[str]:
        """Parts of this message Mattermost already has, in order from the first.

        An attempt whose answer was lost (cut connection, read timeout) may have
        posted anyway. Within 30 s pending_post_id makes Mattermost drop the
        repeat; a later retry looks for the parts' props instead: in the thread
        for a reply, among the channel's posts since the message for a root post
        or a notification.
        """
        posted = list(message["chunk_post_ids"])
        thread = root_id or (posted[0] if posted else "")
        if thread:
            candidates = client.thread(thread)
        else:
            since_ms = int(message["created_at"] * 1000) - 1000
            candidates = client.channel_posts_since(channel_id, since_ms)
        found: dict[int, str] = {}
        for post in candidates:
            props = post.get("props") or {}
            if props.get("bridge_key") == message["pending_key"]:
                part = str(props.get("bridge_part", "0"))
                if part.isdigit() and int(part) < part_count:
                    found[int(part)] = post["id"]
        posted = []
        while len(posted) in found:
            posted.append(found[len(posted)])
        return posted

    def _post_with_retry(
        self, client: mm.MattermostClient, channel_id: str, text: str, **kw
    ) -> dict:
        deadline = time.monotonic() + self.retry_budget
        for attempt in range(MAX_ATTEMPTS):
            try:
                return client.create_post(channel_id, text, **kw)
            except mm.MattermostError as exc:
                if not exc.retryable or attempt == MAX_ATTEMPTS - 1:
                    raise
                wait = (
                    exc.retry_after
                    if isinstance(exc, mm.RateLimited)
                    else BACKOFF_SECONDS[min(attempt, len(BACKOFF_SECONDS) - 1)]
                )
                if time.monotonic() + wait >= deadline:
                    raise
                self.sleep(wait)
        raise AssertionError("unreachable")  # the loop returns or raises

    # -- helpers --------------------------------------------------------------

    def _buttons_attachment(self, conversation_id: str) -> dict[str, Any]:
        conversation = self.store.conversation(conversation_id)
        return self.buttons.attachment(conversation, state_note(conversation))

    def client(self, settings: dict) -> mm.MattermostClient:
        """A client for an environment whose calls land in the integration log."""
        return logged_client(self.store, settings, session=self.session, timeout=self.timeout)

    def _log_skip(self, env: str, message: dict, reason: str) -> None:
        self.store.log(
            env=env,
            direction="outbound",
            action="post",
            target=message.get("channel_id", ""),
            outcome="ignored",
            error=f"skipped: {reason}",
            conversation_id=message.get("conversation_id") or "",
            message_id=message["id"],
        )


class _NotPlaceable(Exception):
    """The message has nowhere to go yet (no channel, or its thread root failed)."""


def format_message(message: dict, *, is_root: bool) -> str:
    """The post text: visitor text neutralized and attributed, notifications as given."""
    if message["direction"] == "notification":
        return message["text"]
    name = neutralize(" ".join(message["author"].split())) or "Visitor"
    text = neutralize(message["text"])
    if is_root:
        return f"**{name}** started a web chat:\n{text}"
    return f"**{name}:** {text}"


def explain(exc: mm.MattermostError, settings: dict, channel_id: str) -> str:
    """The error as an admin should read it, naming the bot and the channel."""
    bot = f"@{settings['bot_username']}" if settings.get("bot_username") else "the bot"
    if isinstance(exc, mm.Forbidden):
        channel = channel_label(settings, channel_id)
        return (
            f"403: {bot} is not a member of {channel} — add it to the channel "
            f"(/invite {bot}) and try again."
        )
    if isinstance(exc, mm.Unauthorized):
        return "401: the bot token is invalid or has been revoked — create a new token."
    return str(exc)


def channel_label(settings: dict, channel_id: str) -> str:
    """``channel Acme / Support`` when the name is known, else the id."""
    if not channel_id:
        return "the channel"
    name = settings.get("channel_names", {}).get(channel_id)
    if not name and channel_id == settings.get("mirror_channel_id"):
        name = settings.get("mirror_channel_name")
    return f"channel {name} ({channel_id})" if name else f"channel {channel_id}"
