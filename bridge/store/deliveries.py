"""Reply callbacks to the host: claims and schedule."""

from __future__ import annotations

import time
from typing import Any

from .base import STALE_SENDING_SECONDS


class DeliveriesMixin:
    """The host-callback state of agent replies (mixed into Store)."""

    def claim_delivery(self, message_id: int, *, ignore_schedule: bool = False) -> bool:
        """Take a due callback delivery; False when another worker has it."""
        now = time.time()
        due = float("inf") if ignore_schedule else now
        cursor = self.db.execute(
            "UPDATE messages SET delivery_status = 'sending',"
            " delivery_attempts = delivery_attempts + 1, next_delivery_at = ?"
            " WHERE id = ? AND (delivery_status IN ('pending', 'failed')"
            " OR (delivery_status = 'sending' AND next_delivery_at <= ?))"
            " AND (next_delivery_at IS NULL OR next_delivery_at <= ?)",
            # A crashed worker's claim becomes due again after STALE_SENDING_SECONDS.
            [now + STALE_SENDING_SECONDS, message_id, now, due],
        )
        return cursor.rowcount == 1

    def finish_delivery(self, message_id: int, status: str, next_at: float | None = None) -> None:
        self.db.execute(
            "UPDATE messages SET delivery_status = ?, next_delivery_at = ? WHERE id = ?",
            [status, next_at, message_id],
        )

    def due_delivery_ids(self, env: str | None = None, limit: int = 500) -> list[int]:
        sql = (
            "SELECT id FROM messages WHERE delivery_status IN ('pending', 'failed', 'sending')"
            " AND next_delivery_at <= ?"
        )
        params: list[Any] = [time.time()]
        if env:
            sql += " AND env = ?"
            params.append(env)
        params.append(limit)
        return [row["id"] for row in self.db.query(sql + " ORDER BY id LIMIT ?", params)]
