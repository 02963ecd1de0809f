"""A locked or full database: 503 with Retry-After, a readable page, nothing written."""

from __future__ import annotations

import sqlite3

import pytest

from bridge import create_app
from bridge.store import Store, close_shared_connection

SERVER = "https://chat.example.com"
MIRROR = "mirrorchannelid0000000000a"
WEBHOOK_TOKEN = "webhooktoken00000000000000"


@pytest.fixture
def app(tmp_path):
    """The app with a short busy timeout, so a held lock answers at once."""
    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "test-secret-key",
            "DATABASE": str(tmp_path / "bridge.db"),
            "WTF_CSRF_ENABLED": False,
            "DATABASE_BUSY_TIMEOUT": 0.2,
        }
    )
    store = Store(app.config["DATABASE"])
    store.migrate()
    store.update_environment(
        "test",
        server_url=SERVER,
        bot_token="b0tt0ken5ecret0123456789ab",
        bot_user_id="botuserid00000000000000000",
        bot_username="bridgebot",
        mirror_channel_id=MIRROR,
        webhook_token=WEBHOOK_TOKEN,
        active=1,
    )
    store.close()
    yield app
    close_shared_connection(app.config["DATABASE"])


@pytest.fixture
def auth(app):
    result = app.test_cli_runner().invoke(args=["api-key", "test"])
    return {"Authorization": f"Bearer {result.output.strip().splitlines()[-1]}"}


@pytest.fixture
def lock(app):
    """Another process's write lock (a backup, a sqlite3 shell), released at the end."""
    holder = sqlite3.connect(app.config["DATABASE"], isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    yield holder
    if holder.in_transaction:
        holder.execute("ROLLBACK")
    holder.close()


def row_counts(app) -> dict[str, int]:
    conn = sqlite3.connect(app.config["DATABASE"])
    try:
        return {
            table: conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            for table in ("conversations", "messages", "log", "inbox")
        }
    finally:
        conn.close()


def start_conversation(client, auth):
    body = {"visitor": {"name": "Ann"}, "text": "Hello"}
    return client.post("/api/v1/conversations", json=body, headers=auth)


def test_api_answers_503_with_retry_after_while_locked_and_writes_nothing(
    app, auth, lock, requests_mock
):
    before = row_counts(app)
    response = start_conversation(app.test_client(), auth)
    assert response.status_code == 503
    assert response.json["code"] == "unavailable"
    assert "locked" in response.json["error"]
    assert int(response.headers["Retry-After"]) > 0
    lock.execute("ROLLBACK")
    assert row_counts(app) == before
    assert requests_mock.call_count == 0  # nothing was posted


def test_the_same_api_call_works_once_the_lock_is_gone(app, auth, lock, requests_mock):
    requests_mock.post(
        f"{SERVER}/api/v4/posts",
        status_code=201,
        json={"id": "p" * 26, "channel_id": MIRROR},
        headers={"Content-Type": "application/json"},
    )
    client = app.test_client()
    assert start_conversation(client, auth).status_code == 503
    lock.execute("ROLLBACK")
    response = start_conversation(client, auth)
    assert response.status_code == 201, response.json
    assert response.json["status"] == "sent", response.json
    assert requests_mock.call_count == 1


def test_webhook_answers_503_while_locked_and_keeps_nothing_half_written(app, lock):
    before = row_counts(app)
    response = app.test_client().post(
        "/hooks/mattermost/test",
        data={
            "token": WEBHOOK_TOKEN,
            "post_id": "postid00000000000000000000",
            "user_id": "agentid0000000000000000000",
            "channel_id": MIRROR,
            "text": "hi",
        },
    )
    assert response.status_code == 503
    assert response.json["code"] == "unavailable"
    assert "Retry-After" in response.headers
    lock.execute("ROLLBACK")
    assert row_counts(app) == before


def test_full_disk_is_503_saying_so(app, auth):
    client = app.test_client()
    # This request runs in this thread, on this thread's pooled connection:
    # cap the file at its current size so the next insert finds the disk full.
    pooled = Store(app.config["DATABASE"], shared=True)
    pages = pooled.db.execute("PRAGMA page_count").fetchone()[0]
    pooled.db.execute(f"PRAGMA max_page_count = {pages}")
    response = client.post(
        "/api/v1/conversations",
        json={"visitor": {"name": "Ann"}, "text": "x" * 80_000},
        headers=auth,
    )
    assert response.status_code == 503
    assert response.json["code"] == "unavailable"
    assert "full" in response.json["error"]


def test_admin_page_while_locked_is_a_readable_503_page(app):
    client = app.test_client()
    app.test_cli_runner().invoke(args=["set-password", "--password", "long enough pw"])
    response = client.post("/login", data={"name": "Ada", "password": "long enough pw"})
    assert response.status_code == 302
    holder = sqlite3.connect(app.config["DATABASE"], isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        response = client.post("/env/test/deactivate")
        assert response.status_code == 503
        assert response.headers["Retry-After"]
        page = response.get_data(as_text=True)
        assert "<html" in page.lower() and "locked by another process" in page
        response = client.post("/env/test/deactivate", headers={"HX-Request": "true"})
        assert response.status_code == 503
        assert response.headers["Retry-After"]
        fragment = response.get_data(as_text=True)
        assert fragment.startswith("<p") and "locked by another process" in fragment
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert Store(app.config["DATABASE"]).environment("test")["active"]
