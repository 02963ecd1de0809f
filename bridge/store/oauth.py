"""Admin sign-in: the Mattermost sign-in settings (in ``meta``) and the log of admin actions."""

from __future__ import annotations

import json
import time
from typing import Any

_KEYS = ("server_url", "client_id", "client_secret", "team")
ADMIN_LOG_PAGE_SIZE = 100


class OAuthMixin:
    """Sign in with Mattermost: its settings and the last successful sign-in (mixed into Store)."""

    def oauth_settings(self) -> dict[str, Any]:
        values: dict[str, Any] = {key: self.get_meta(f"oauth_{key}") or "" for key in _KEYS}
        values["password_disabled"] = self.get_meta("oauth_password_disabled") == "1"
        return values

    def save_oauth_settings(self, **fields: Any) -> dict[str, Any]:
        """Change some settings; the others keep their values."""
        with self.immediate():
            for key in _KEYS:
                if key in fields:
                    self.set_meta(f"oauth_{key}", str(fields[key]))
            if "password_disabled" in fields:
                self.set_meta("oauth_password_disabled", "1" if fields["password_disabled"] else "")
        return self.oauth_settings()

    def record_oauth_sign_in(self, username: str, server_url: str, client_id: str) -> None:
        """A Mattermost sign-in succeeded: with these settings, the password login may go."""
        record = {"username": username, "at": time.time(), "server_url": server_url}
        self.set_meta("oauth_last_sign_in", json.dumps({**record, "client_id": client_id}))

    def last_oauth_sign_in(self) -> dict[str, Any] | None:
        value = self.get_meta("oauth_last_sign_in")
        return json.loads(value) if value else None

    # -- the log of admin actions ------------------------------------------------

    def log_admin_action(self, actor: str, action: str, detail: str = "") -> None:
        self.db.execute(
            "INSERT INTO admin_log (ts, actor, action, detail) VALUES (?, ?, ?, ?)",
            [time.time(), actor[:100], action[:100], detail[:500]],
        )

    def admin_actions(self, limit: int = ADMIN_LOG_PAGE_SIZE) -> list[dict[str, Any]]:
        """The newest admin actions first."""
        cursor = self.db.execute(
            "SELECT ts, actor, action, detail FROM admin_log ORDER BY id DESC LIMIT ?", [limit]
        )
        columns = [column[0] for column in cursor.description]
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
