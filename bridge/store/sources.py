"""Sources: other systems' webhooks, their last payload, and payloads kept for a re-send."""

from __future__ import annotations

import time
from typing import Any

from .base import STALE_SENDING_SECONDS, NotFound

# Rejected calls are counted on the source's row; a log row is written only
# when the previous rejection is older than this, so a flood cannot fill the disk.
REJECTION_LOG_WINDOW = 600.0
SOURCE_FIELDS = ("notification_type", "template", "secret", "hmac_header")
# The log's actions for sources' calls and re-sends (direction 'inbound', like Mattermost's).
SOURCE_ACTIONS = ("source", "source_resend")


class SourcesMixin:
    """Sources and their kept payloads (mixed into Store)."""

    def add_source(
        self,
        env: str,
        name: str,
        *,
        notification_type: str,
        template: str,
        secret: str,
        hmac_header: str = "",
    ) -> dict[str, Any]:
        """A new source; raises ``ValueError`` when the name is taken."""
        self.environment(env)
        now = time.time()
        row = self._one(
            "INSERT INTO sources (env, name, notification_type, template, secret, hmac_header,"
            " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(env, name) DO NOTHING RETURNING *",
            [env, name, notification_type, template, secret, hmac_header, now, now],
        )
        if row is None:
            raise ValueError(f"the {env} environment already has a source named {name!r}")
        return row

    def source(self, env: str, name: str) -> dict[str, Any]:
        row = self._one("SELECT * FROM sources WHERE env = ? AND name = ?", [env, name])
        if row is None:
            raise NotFound(f"no source {name!r} in the {env} environment")
        return row

    def sources(self, env: str) -> list[dict[str, Any]]:
        """The environment's sources by name, each with how many payloads wait for a re-send."""
        return list(
            self.db.query(
                "SELECT s.*, (SELECT COUNT(*) FROM source_payloads p WHERE p.env = s.env"
                " AND p.source = s.name AND p.status = 'kept') AS kept"
                " FROM sources s WHERE s.env = ? ORDER BY s.name",
                [env],
            )
        )

    def update_source(self, env: str, name: str, **fields: Any) -> dict[str, Any]:
        """Change the type, template, secret or signature header; the rest stays."""
        unknown = set(fields) - set(SOURCE_FIELDS)
        if unknown:
            raise ValueError(f"not a source setting: {', '.join(sorted(unknown))}")
        self.source(env, name)
        assignments = ", ".join(f"{column} = ?" for column in fields)
        return self._one(
            f"UPDATE sources SET {assignments}, updated_at = ? WHERE env = ? AND name = ?"
            " RETURNING *",
            [*fields.values(), time.time(), env, name],
        )

    def remove_source(self, env: str, name: str) -> None:
        """Delete a source and the payloads it kept."""
        with self.immediate():
            self.source(env, name)
            self.db.execute("DELETE FROM source_payloads WHERE env = ? AND source = ?", [env, name])
            self.db.execute("DELETE FROM sources WHERE env = ? AND name = ?", [env, name])

    def count_sources(self, env: str) -> int:
        return self._one("SELECT COUNT(*) AS n FROM sources WHERE env = ?", [env])["n"]

    # -- calls ------------------------------------------------------------------

    def count_source_rejection(self, env: str, name: str, reason: str) -> bool:
        """Count a call with a bad secret; True when it should also get a log row.

        One UPDATE of the source's own row: however many calls are refused,
        nothing grows but a counter.
        """
        now = time.time()
        with self.immediate():
            before = self._one(
                "SELECT last_rejected_at FROM sources WHERE env = ? AND name = ?", [env, name]
            )
            if before is None:
                return False
            self.db.execute(
                "UPDATE sources SET rejected = rejected + 1, last_rejection = ?,"
                " last_rejected_at = ? WHERE env = ? AND name = ?",
                [reason[:200], now, env, name],
            )
        previous = before["last_rejected_at"]
        return previous is None or previous < now - REJECTION_LOG_WINDOW

    def record_source_payload(self, env: str, name: str, payload: str) -> None:
        """Remember the last accepted payload (for the admin's preview) and count it."""
        self.db.execute(
            "UPDATE sources SET last_payload = ?, last_received_at = ?, received = received + 1"
            " WHERE env = ? AND name = ?",
            [payload, time.time(), env, name],
        )

    # -- payloads kept after a template error -----------------------------------------

    def keep_source_payload(self, env: str, name: str, payload: str, error: str) -> int:
        """Keep a payload whose template failed; returns its id."""
        now = time.time()
        cursor = self.db.execute(
            "INSERT INTO source_payloads (env, source, payload, error, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [env, name, payload, error[:2000], now, now],
        )
        return cursor.lastrowid

    def count_kept_payloads(self, env: str, name: str) -> int:
        row = self._one(
            "SELECT COUNT(*) AS n FROM source_payloads WHERE env = ? AND source = ?"
            " AND status = 'kept'",
            [env, name],
        )
        return row["n"]

    def kept_payloads(self, env: str, name: str, limit: int = 50) -> list[dict[str, Any]]:
        """Payloads waiting for a re-send, oldest first."""
        return list(
            self.db.query(
                "SELECT * FROM source_payloads WHERE env = ? AND source = ? AND status = 'kept'"
                " ORDER BY id LIMIT ?",
                [env, name, limit],
            )
        )

    def kept_payload(self, payload_id: int) -> dict[str, Any]:
        row = self._one("SELECT * FROM source_payloads WHERE id = ?", [payload_id])
        if row is None:
            raise NotFound(f"no kept payload {payload_id}")
        return row

    def claim_kept_payload(self, payload_id: int) -> bool:
        """Take a kept payload for a re-send; False when it is gone or taken already.

        The conditional UPDATE is atomic: of two re-sends (a double click, the
        CLI beside the screen) only one gets it, so it is posted once. One left
        'resending' by a killed process can be taken again after a while.
        """
        now = time.time()
        cursor = self.db.execute(
            "UPDATE source_payloads SET status = 'resending', updated_at = ?"
            " WHERE id = ? AND (status = 'kept' OR (status = 'resending' AND updated_at < ?))",
            [now, payload_id, now - STALE_SENDING_SECONDS],
        )
        return cursor.rowcount == 1

    def finish_kept_payload(
        self, payload_id: int, status: str, *, message_id: int | None = None, error: str = ""
    ) -> None:
        """``resent`` (handed to the sender as ``message_id``), ``ignored``, or ``kept`` again.

        :param error: why it is kept again (the template still fails).
        """
        self.db.execute(
            "UPDATE source_payloads SET status = ?, message_id = COALESCE(?, message_id),"
            " error = CASE WHEN ? != '' THEN ? ELSE error END, updated_at = ? WHERE id = ?",
            [status, message_id, error, error[:2000], time.time(), payload_id],
        )
