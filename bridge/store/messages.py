"""Messages: what the bridge sends, their claims and outcomes."""

from __future__ import annotations

import json
import time
from typing import Any

from .base import MESSAGES_PAGE_SIZE, STALE_SENDING_SECONDS, NotFound, new_id

MESSAGE_INSERT_COLUMNS = frozenset(
    {
        "env",
        "conversation_id",
        "direction",
        "notification_type",
        "author",
        "text",
        "status",
        "channel_id",
        "pending_key",
        "created_at",
        "updated_at",
        "attempts",
        "attachments",
    }
)


class MessagesMixin:
    """Visitor messages and notifications, and the state of each send (mixed into Store)."""

    def add_visitor_message(self, env: str, conversation_id: str, author: str, text: str) -> dict:
        return self._insert_message(
            env=env, conversation_id=conversation_id, direction="visitor", author=author, text=text
        )

    def add_notification(
        self,
        env: str,
        notification_type: str,
        text: str,
        channel_id: str,
        attachments: list[dict] | None = None,
    ) -> dict:
        """A notification; ``attachments`` go to the post's ``props.attachments``."""
        return self._insert_message(
            env=env,
            conversation_id=None,
            direction="notification",
            author=notification_type,
            text=text,
            notification_type=notification_type,
            channel_id=channel_id,
            attachments=json.dumps(attachments) if attachments else "",
        )

    def _insert_message(self, *, now: float | None = None, **fields: Any) -> dict[str, Any]:
        now = now or time.time()
        row = {
            # Stored already claimed by the request that sends it right away.
            "status": "sending",
            "attempts": 1,
            # Sent as Mattermost's pending_post_id: a repeat within 30 s is dropped.
            "pending_key": new_id(),
            "created_at": now,
            "updated_at": now,
            **fields,
        }
        columns = [column for column in row if column in MESSAGE_INSERT_COLUMNS]
        return decode_message(
            self._one(
                f"INSERT INTO messages ({', '.join(columns)})"
                f" VALUES ({', '.join('?' for _ in columns)}) RETURNING *",
                [row[column] for column in columns],
            )
        )

    def message(self, message_id: int) -> dict[str, Any]:
        row = self._one("SELECT * FROM messages WHERE id = ?", [message_id])
        if row is None:
            raise NotFound(f"no message with id {message_id!r}")
        return decode_message(row)

    def messages_after(
        self,
        conversation_id: str,
        after_id: int = 0,
        limit: int = MESSAGES_PAGE_SIZE,
        *,
        visitor_view: bool = False,
    ) -> list[dict[str, Any]]:
        """One page of a conversation's messages, oldest first, keyset by id.

        :param visitor_view: only what the visitor may see (no internal notes).
        """
        only = " AND direction IN ('visitor', 'agent')" if visitor_view else ""
        return list(
            self.db.query(
                "SELECT id, direction, author, text, created_at, status, error, post_id,"
                " delivery_status FROM messages"
                f" WHERE conversation_id = ? AND id > ?{only} ORDER BY id LIMIT ?",
                [conversation_id, after_id, limit],
            )
        )

    def first_message(self, conversation_id: str) -> dict[str, Any]:
        row = self._one(
            "SELECT * FROM messages WHERE conversation_id = ? ORDER BY id LIMIT 1",
            [conversation_id],
        )
        if row is None:
            raise NotFound(f"conversation {conversation_id!r} has no message")
        return decode_message(row)

    def claim_message(
        self,
        message_id: int,
        *,
        stale_after: float = STALE_SENDING_SECONDS,
        due_only: bool = False,
    ) -> bool:
        """Mark a message as being sent; False when another worker already is.

        The conditional UPDATE is atomic, so of two workers retrying the same
        message only one posts it. A 'skipped' message can be claimed too: a
        conversation begun while its environment was inactive gets its root
        post when the next message comes after activation.

        :param stale_after: a 'sending' claim older than this many seconds was
            left by a dead sender and is taken over.
        :param due_only: a 'failed' message only once its next attempt is due
            (the worker); ``flask retry`` and a thread's root sent first ignore
            the schedule.
        """
        now = time.time()
        cursor = self.db.execute(
            "UPDATE messages SET status = 'sending', attempts = attempts + 1, updated_at = ?"
            " WHERE id = ? AND (status IN ('pending', 'skipped')"
            " OR (status = 'failed' AND (? OR next_attempt_at IS NULL OR next_attempt_at <= ?))"
            " OR (status = 'sending' AND updated_at < ?))",
            [now, message_id, int(not due_only), now, now - stale_after],
        )
        return cursor.rowcount == 1

    def record_chunk_posted(self, message_id: int, post_ids: list[str]) -> None:
        """Remember which parts of a split message are already posted."""
        self.db.execute(
            "UPDATE messages SET chunk_post_ids = ?, post_id = ?, updated_at = ? WHERE id = ?",
            [json.dumps(post_ids), post_ids[0] if post_ids else "", time.time(), message_id],
        )

    def finish_message(
        self,
        message_id: int,
        status: str,
        *,
        channel_id: str | None = None,
        error: str = "",
        reason: str = "",
        post_ids: list[str] | None = None,
        next_attempt_at: float | None = None,
    ) -> dict[str, Any]:
        """Record the outcome of a send (and the ids of the posts it made).

        :param next_attempt_at: for a 'failed' one, when the worker tries again.
        """
        row = self._one(
            "UPDATE messages SET status = ?, error = ?, reason = ?, updated_at = ?,"
            " next_attempt_at = ?,"
            " channel_id = COALESCE(?, channel_id), chunk_post_ids = COALESCE(?, chunk_post_ids),"
            " post_id = COALESCE(?, post_id) WHERE id = ? RETURNING *",
            [
                status,
                error,
                reason,
                time.time(),
                next_attempt_at,
                channel_id,
                json.dumps(post_ids) if post_ids else None,
                post_ids[0] if post_ids else None,
                message_id,
            ],
        )
        if row is None:
            raise NotFound(f"no message with id {message_id!r}")
        return decode_message(row)

    def failed_message_ids(
        self, env: str | None = None, *, stale_after: float = STALE_SENDING_SECONDS
    ) -> list[int]:
        """Messages to retry now, whatever their schedule (``flask retry``).

        Oldest first, so a thread's root goes before its replies.
        """
        sql = (
            "SELECT id FROM messages WHERE (status = 'failed'"
            " OR (status = 'sending' AND updated_at < ?))"
        )
        params: list[Any] = [time.time() - stale_after]
        if env:
            sql += " AND env = ?"
            params.append(env)
        return [row["id"] for row in self.db.query(sql + " ORDER BY id", params)]

    def due_message_ids(self, *, stale_after: float, limit: int = 50) -> list[int]:
        """What the worker sends now: failed messages whose next attempt is due,
        and claims left by a dead sender, of active environments, oldest first."""
        now = time.time()
        return [
            row["id"]
            for row in self.db.query(
                "SELECT id FROM messages"
                " WHERE ((status = 'failed'"
                " AND (next_attempt_at IS NULL OR next_attempt_at <= ?))"
                " OR (status = 'sending' AND updated_at < ?))"
                " AND env IN (SELECT name FROM environments WHERE active = 1)"
                " ORDER BY id LIMIT ?",
                [now, now - stale_after, limit],
            )
        ]

    def next_attempt(self, env: str) -> float | None:
        """When the worker next tries one of the environment's failed messages."""
        row = self._one(
            "SELECT MIN(COALESCE(next_attempt_at, 0)) AS at FROM messages"
            " WHERE env = ? AND status = 'failed'",
            [env],
        )
        return row["at"]

    def count_failed(self, env: str) -> int:
        row = self._one(
            "SELECT COUNT(*) AS n FROM messages WHERE env = ? AND status = 'failed'", [env]
        )
        return row["n"]


def decode_message(row: dict[str, Any]) -> dict[str, Any]:
    row["chunk_post_ids"] = json.loads(row["chunk_post_ids"])
    row["attachments"] = json.loads(row["attachments"]) if row.get("attachments") else []
    return row
