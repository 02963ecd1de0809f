"""The integration log: append, page through, prune."""

from __future__ import annotations

import time
from typing import Any

from .base import LOG_PAGE_SIZE

# Repeated rejections share one log row per this many seconds.
COUNT_WINDOW_SECONDS = 600.0


class LogMixin:
    """The integration log (mixed into Store)."""

    def log(
        self,
        *,
        env: str,
        direction: str,
        action: str,
        outcome: str,
        target: str = "",
        http_status: int | None = None,
        duration_ms: float | None = None,
        error: str = "",
        conversation_id: str = "",
        message_id: int | None = None,
        post_id: str = "",
    ) -> int:
        """Append one row to the integration log; returns its id."""
        cursor = self.db.execute(
            "INSERT INTO log (ts, env, direction, action, target, outcome, http_status,"
            " duration_ms, error, conversation_id, message_id, post_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                time.time(),
                env,
                direction,
                action,
                target,
                outcome,
                http_status,
                duration_ms,
                error[:2000],
                conversation_id,
                message_id,
                post_id,
            ],
        )
        return cursor.lastrowid

    def log_counted(
        self,
        *,
        env: str,
        direction: str,
        action: str,
        outcome: str,
        reason: str,
        http_status: int | None = None,
        window: float = COUNT_WINDOW_SECONDS,
        now: float | None = None,
    ) -> int:
        """Count a repeated event in one log row per (env, action, reason) per window.

        Rejected webhook calls come from anyone who can reach the bridge: a
        row each would let them fill the disk. The row is inserted at the
        first event of a window and its ``count`` raised in place after that
        (one atomic upsert, so racing workers add to the same row).
        ``reason`` must come from a fixed set of sentences, never the caller's
        data, or every call would make a row of its own.

        :returns: the count so far in this window.
        """
        now = time.time() if now is None else now
        window_start = int(now // window * window)
        key = f"{env}|{direction}|{action}|{outcome}|{http_status}|{window_start}|{reason}"
        row = self._one(
            "INSERT INTO log (ts, env, direction, action, outcome, http_status, error,"
            " count, last_ts, count_key) VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?)"
            " ON CONFLICT(count_key) WHERE count_key IS NOT NULL"
            " DO UPDATE SET count = count + 1, last_ts = excluded.last_ts RETURNING count",
            [now, env, direction, action, outcome, http_status, reason[:2000], now, key[:2200]],
        )
        return row["count"]

    def log_page(
        self,
        *,
        env: str = "",
        direction: str = "",
        outcome: str = "",
        conversation: str = "",
        before_id: int | None = None,
        after_id: int | None = None,
        limit: int = LOG_PAGE_SIZE,
    ) -> list[dict[str, Any]]:
        """Log rows newest first, filtered, keyset-paginated by id.

        :param conversation: only the rows about this conversation.
        :param before_id: rows older than this id (the next page).
        :param after_id: rows newer than this id (the live tail).
        """
        clauses, params = [], []
        filters = (
            ("env", env),
            ("direction", direction),
            ("outcome", outcome),
            ("conversation_id", conversation),
        )
        for column, value in filters:
            if value:
                clauses.append(f"{column} = ?")
                params.append(value)
        if before_id is not None:
            clauses.append("id < ?")
            params.append(before_id)
        if after_id is not None:
            clauses.append("id > ?")
            params.append(after_id)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        params.append(limit)
        # The tail reads upwards from after_id, so a burst of new rows is paged
        # through rather than skipped; the page is still shown newest first.
        order = "ASC" if after_id is not None else "DESC"
        rows = list(self.db.query(f"SELECT * FROM log {where} ORDER BY id {order} LIMIT ?", params))
        return rows[::-1] if after_id is not None else rows

    def last_log(
        self,
        env: str,
        direction: str,
        outcome: str = "ok",
        action: str | tuple[str, ...] = "",
        *,
        not_actions: tuple[str, ...] = (),
    ) -> dict | None:
        """The newest log row of this kind; ``action`` may name several.

        :param not_actions: leave rows of these actions out.
        """
        sql = "SELECT * FROM log WHERE env = ? AND direction = ? AND outcome = ?"
        params: list[Any] = [env, direction, outcome]
        actions = (action,) if isinstance(action, str) and action else tuple(action)
        if actions:
            sql += f" AND action IN ({', '.join('?' for _ in actions)})"
            params.extend(actions)
        if not_actions:
            sql += f" AND action NOT IN ({', '.join('?' for _ in not_actions)})"
            params.extend(not_actions)
        return self._one(sql + " ORDER BY id DESC LIMIT 1", params)

    def prune_log(self, days: float) -> int:
        """Delete log rows (and admin actions) older than ``days``; returns how many log rows went.

        Also drops what only matters for a short while: finished rate-limit
        windows, cached user names older than a day and inbox rows routed
        more than a day ago.
        """
        now = time.time()
        with self.immediate():
            cursor = self.db.execute("DELETE FROM log WHERE ts < ?", [now - days * 86400])
            self.db.execute("DELETE FROM admin_log WHERE ts < ?", [now - days * 86400])
            self.db.execute("DELETE FROM rate_limits WHERE window_start < ?", [now - 86400])
            self.db.execute("DELETE FROM mm_users WHERE fetched_at < ?", [now - 86400])
            self.prune_inbox(now)
        return cursor.rowcount
