"""Files attached to messages: a visitor's kept until uploaded, an agent's as Mattermost ids.

A visitor's (or host's) file is stored with its bytes before anything is
sent, like the message's text, so a Mattermost failure during the upload
loses nothing: the retry uploads it again. Once the post carries it, the
bytes are dropped; Mattermost has the file. An agent's file is only its
Mattermost id, name, size and type; the bridge serves it from Mattermost.
"""

from __future__ import annotations

import time
from typing import Any

FILE_COLUMNS = "id, message_id, conversation_id, env, file_id, name, size, mime_type, created_at"


class FilesMixin:
    def add_message_file(
        self,
        *,
        message_id: int,
        conversation_id: str,
        env: str,
        name: str,
        size: int,
        mime_type: str,
        content: bytes | None = None,
        file_id: str = "",
    ) -> dict[str, Any]:
        """One file of a message (call it in the message's own transaction)."""
        return self._one(
            "INSERT INTO message_files (message_id, conversation_id, env, file_id, name, size,"
            f" mime_type, content, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            f" RETURNING {FILE_COLUMNS}",
            [
                message_id,
                conversation_id,
                env,
                file_id,
                name,
                size,
                mime_type,
                content,
                time.time(),
            ],
        )

    def files_of_messages(self, message_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
        """The files of each message (without their bytes), in the order attached."""
        found: dict[int, list[dict[str, Any]]] = {}
        if not message_ids:
            return found
        marks = ", ".join("?" * len(message_ids))
        for row in self.db.query(
            f"SELECT {FILE_COLUMNS} FROM message_files WHERE message_id IN ({marks}) ORDER BY id",
            list(message_ids),
        ):
            found.setdefault(row["message_id"], []).append(row)
        return found

    def files_to_upload(self, message_id: int) -> list[dict[str, Any]]:
        """The message's files with their bytes (content None once the post has them)."""
        return list(
            self.db.query(
                f"SELECT {FILE_COLUMNS}, content FROM message_files WHERE message_id = ?"
                " ORDER BY id",
                [message_id],
            )
        )

    def record_file_uploaded(self, row_id: int, file_id: str) -> None:
        self.db.execute("UPDATE message_files SET file_id = ? WHERE id = ?", [file_id, row_id])

    def drop_file_contents(self, message_id: int) -> None:
        """The post carries the files now: Mattermost keeps them, the bridge need not."""
        self.db.execute(
            "UPDATE message_files SET content = NULL WHERE message_id = ? AND file_id != ''",
            [message_id],
        )

    def conversation_file(self, conversation_id: str, file_id: str) -> dict[str, Any] | None:
        """A file of this conversation by its Mattermost id; None for any other."""
        if not file_id:
            return None
        return self._one(
            f"SELECT {FILE_COLUMNS} FROM message_files WHERE conversation_id = ? AND file_id = ?",
            [conversation_id, file_id],
        )

    def with_files(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The same messages, each with its ``files`` (one query for all)."""
        files = self.files_of_messages([message["id"] for message in messages])
        for message in messages:
            message["files"] = files.get(message["id"], [])
        return messages
