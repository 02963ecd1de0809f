"""The inbound inbox: webhook calls kept before they are routed, and their claims.

Mattermost calls an outgoing webhook once and never again, so the route
stores the call here in one short transaction and answers; routing (the post
lookup, storing the reply) follows. A row is kept ``routing``, claimed by the
web process that routes it right after its answer (its lease in ``next_at``);
``pending`` when that failed and it waits for a retry; ``done`` once routed.
A retry claims a row with one conditional UPDATE: of two processes racing for
a row exactly one wins, and a claim left by a dead process runs out after
the lease.
"""

from __future__ import annotations

import json
import time
from typing import Any

from .base import new_id
from .replies import STORED_REPLY

# Longer than a live routing can hold a row (two post lookups and a user lookup,
# each at most 13 s), so a slow router is not overtaken; short enough that a
# row claimed by a killed process is routed again within a few minutes.
INBOX_LEASE_SECONDS = 120.0
# Routed rows stay this long, so a repeated delivery of the same post is
# recognised without a lookup; the log keeps the outcome for longer.
INBOX_KEEP_DONE_SECONDS = 86400.0


class InboxMixin:
    """Kept webhook calls (mixed into Store)."""

    def add_to_inbox(
        self, env: str, post_id: str, payload: dict[str, Any], *, lease: float = INBOX_LEASE_SECONDS
    ) -> dict[str, Any] | None:
        """Keep one call, claimed by the caller, who routes it next.

        A caller that dies before routing it leaves a claim that runs out
        after ``lease`` seconds; then a retry takes the row. One statement,
        so one short transaction of its own: the check that the reply is not
        stored yet and the insert cannot be split by another writer.

        :returns: the row's ``id`` and ``claim``, or None when this post is
            in the inbox already (a repeated delivery is kept once) or its
            reply is stored.
        """
        now = time.time()
        return self._one(
            "INSERT OR IGNORE INTO inbox (env, post_id, payload, state, attempts, claim,"
            " received_at, next_at) SELECT ?, ?, ?, 'routing', 1, ?, ?, ?"
            f" WHERE NOT EXISTS (SELECT 1 FROM messages WHERE {STORED_REPLY}) RETURNING id, claim",
            [
                env,
                post_id,
                json.dumps(payload, separators=(",", ":")),
                new_id(),
                now,
                now + lease,
                env,
                post_id,
            ],
        )

    def claim_inbox(
        self, inbox_id: int, *, lease: float = INBOX_LEASE_SECONDS, now: float | None = None
    ) -> dict[str, Any] | None:
        """Take a due row for routing; None when it is not due or another router holds it.

        Due: pending with its delay over, or claimed with the claim run out.
        One conditional UPDATE, so of two routers racing exactly one wins.

        :returns: the row with its decoded ``payload`` and the new ``claim``.
        """
        now = time.time() if now is None else now
        row = self._one(
            "UPDATE inbox SET state = 'routing', attempts = attempts + 1, claim = ?,"
            " next_at = ? WHERE id = ? AND state IN ('pending', 'routing') AND next_at <= ?"
            " RETURNING *",
            [new_id(), now + lease, inbox_id, now],
        )
        return _decoded(row)

    def holds_inbox_claim(self, inbox_id: int, claim: str) -> bool:
        """Whether ``claim`` still holds the row (False once it ran out and was taken)."""
        row = self._one(
            "SELECT 1 AS held FROM inbox WHERE id = ? AND claim = ? AND state = 'routing'",
            [inbox_id, claim],
        )
        return row is not None

    def release_inbox(self, inbox_id: int, claim: str, *, error: str, delay: float) -> bool:
        """Give a claimed row back to try again after ``delay`` seconds."""
        cursor = self.db.execute(
            "UPDATE inbox SET state = 'pending', claim = '', error = ?, next_at = ?"
            " WHERE id = ? AND claim = ? AND state = 'routing'",
            [error[:2000], time.time() + delay, inbox_id, claim],
        )
        return cursor.rowcount == 1

    def finish_inbox(self, inbox_id: int, claim: str, outcome: str) -> bool:
        """Mark a claimed row routed; False when the claim ran out and another took it."""
        cursor = self.db.execute(
            "UPDATE inbox SET state = 'done', claim = '', outcome = ?, routed_at = ?"
            " WHERE id = ? AND claim = ? AND state = 'routing'",
            [outcome, time.time(), inbox_id, claim],
        )
        return cursor.rowcount == 1

    def due_inbox_ids(
        self, env: str | None = None, *, limit: int = 500, now: float | None = None
    ) -> list[int]:
        """Rows a router may claim now, oldest first: due pending rows and expired
        claims, of active environments only (an inactive one accepts no replies,
        its kept rows wait until it is active again)."""
        sql = (
            "SELECT inbox.id FROM inbox JOIN environments e ON e.name = inbox.env"
            " WHERE inbox.state != 'done' AND inbox.next_at <= ? AND e.active = 1"
        )
        params: list[Any] = [time.time() if now is None else now]
        if env:
            sql += " AND inbox.env = ?"
            params.append(env)
        params.append(limit)
        return [row["id"] for row in self.db.query(sql + " ORDER BY inbox.id LIMIT ?", params)]

    def inbox_row(self, inbox_id: int) -> dict[str, Any] | None:
        return _decoded(self._one("SELECT * FROM inbox WHERE id = ?", [inbox_id]))

    def count_queued_inbound(self, env: str) -> int:
        """Calls kept but not routed yet (Mattermost failed, or routing is under way)."""
        row = self._one("SELECT COUNT(*) AS n FROM inbox WHERE env = ? AND state != 'done'", [env])
        return row["n"]

    def prune_inbox(self, now: float | None = None) -> int:
        """Drop rows routed more than a day ago; returns how many went."""
        now = time.time() if now is None else now
        cursor = self.db.execute(
            "DELETE FROM inbox WHERE state = 'done' AND routed_at < ?",
            [now - INBOX_KEEP_DONE_SECONDS],
        )
        return cursor.rowcount


def _decoded(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row:
        row["payload"] = json.loads(row["payload"])
    return row
