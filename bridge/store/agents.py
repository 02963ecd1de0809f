"""What agents do from Mattermost: claim, reopen, list open conversations (issue 10)."""

from __future__ import annotations

from typing import Any

# Log actions of the calls Mattermost makes for agents: the slash command and the
# buttons. Inbound like the webhook, but they say nothing about the webhook itself.
AGENT_ACTIONS = ("command", "button")
LIST_LIMIT = 20


class AgentsMixin:
    """Assignees, reopening, the slash command's lists and counts (mixed into Store)."""

    def set_assignee(self, conversation_id: str, assignee: str) -> None:
        self.db.execute(
            "UPDATE conversations SET assignee = ? WHERE id = ?", [assignee, conversation_id]
        )

    def reopen_conversation(self, conversation_id: str) -> None:
        self.db.execute(
            "UPDATE conversations SET status = 'open', closed_at = NULL WHERE id = ?",
            [conversation_id],
        )

    def open_conversations(self, env: str, limit: int = LIST_LIMIT) -> list[dict[str, Any]]:
        """An environment's open conversations, newest first."""
        return list(
            self.db.query(
                "SELECT * FROM conversations WHERE env = ? AND status = 'open'"
                " ORDER BY created_at DESC, rowid DESC LIMIT ?",
                [env, limit],
            )
        )

    def conversations_by_ref(self, env: str, ref: str, limit: int = 2) -> list[dict[str, Any]]:
        """Conversations of ``env`` whose id starts with ``ref`` (letters and digits only)."""
        if not ref.isalnum() or not ref.isascii():
            return []
        return list(
            self.db.query(
                "SELECT * FROM conversations WHERE env = ? AND id >= ? AND id < ?"
                " ORDER BY id LIMIT ?",
                [env, ref.lower(), ref.lower() + "\x7f", limit],
            )
        )

    def failed_waiting(self, env: str) -> int:
        """Messages of ``env`` that failed and wait for a retry."""
        row = self._one(
            "SELECT COUNT(*) AS n FROM messages WHERE env = ? AND status = 'failed'", [env]
        )
        return row["n"]

    def last_send(self, env: str) -> float | None:
        """When the bridge last posted to Mattermost successfully."""
        row = self._one(
            "SELECT MAX(ts) AS ts FROM log WHERE env = ? AND direction = 'outbound'"
            " AND outcome = 'ok' AND action = 'post'",
            [env],
        )
        return row["ts"] if row else None

    def log_agent_call(
        self, *, env: str, action: str, outcome: str, detail: str, **fields: Any
    ) -> None:
        """One log row for a valid command or button call (the checklist's evidence)."""
        self.log(
            env=env,
            direction="inbound",
            action=action,
            outcome=outcome,
            http_status=200,
            error=detail,
            **fields,
        )

    def count_refused_agent_call(
        self, *, env: str, action: str, reason: str, http_status: int
    ) -> None:
        """A refused command or click, counted like the webhook's refusals (log_counted).

        :param reason: a fixed sentence, never the caller's data.
        """
        self.log_counted(
            env=env,
            direction="inbound",
            action=action,
            outcome="rejected",
            reason=reason,
            http_status=http_status,
        )
