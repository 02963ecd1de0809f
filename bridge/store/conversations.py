"""Conversations: a visitor's chat, mirrored as one Mattermost thread."""

from __future__ import annotations

import time
from typing import Any

from .base import CONVERSATIONS_PAGE_SIZE, NotFound, new_id


class ConversationsMixin:
    """Conversations and their thread roots (mixed into Store)."""

    def create_conversation(
        self,
        env: str,
        visitor_name: str,
        visitor_email: str,
        external_id: str,
        text: str,
        source: str = "api",
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Store a conversation and its first visitor message, both at once.

        :param source: where it began: ``api`` (host API) or ``chat`` (the chat page).
        """
        now = time.time()
        conversation_id = new_id()
        with self.immediate():
            self.db.execute(
                "INSERT INTO conversations (id, env, visitor_name, visitor_email, external_id,"
                " status, created_at, source) VALUES (?, ?, ?, ?, ?, 'open', ?, ?)",
                [conversation_id, env, visitor_name, visitor_email, external_id, now, source],
            )
            message = self._insert_message(
                env=env,
                conversation_id=conversation_id,
                direction="visitor",
                author=visitor_name,
                text=text,
                now=now,
            )
        return self.conversation(conversation_id), message

    def conversation(self, conversation_id: str, env: str | None = None) -> dict[str, Any]:
        sql = "SELECT * FROM conversations WHERE id = ?"
        params: list[Any] = [conversation_id]
        if env is not None:
            sql += " AND env = ?"
            params.append(env)
        row = self._one(sql, params)
        if row is None:
            raise NotFound(f"no conversation with id {conversation_id!r}")
        return row

    def conversation_for_root_post(self, env: str, root_post_id: str) -> dict[str, Any] | None:
        return self._one(
            "SELECT * FROM conversations WHERE env = ? AND root_post_id = ?", [env, root_post_id]
        )

    def set_conversation_root(
        self, conversation_id: str, root_post_id: str, channel_id: str
    ) -> None:
        self.db.execute(
            "UPDATE conversations SET root_post_id = ?, channel_id = ? WHERE id = ?",
            [root_post_id, channel_id, conversation_id],
        )

    def close_conversation(self, conversation_id: str) -> None:
        self.db.execute(
            "UPDATE conversations SET status = 'closed', closed_at = ? WHERE id = ?",
            [time.time(), conversation_id],
        )

    def recent_conversations(
        self, before: int | None = None, limit: int = CONVERSATIONS_PAGE_SIZE
    ) -> list[dict[str, Any]]:
        """Conversations newest first, keyset-paginated by insertion order (``seq``)."""
        where = "WHERE c.rowid < ?" if before is not None else ""
        params = ([before] if before is not None else []) + [limit]
        return list(
            self.db.query(
                "SELECT c.*, c.rowid AS seq, (SELECT COUNT(*) FROM messages m"
                " WHERE m.conversation_id = c.id) AS message_count"
                f" FROM conversations c {where} ORDER BY c.rowid DESC LIMIT ?",
                params,
            )
        )
