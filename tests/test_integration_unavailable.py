"""A database locked by another process, under gunicorn: 503, nothing posted, then it works."""

from __future__ import annotations

import sqlite3

import pytest

from tests.conftest import configure_env

pytestmark = pytest.mark.integration


def test_locked_database_gives_503_posts_nothing_and_the_same_call_then_works(live, mm):
    key = configure_env(live, mm)
    support = mm.channels["support"]["id"]
    posts_before = len(mm.posts_in(support))
    body = {"visitor": {"name": "Lena"}, "text": "Is the sauna open?"}

    # Another process holds the write lock, as a backup or a sqlite3 shell would.
    holder = sqlite3.connect(live.instance / "bridge.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        refused = live.api("POST", "/api/v1/conversations", key, json=body)
    finally:
        holder.execute("ROLLBACK")
        holder.close()

    assert refused.status_code == 503, refused.text
    assert refused.json()["code"] == "unavailable"
    assert int(refused.headers["Retry-After"]) > 0
    assert len(mm.posts_in(support)) == posts_before

    accepted = live.api("POST", "/api/v1/conversations", key, json=body)
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["status"] == "sent"
    posts = mm.posts_in(support)
    assert len(posts) == posts_before + 1
    assert "Is the sauna open?" in posts[-1]["message"]
