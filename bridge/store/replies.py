"""Agents' replies from Mattermost and the user-name cache."""

from __future__ import annotations

import time
from typing import Any

from .base import new_id
from .messages import decode_message

# A reply (or note, or event) stored for the Mattermost post ``post_id`` of
# ``env``: params (env, post_id). Its terms match the partial unique index
# messages_inbound_post, so the check is one index probe.
STORED_REPLY = "env = ? AND post_id = ? AND direction IN ('agent', 'note', 'event')"


class RepliesMixin:
    """Inbound replies (mixed into Store)."""

    def inbound_post_seen(self, env: str, post_id: str) -> bool:
        return (
            self._one(
                f"SELECT 1 AS seen FROM messages WHERE {STORED_REPLY}",
                [env, post_id],
            )
            is not None
        )

    def add_inbound_message(
        self,
        *,
        env: str,
        conversation_id: str,
        direction: str,
        author: str,
        text: str,
        post_id: str,
        delivery_status: str = "",
    ) -> dict[str, Any] | None:
        """Store an agent reply, note or thread event once per Mattermost post.

        :returns: the new message, or None when this post was already stored
            (a repeated delivery, maybe racing in another worker).
        """
        now = time.time()
        row = self._one(
            "INSERT OR IGNORE INTO messages (env, conversation_id, direction, author, text,"
            " status, channel_id, post_id, pending_key, created_at, updated_at,"
            " delivery_status, next_delivery_at)"
            " VALUES (?, ?, ?, ?, ?, 'sent', '', ?, ?, ?, ?, ?, ?) RETURNING *",
            [
                env,
                conversation_id,
                direction,
                author,
                text,
                post_id,
                new_id(),
                now,
                now,
                delivery_status,
                now if delivery_status else None,
            ],
        )
        return decode_message(row) if row else None

    def cached_user(self, env: str, user_id: str, max_age: float) -> dict[str, Any] | None:
        return self._one(
            "SELECT * FROM mm_users WHERE env = ? AND user_id = ? AND fetched_at > ?",
            [env, user_id, time.time() - max_age],
        )

    def cache_user(self, env: str, user_id: str, display_name: str, is_bot: bool) -> None:
        self.db.execute(
            "INSERT INTO mm_users (env, user_id, display_name, is_bot, fetched_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT(env, user_id) DO UPDATE SET"
            " display_name = excluded.display_name, is_bot = excluded.is_bot,"
            " fetched_at = excluded.fetched_at",
            [env, user_id, display_name, int(is_bot), time.time()],
        )
