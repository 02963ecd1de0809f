"""Every row of every table of a bridge database, to prove a request changed nothing."""

from __future__ import annotations

import contextlib
import sqlite3


def dump_tables(path: str, *, skip: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """Each table's rows as sorted reprs; ``skip`` names tables left out (the log)."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
            if name not in skip
        ]
        return {
            table: sorted(map(repr, conn.execute(f'SELECT * FROM "{table}"'))) for table in tables
        }
