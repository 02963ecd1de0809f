"""The readiness checklist: admins' ticks, live checks and their evidence."""

from __future__ import annotations

import time
from typing import Any

from .agents import AGENT_ACTIONS
from .sources import SOURCE_ACTIONS

# Inbound calls that say nothing about Mattermost's outgoing webhook.
NOT_WEBHOOK_ACTIONS = SOURCE_ACTIONS + AGENT_ACTIONS


class ChecklistMixin:
    """Checklist ticks, check results and the evidence queries (mixed into Store)."""

    def ticks(self, env: str) -> dict[str, dict[str, Any]]:
        rows = self.db.query("SELECT * FROM checklist_ticks WHERE env = ?", [env])
        return {row["item"]: row for row in rows}

    def set_tick(self, env: str, item: str, ticked: bool, by: str) -> None:
        """Record who ticked (or unticked) an item and when."""
        self.db.execute(
            "INSERT INTO checklist_ticks (env, item, ticked, ticked_by, ticked_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT(env, item) DO UPDATE SET"
            " ticked = excluded.ticked, ticked_by = excluded.ticked_by,"
            " ticked_at = excluded.ticked_at",
            [env, item, int(ticked), by, time.time()],
        )

    def checks(self, env: str) -> dict[str, dict[str, Any]]:
        rows = self.db.query("SELECT * FROM checks WHERE env = ?", [env])
        return {row["item"]: row for row in rows}

    def save_check(self, env: str, item: str, state: str, detail: str, subject: str = "") -> None:
        """Keep the result of a live check (``subject`` says what was checked)."""
        self.db.execute(
            "INSERT INTO checks (env, item, state, detail, subject, checked_at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(env, item) DO UPDATE SET"
            " state = excluded.state, detail = excluded.detail, subject = excluded.subject,"
            " checked_at = excluded.checked_at",
            [env, item, state, detail, subject, time.time()],
        )

    def last_valid_inbound(self, env: str) -> dict[str, Any] | None:
        """The newest Mattermost webhook call whose token matched (accepted or ignored).

        Other systems' calls (sources) are inbound too, but say nothing about Mattermost.
        """
        return self._one(
            "SELECT * FROM log WHERE env = ? AND direction = 'inbound'"
            " AND outcome IN ('ok', 'ignored')"
            f" AND action NOT IN ({', '.join('?' for _ in NOT_WEBHOOK_ACTIONS)})"
            " ORDER BY id DESC LIMIT 1",
            [env, *NOT_WEBHOOK_ACTIONS],
        )

    def end_to_end_conversation(self, env: str) -> dict[str, Any] | None:
        """A conversation with a root post, a sent visitor reply and an agent reply."""
        return self._one(
            "SELECT c.*, MAX(a.created_at) AS completed_at FROM conversations c"
            " JOIN messages a ON a.conversation_id = c.id AND a.direction = 'agent'"
            " WHERE c.env = ? AND c.root_post_id != '' AND EXISTS ("
            "   SELECT 1 FROM messages v WHERE v.conversation_id = c.id"
            "   AND v.direction = 'visitor' AND v.status = 'sent'"
            "   AND v.id > (SELECT MIN(id) FROM messages f WHERE f.conversation_id = c.id))"
            " GROUP BY c.id ORDER BY completed_at DESC LIMIT 1",
            [env],
        )
