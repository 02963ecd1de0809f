"""The connection, its per-thread pool, transactions and the shared helpers.

One open connection per database file, per thread, per process; every mixin
of :class:`~bridge.store.Store` reads and writes through ``self.db``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import secrets
import sqlite3
import threading
from collections.abc import Iterator
from typing import Any

from sqlite_utils import Database

from ..files import private_database
from .schema import MIGRATIONS, split_sql

ENVIRONMENTS = ("test", "production")
DIRECTIONS = ("outbound", "inbound", "callback")
OUTCOMES = ("ok", "error", "rejected", "ignored")
LOG_PAGE_SIZE = 50
MESSAGES_PAGE_SIZE = 100
CONVERSATIONS_PAGE_SIZE = 50
# A claim ('sending') older than this was left by a sender that died (a web
# worker killed mid-send, a power cut) and may be taken back. It must be
# longer than any live send holds a claim without recording progress: see
# bridge.sender.RECLAIM_AFTER_SECONDS, which is what the sender passes here.
STALE_SENDING_SECONDS = 120


class NotFound(LookupError):
    """A row the caller asked for by id does not exist."""


def hash_api_key(key: str) -> str:
    """Keys are stored hashed: a leaked database does not leak working keys."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_id() -> str:
    """A 26-character lowercase base32 id (130 random bits), like Mattermost's own ids."""
    return base64.b32encode(secrets.token_bytes(17)).decode().lower()[:26]


# How long a write waits for another process's lock (a backup, a shell)
# before the caller gets "database is locked" (answered 503 by the app).
BUSY_TIMEOUT = 5.0
# WAL pages after which the committing connection copies the WAL into the
# database itself (SQLite's default is 1000: a request in every ~60 webhook
# calls did it, with two fsyncs, while its caller waited). The worker
# checkpoints after every pass (Store.checkpoint), so this is the fallback
# for a bridge run without its worker: about 40 MB of WAL.
AUTOCHECKPOINT_PAGES = 10_000


def connect(path: str, busy_timeout: float = BUSY_TIMEOUT) -> sqlite3.Connection:
    """Open the database in autocommit mode, WAL journal, with a busy timeout.

    The file (created when missing) and its -wal/-shm are owner-only: they
    hold the tokens in plain text.
    """
    private_database(path)
    conn = sqlite3.connect(
        path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
    )
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute(f"PRAGMA wal_autocheckpoint={AUTOCHECKPOINT_PAGES}")
    return conn


# One open connection per database file, per thread, per process: reopening
# SQLite on every request cost a WAL checkpoint on close plus re-creating the
# -wal/-shm files on the next write, more than half of a request's own time.
# Like the requests Session, this is a pool, not shared state: rows live in SQLite.
_local = threading.local()


def shared_connection(path: str, busy_timeout: float = BUSY_TIMEOUT) -> sqlite3.Connection:
    """This thread's open connection to ``path`` (a forked worker opens its own)."""
    pool = getattr(_local, "pool", None)
    if pool is None or _local.pid != os.getpid():
        pool = _local.pool = {}
        _local.pid = os.getpid()
    conn = pool.get(path)
    if conn is None:
        conn = pool[path] = connect(path, busy_timeout)
    return conn


def close_shared_connection(path: str) -> None:
    """Close this thread's pooled connection to ``path`` (tests, before deleting it)."""
    conn = getattr(_local, "pool", {}).pop(path, None)
    if conn is not None:
        conn.close()


class StoreBase:
    """The connection and the transaction helpers every part of the store uses.

    :param path: the SQLite file; created when missing.
    :param shared: use this thread's pooled connection (requests, CLI) rather
        than a private one (tests, benchmarks, tools that close it).
    """

    def __init__(self, path: str, *, shared: bool = False, busy_timeout: float = BUSY_TIMEOUT):
        self.path = path
        self.shared = shared
        conn = shared_connection(path, busy_timeout) if shared else connect(path, busy_timeout)
        # No plugins, no per-open PRAGMA: this runs on every request.
        self.db = Database(conn, execute_plugins=False, recursive_triggers=False)

    def close(self) -> None:
        """Done with the store: a pooled connection stays open, never mid-transaction."""
        if self.shared:
            self.rollback()
        else:
            self.db.conn.close()

    def rollback(self) -> None:
        """Drop a transaction a failed step left open (nothing when there is none)."""
        if self.db.conn.in_transaction:
            self.db.conn.rollback()

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

    def checkpoint(self) -> int:
        """Copy what the WAL holds into the database, without waiting for anyone.

        PASSIVE: it copies what no reader still needs and never blocks a
        request. The worker calls this after every pass, so requests do not
        (see AUTOCHECKPOINT_PAGES).

        :returns: the pages copied.
        """
        _, _, copied = self.db.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return max(copied, 0)

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
                for statement in split_sql(script):
                    self.db.execute(statement)
                version += 1
                self.db.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    [str(version)],
                )
        return version

    def _one(self, sql: str, params: list[Any] | None = None) -> dict[str, Any] | None:
        """The first row as a dict, or None. Reads every row so the statement
        completes (an unfinished INSERT ... RETURNING would keep its lock)."""
        cursor = self.db.execute(sql, params or [])
        rows = cursor.fetchall()
        if not rows:
            return None
        return dict(zip([column[0] for column in cursor.description], rows[0], strict=True))
