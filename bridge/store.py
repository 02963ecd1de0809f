"""The bridge's SQLite database: schema, migrations and every query.

All SQL of the project lives here. Callers get plain dicts back and never see
a cursor. One :class:`Store` is opened per request (or per CLI command) and
closed afterwards; gunicorn workers each open their own connections.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from typing import Any

from sqlite_utils import Database

ENVIRONMENTS = ("test", "production")
DIRECTIONS = ("outbound", "inbound", "callback")
OUTCOMES = ("ok", "error", "rejected", "ignored")
LOG_PAGE_SIZE = 50
MESSAGES_PAGE_SIZE = 100
CONVERSATIONS_PAGE_SIZE = 50
# A message stuck in 'sending' longer than this was abandoned by a dead worker.
STALE_SENDING_SECONDS = 300

# Each entry migrates the schema from version i to i + 1. Append, never edit.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE environments (
        name TEXT PRIMARY KEY,
        server_url TEXT NOT NULL DEFAULT '',
        bot_token TEXT NOT NULL DEFAULT '',
        bot_user_id TEXT NOT NULL DEFAULT '',
        bot_username TEXT NOT NULL DEFAULT '',
        bot_is_bot INTEGER NOT NULL DEFAULT 0,
        server_version TEXT NOT NULL DEFAULT '',
        verified_at REAL,
        webhook_token TEXT NOT NULL DEFAULT '',
        mirror_channel_id TEXT NOT NULL DEFAULT '',
        mirror_channel_name TEXT NOT NULL DEFAULT '',
        notify_map TEXT NOT NULL DEFAULT '{}',
        callback_url TEXT NOT NULL DEFAULT '',
        callback_secret TEXT NOT NULL DEFAULT '',
        api_key_hash TEXT NOT NULL DEFAULT '',
        active INTEGER NOT NULL DEFAULT 0,
        updated_at REAL
    );
    INSERT INTO environments (name) VALUES ('test'), ('production');
    CREATE TABLE conversations (
        id TEXT PRIMARY KEY,
        env TEXT NOT NULL REFERENCES environments(name),
        visitor_name TEXT NOT NULL,
        visitor_email TEXT NOT NULL DEFAULT '',
        external_id TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL DEFAULT 'open',
        root_post_id TEXT NOT NULL DEFAULT '',
        channel_id TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        closed_at REAL
    );
    CREATE INDEX conversations_env_created ON conversations(env, created_at);
    CREATE UNIQUE INDEX conversations_root_post ON conversations(env, root_post_id)
        WHERE root_post_id != '';
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        env TEXT NOT NULL REFERENCES environments(name),
        conversation_id TEXT REFERENCES conversations(id),
        direction TEXT NOT NULL,
        notification_type TEXT NOT NULL DEFAULT '',
        author TEXT NOT NULL DEFAULT '',
        text TEXT NOT NULL,
        status TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        channel_id TEXT NOT NULL DEFAULT '',
        post_id TEXT NOT NULL DEFAULT '',
        chunk_post_ids TEXT NOT NULL DEFAULT '[]',
        pending_key TEXT NOT NULL,
        error TEXT NOT NULL DEFAULT '',
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX messages_conversation ON messages(conversation_id, id);
    CREATE INDEX messages_status ON messages(status, env, id);
    CREATE TABLE log (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ts REAL NOT NULL,
        env TEXT NOT NULL DEFAULT '',
        direction TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL DEFAULT '',
        outcome TEXT NOT NULL,
        http_status INTEGER,
        duration_ms REAL,
        error TEXT NOT NULL DEFAULT '',
        conversation_id TEXT NOT NULL DEFAULT '',
        message_id INTEGER,
        post_id TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX log_env ON log(env, id);
    CREATE INDEX log_direction ON log(direction, id);
    CREATE INDEX log_outcome ON log(outcome, id);
    CREATE INDEX log_env_direction_outcome ON log(env, direction, outcome, id);
    CREATE INDEX log_ts ON log(ts);
    """,
    # 2: inbound replies, their delivery to the host, user names, chat rate limit.
    """
    ALTER TABLE messages ADD COLUMN delivery_status TEXT NOT NULL DEFAULT '';
    ALTER TABLE messages ADD COLUMN delivery_attempts INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE messages ADD COLUMN next_delivery_at REAL;
    CREATE UNIQUE INDEX messages_inbound_post ON messages(env, post_id)
        WHERE direction IN ('agent', 'note', 'event');
    CREATE INDEX messages_delivery ON messages(delivery_status, next_delivery_at);
    CREATE TABLE mm_users (
        env TEXT NOT NULL,
        user_id TEXT NOT NULL,
        display_name TEXT NOT NULL,
        is_bot INTEGER NOT NULL DEFAULT 0,
        fetched_at REAL NOT NULL,
        PRIMARY KEY (env, user_id)
    );
    ALTER TABLE environments ADD COLUMN accept_other_bots INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE rate_limits (
        bucket TEXT PRIMARY KEY,
        window_start REAL NOT NULL,
        hits INTEGER NOT NULL
    );
    """,
    # 3: the readiness checklist: admins' ticks and the results of live checks.
    """
    CREATE TABLE checklist_ticks (
        env TEXT NOT NULL,
        item TEXT NOT NULL,
        ticked INTEGER NOT NULL,
        ticked_by TEXT NOT NULL,
        ticked_at REAL NOT NULL,
        PRIMARY KEY (env, item)
    );
    CREATE TABLE checks (
        env TEXT NOT NULL,
        item TEXT NOT NULL,
        state TEXT NOT NULL,
        detail TEXT NOT NULL,
        subject TEXT NOT NULL DEFAULT '',
        checked_at REAL NOT NULL,
        PRIMARY KEY (env, item)
    );
    """,
    # 4: the log page's "this conversation" filter.
    """
    CREATE INDEX log_conversation ON log(conversation_id, id);
    """,
    # 5: agent replies whose post lookup failed, kept for `flask retry`.
    """
    CREATE TABLE inbound_queue (
        env TEXT NOT NULL,
        post_id TEXT NOT NULL,
        payload TEXT NOT NULL,
        error TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 1,
        created_at REAL NOT NULL,
        next_at REAL NOT NULL,
        PRIMARY KEY (env, post_id)
    );
    """,
    # 6: names of the channels in use, so errors name them rather than show ids.
    """
    ALTER TABLE environments ADD COLUMN channel_names TEXT NOT NULL DEFAULT '{}';
    """,
    # 7: where a conversation began; the chat page shows only its own.
    """
    ALTER TABLE conversations ADD COLUMN source TEXT NOT NULL DEFAULT 'api';
    """,
    # 8: the server's MaxPostSize, learned when the token is verified.
    """
    ALTER TABLE environments ADD COLUMN max_post_size INTEGER NOT NULL DEFAULT 16383;
    """,
]


MESSAGE_INSERT_COLUMNS = frozenset(
    {
        "env",
        "conversation_id",
        "direction",
        "notification_type",
        "author",
        "text",
        "status",
        "channel_id",
        "pending_key",
        "created_at",
        "updated_at",
        "attempts",
    }
)


class NotFound(LookupError):
    """A row the caller asked for by id does not exist."""


def hash_api_key(key: str) -> str:
    """Keys are stored hashed: a leaked database does not leak working keys."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_id() -> str:
    """A 26-character lowercase base32 id (130 random bits), like Mattermost's own ids."""
    return base64.b32encode(secrets.token_bytes(17)).decode().lower()[:26]


def connect(path: str) -> sqlite3.Connection:
    """Open the database in autocommit mode, WAL journal, 5 s busy timeout."""
    conn = sqlite3.connect(path, timeout=5.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA busy_timeout=5000")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


# One open connection per database file, per thread, per process: reopening
# SQLite on every request cost a WAL checkpoint on close plus re-creating the
# -wal/-shm files on the next write, more than half of a request's own time.
# Like the requests Session, this is a pool, not shared state: rows live in SQLite.
_local = threading.local()


def shared_connection(path: str) -> sqlite3.Connection:
    """This thread's open connection to ``path`` (a forked worker opens its own)."""
    pool = getattr(_local, "pool", None)
    if pool is None or _local.pid != os.getpid():
        pool = _local.pool = {}
        _local.pid = os.getpid()
    conn = pool.get(path)
    if conn is None:
        conn = pool[path] = connect(path)
    return conn


def close_shared_connection(path: str) -> None:
    """Close this thread's pooled connection to ``path`` (tests, before deleting it)."""
    conn = getattr(_local, "pool", {}).pop(path, None)
    if conn is not None:
        conn.close()


class Store:
    """Every read and write the bridge makes.

    :param path: the SQLite file; created when missing.
    :param shared: use this thread's pooled connection (requests, CLI) rather
        than a private one (tests, benchmarks, tools that close it).
    """

    def __init__(self, path: str, *, shared: bool = False):
        self.path = path
        self.shared = shared
        conn = shared_connection(path) if shared else connect(path)
        # No plugins, no per-open PRAGMA: this runs on every request.
        self.db = Database(conn, execute_plugins=False, recursive_triggers=False)

    def close(self) -> None:
        """Done with the store: a pooled connection stays open, never mid-transaction."""
        if self.shared:
            if self.db.conn.in_transaction:
                self.db.conn.rollback()
        else:
            self.db.conn.close()

    # -- transactions and schema ---------------------------------------------

    @contextlib.contextmanager
    def immediate(self) -> Iterator[None]:
        """A transaction that reads then writes: take the write lock up front.

        A DEFERRED transaction that upgrades to a writer fails at once with
        "database is locked" under contention; IMMEDIATE waits its turn.
        """
        conn = self.db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def schema_version(self) -> int:
        if "meta" not in self.db.table_names():
            return 0
        row = self._one("SELECT value FROM meta WHERE key = 'schema_version'")
        return int(row["value"]) if row else 0

    def migrate(self) -> int:
        """Bring the schema to the newest version; safe to run again.

        :returns: the schema version now in force.
        """
        with self.immediate():
            version = self.schema_version()
            for script in MIGRATIONS[version:]:
                for statement in _split_sql(script):
                    self.db.execute(statement)
                version += 1
                self.db.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    [str(version)],
                )
        return version

    # -- meta ------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self._one("SELECT value FROM meta WHERE key = ?", [key])
        return row["value"] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [key, value],
        )

    # -- environments ----------------------------------------------------------

    def environment(self, name: str) -> dict[str, Any]:
        """One environment's settings, with ``notify_map`` decoded to a dict."""
        row = self._one("SELECT * FROM environments WHERE name = ?", [name])
        if row is None:
            raise NotFound(f"unknown environment {name!r}: use 'test' or 'production'")
        return _decode_environment(row)

    def environments(self) -> list[dict[str, Any]]:
        return [self.environment(name) for name in ENVIRONMENTS]

    def update_environment(self, name: str, **fields: Any) -> dict[str, Any]:
        """Change some settings of an environment; the others keep their values."""
        self.environment(name)
        for column in ("notify_map", "channel_names"):
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

    # -- conversations ---------------------------------------------------------

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

    # -- messages --------------------------------------------------------------

    def add_visitor_message(self, env: str, conversation_id: str, author: str, text: str) -> dict:
        return self._insert_message(
            env=env, conversation_id=conversation_id, direction="visitor", author=author, text=text
        )

    def add_notification(
        self, env: str, notification_type: str, text: str, channel_id: str
    ) -> dict:
        return self._insert_message(
            env=env,
            conversation_id=None,
            direction="notification",
            author=notification_type,
            text=text,
            notification_type=notification_type,
            channel_id=channel_id,
        )

    def _insert_message(self, *, now: float | None = None, **fields: Any) -> dict[str, Any]:
        now = now or time.time()
        row = {
            # Stored already claimed by the request that sends it right away.
            "status": "sending",
            "attempts": 1,
            # Sent as Mattermost's pending_post_id: a repeat within 30 s is dropped.
            "pending_key": new_id(),
            "created_at": now,
            "updated_at": now,
            **fields,
        }
        columns = [column for column in row if column in MESSAGE_INSERT_COLUMNS]
        return _decode_message(
            self._one(
                f"INSERT INTO messages ({', '.join(columns)})"
                f" VALUES ({', '.join('?' for _ in columns)}) RETURNING *",
                [row[column] for column in columns],
            )
        )

    def message(self, message_id: int) -> dict[str, Any]:
        row = self._one("SELECT * FROM messages WHERE id = ?", [message_id])
        if row is None:
            raise NotFound(f"no message with id {message_id!r}")
        return _decode_message(row)

    def messages_after(
        self,
        conversation_id: str,
        after_id: int = 0,
        limit: int = MESSAGES_PAGE_SIZE,
        *,
        visitor_view: bool = False,
    ) -> list[dict[str, Any]]:
        """One page of a conversation's messages, oldest first, keyset by id.

        :param visitor_view: only what the visitor may see (no internal notes).
        """
        only = " AND direction IN ('visitor', 'agent')" if visitor_view else ""
        return list(
            self.db.query(
                "SELECT id, direction, author, text, created_at, status, error, post_id,"
                " delivery_status FROM messages"
                f" WHERE conversation_id = ? AND id > ?{only} ORDER BY id LIMIT ?",
                [conversation_id, after_id, limit],
            )
        )

    def first_message(self, conversation_id: str) -> dict[str, Any]:
        row = self._one(
            "SELECT id FROM messages WHERE conversation_id = ? ORDER BY id LIMIT 1",
            [conversation_id],
        )
        if row is None:
            raise NotFound(f"conversation {conversation_id!r} has no message")
        return self.message(row["id"])

    def claim_message(self, message_id: int) -> bool:
        """Mark a message as being sent; False when another worker already is.

        The conditional UPDATE is atomic, so of two workers retrying the same
        message only one posts it. A 'skipped' message can be claimed too: a
        conversation begun while its environment was inactive gets its root
        post when the next message comes after activation.
        """
        now = time.time()
        cursor = self.db.execute(
            "UPDATE messages SET status = 'sending', attempts = attempts + 1, updated_at = ?"
            " WHERE id = ? AND (status IN ('pending', 'failed', 'skipped')"
            " OR (status = 'sending' AND updated_at < ?))",
            [now, message_id, now - STALE_SENDING_SECONDS],
        )
        return cursor.rowcount == 1

    def record_chunk_posted(self, message_id: int, post_ids: list[str]) -> None:
        """Remember which parts of a split message are already posted."""
        self.db.execute(
            "UPDATE messages SET chunk_post_ids = ?, post_id = ?, updated_at = ? WHERE id = ?",
            [json.dumps(post_ids), post_ids[0] if post_ids else "", time.time(), message_id],
        )

    def finish_message(
        self,
        message_id: int,
        status: str,
        *,
        channel_id: str | None = None,
        error: str = "",
        reason: str = "",
        post_ids: list[str] | None = None,
    ) -> dict[str, Any]:
        """Record the outcome of a send (and the ids of the posts it made)."""
        row = self._one(
            "UPDATE messages SET status = ?, error = ?, reason = ?, updated_at = ?,"
            " channel_id = COALESCE(?, channel_id), chunk_post_ids = COALESCE(?, chunk_post_ids),"
            " post_id = COALESCE(?, post_id) WHERE id = ? RETURNING *",
            [
                status,
                error,
                reason,
                time.time(),
                channel_id,
                json.dumps(post_ids) if post_ids else None,
                post_ids[0] if post_ids else None,
                message_id,
            ],
        )
        if row is None:
            raise NotFound(f"no message with id {message_id!r}")
        return _decode_message(row)

    def failed_message_ids(self, env: str | None = None) -> list[int]:
        """Messages to retry, oldest first so a thread's root goes before its replies."""
        sql = (
            "SELECT id FROM messages WHERE (status = 'failed'"
            " OR (status = 'sending' AND updated_at < ?))"
        )
        params: list[Any] = [time.time() - STALE_SENDING_SECONDS]
        if env:
            sql += " AND env = ?"
            params.append(env)
        return [row["id"] for row in self.db.query(sql + " ORDER BY id", params)]

    def count_failed(self, env: str) -> int:
        row = self._one(
            "SELECT COUNT(*) AS n FROM messages WHERE env = ? AND status = 'failed'", [env]
        )
        return row["n"]

    # -- inbound replies ---------------------------------------------------------

    def inbound_post_seen(self, env: str, post_id: str) -> bool:
        return (
            self._one(
                "SELECT 1 AS seen FROM messages WHERE env = ? AND post_id = ?"
                " AND direction IN ('agent', 'note', 'event')",
                [env, post_id],
            )
            is not None
        )

    def add_inbound_message(
        self,
        *,
        env: str,
        conversation_id: str,
        direction: str,
        author: str,
        text: str,
        post_id: str,
        delivery_status: str = "",
    ) -> dict[str, Any] | None:
        """Store an agent reply, note or thread event once per Mattermost post.

        :returns: the new message, or None when this post was already stored
            (a repeated delivery, maybe racing in another worker).
        """
        now = time.time()
        row = self._one(
            "INSERT OR IGNORE INTO messages (env, conversation_id, direction, author, text,"
            " status, channel_id, post_id, pending_key, created_at, updated_at,"
            " delivery_status, next_delivery_at)"
            " VALUES (?, ?, ?, ?, ?, 'sent', '', ?, ?, ?, ?, ?, ?) RETURNING *",
            [
                env,
                conversation_id,
                direction,
                author,
                text,
                post_id,
                new_id(),
                now,
                now,
                delivery_status,
                now if delivery_status else None,
            ],
        )
        return _decode_message(row) if row else None

    def cached_user(self, env: str, user_id: str, max_age: float) -> dict[str, Any] | None:
        return self._one(
            "SELECT * FROM mm_users WHERE env = ? AND user_id = ? AND fetched_at > ?",
            [env, user_id, time.time() - max_age],
        )

    def cache_user(self, env: str, user_id: str, display_name: str, is_bot: bool) -> None:
        self.db.execute(
            "INSERT INTO mm_users (env, user_id, display_name, is_bot, fetched_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT(env, user_id) DO UPDATE SET"
            " display_name = excluded.display_name, is_bot = excluded.is_bot,"
            " fetched_at = excluded.fetched_at",
            [env, user_id, display_name, int(is_bot), time.time()],
        )

    def queue_inbound(
        self, env: str, post_id: str, payload: dict, error: str, delay: float
    ) -> None:
        """Keep a webhook call whose post could not be looked up, to try again."""
        now = time.time()
        self.db.execute(
            "INSERT INTO inbound_queue (env, post_id, payload, error, created_at, next_at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(env, post_id) DO UPDATE SET"
            " error = excluded.error, attempts = attempts + 1, next_at = excluded.next_at",
            [env, post_id, json.dumps(payload), error, now, now + delay],
        )

    def due_inbound(self, env: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM inbound_queue WHERE next_at <= ?"
        params: list[Any] = [time.time()]
        if env:
            sql += " AND env = ?"
            params.append(env)
        rows = list(self.db.query(sql + " ORDER BY created_at", params))
        for row in rows:
            row["payload"] = json.loads(row["payload"])
        return rows

    def inbound_attempts(self, env: str, post_id: str) -> int:
        """How often a kept call has failed so far (0 when it is not kept)."""
        row = self._one(
            "SELECT attempts FROM inbound_queue WHERE env = ? AND post_id = ?", [env, post_id]
        )
        return row["attempts"] if row else 0

    def dequeue_inbound(self, env: str, post_id: str) -> None:
        self.db.execute("DELETE FROM inbound_queue WHERE env = ? AND post_id = ?", [env, post_id])

    def count_queued_inbound(self, env: str) -> int:
        row = self._one("SELECT COUNT(*) AS n FROM inbound_queue WHERE env = ?", [env])
        return row["n"]

    # -- reply callbacks to the host ---------------------------------------------

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

    # -- checklist -------------------------------------------------------------------

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
        """The newest webhook call whose token matched (accepted or ignored)."""
        return self._one(
            "SELECT * FROM log WHERE env = ? AND direction = 'inbound'"
            " AND outcome IN ('ok', 'ignored') ORDER BY id DESC LIMIT 1",
            [env],
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

    # -- rate limits ---------------------------------------------------------------

    def hit_rate_limit(self, bucket: str, *, limit: int, window: float) -> bool:
        """Count one hit in a fixed window; True when the bucket is over its limit."""
        now = time.time()
        with self.immediate():
            row = self._one("SELECT * FROM rate_limits WHERE bucket = ?", [bucket])
            if row is None or row["window_start"] <= now - window:
                self.db.execute(
                    "INSERT INTO rate_limits (bucket, window_start, hits) VALUES (?, ?, 1)"
                    " ON CONFLICT(bucket) DO UPDATE SET window_start = ?, hits = 1",
                    [bucket, now, now],
                )
                return False
            self.db.execute("UPDATE rate_limits SET hits = hits + 1 WHERE bucket = ?", [bucket])
            return row["hits"] + 1 > limit

    # -- integration log -------------------------------------------------------

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
        self, env: str, direction: str, outcome: str = "ok", action: str | tuple[str, ...] = ""
    ) -> dict | None:
        """The newest log row of this kind; ``action`` may name several."""
        sql = "SELECT * FROM log WHERE env = ? AND direction = ? AND outcome = ?"
        params: list[Any] = [env, direction, outcome]
        actions = (action,) if isinstance(action, str) and action else tuple(action)
        if actions:
            sql += f" AND action IN ({', '.join('?' for _ in actions)})"
            params.extend(actions)
        return self._one(sql + " ORDER BY id DESC LIMIT 1", params)

    def prune_log(self, days: float) -> int:
        """Delete log rows older than ``days``; returns how many went.

        Also drops what only matters for a short while: finished rate-limit
        windows and cached user names older than a day.
        """
        now = time.time()
        with self.immediate():
            cursor = self.db.execute("DELETE FROM log WHERE ts < ?", [now - days * 86400])
            self.db.execute("DELETE FROM rate_limits WHERE window_start < ?", [now - 86400])
            self.db.execute("DELETE FROM mm_users WHERE fetched_at < ?", [now - 86400])
        return cursor.rowcount

    # -- helpers ---------------------------------------------------------------

    def _one(self, sql: str, params: list[Any] | None = None) -> dict[str, Any] | None:
        """The first row as a dict, or None. Reads every row so the statement
        completes (an unfinished INSERT ... RETURNING would keep its lock)."""
        cursor = self.db.execute(sql, params or [])
        rows = cursor.fetchall()
        if not rows:
            return None
        return dict(zip([column[0] for column in cursor.description], rows[0], strict=True))


def _decode_message(row: dict[str, Any]) -> dict[str, Any]:
    row["chunk_post_ids"] = json.loads(row["chunk_post_ids"])
    return row


def _decode_environment(row: dict[str, Any]) -> dict[str, Any]:
    row["notify_map"] = json.loads(row["notify_map"])
    row["channel_names"] = json.loads(row.get("channel_names") or "{}")
    row["active"] = bool(row["active"])
    row["accept_other_bots"] = bool(row.get("accept_other_bots"))
    row["bot_is_bot"] = bool(row["bot_is_bot"])
    return row


def _split_sql(script: str) -> list[str]:
    """Statements of a migration script; the scripts hold no ';' inside literals."""
    return [part.strip() for part in script.split(";") if part.strip()]
