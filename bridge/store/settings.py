"""Admin meta values and each environment's settings."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from .base import ENVIRONMENTS, NotFound, hash_api_key


class SettingsMixin:
    """Key/value meta and the two environments' settings (mixed into Store)."""

    def get_meta(self, key: str) -> str | None:
        row = self._one("SELECT value FROM meta WHERE key = ?", [key])
        return row["value"] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [key, value],
        )

    # -- admin sessions ----------------------------------------------------------

    def session_epoch(self) -> str:
        """Changes whenever every admin session must end (logout, a new password)."""
        return self.get_meta("session_epoch") or ""

    def end_admin_sessions(self) -> None:
        """Make every admin session cookie issued so far worthless."""
        self.set_meta("session_epoch", secrets.token_hex(16))

    def set_admin_password_hash(self, password_hash: str) -> None:
        """Save a new admin password hash; the sessions opened with the old one end."""
        with self.immediate():
            self.set_meta("admin_password_hash", password_hash)
            self.end_admin_sessions()

    # -- environments ----------------------------------------------------------

    def environment(self, name: str) -> dict[str, Any]:
        """One environment's settings, with ``notify_map`` decoded to a dict."""
        row = self._one("SELECT * FROM environments WHERE name = ?", [name])
        if row is None:
            raise NotFound(f"unknown environment {name!r}: use 'test' or 'production'")
        return _decode_environment(row)

    def environment_flags(self, name: str) -> dict[str, Any]:
        """What a button click needs of an environment (name, active, max_post_size):
        one narrow read while Mattermost waits, not every setting decoded."""
        row = self._one(
            "SELECT name, active, max_post_size FROM environments WHERE name = ?", [name]
        )
        if row is None:
            raise NotFound(f"unknown environment {name!r}: use 'test' or 'production'")
        row["active"] = bool(row["active"])
        return row

    def environments(self) -> list[dict[str, Any]]:
        return [self.environment(name) for name in ENVIRONMENTS]

    def update_environment(self, name: str, **fields: Any) -> dict[str, Any]:
        """Change some settings of an environment; the others keep their values."""
        self.environment(name)
        for column in ("notify_map", "channel_names", "notify_styles"):
            if column in fields:
                fields[column] = json.dumps(fields[column], sort_keys=True)
        fields["updated_at"] = time.time()
        self.db.table("environments").update(name, fields)
        return self.environment(name)

    def environment_for_api_key(self, key: str) -> dict[str, Any] | None:
        row = self._one(
            "SELECT * FROM environments WHERE api_key_hash = ? AND api_key_hash != ''",
            [hash_api_key(key)],
        )
        return _decode_environment(row) if row else None


def _decode_environment(row: dict[str, Any]) -> dict[str, Any]:
    row["notify_map"] = json.loads(row["notify_map"])
    row["channel_names"] = json.loads(row.get("channel_names") or "{}")
    # type -> {"color", "title"}: such a type is posted as a message attachment.
    row["notify_styles"] = json.loads(row.get("notify_styles") or "{}")
    row["active"] = bool(row["active"])
    row["accept_other_bots"] = bool(row.get("accept_other_bots"))
    row["bot_is_bot"] = bool(row["bot_is_bot"])
    return row
