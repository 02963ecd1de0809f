"""The inbound inbox: calls kept before routing, claims and leases, routing
exactly once (also with two processes racing), and rejected calls counted
rather than logged one row each, so they cannot fill the disk."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import sqlite3
import time
from urllib.parse import urlencode

import pytest
import requests
import requests_mock

from bridge.inbound import QUEUE_BACKOFF, InboundRouter
from bridge.store import INBOX_KEEP_DONE_SECONDS, INBOX_LEASE_SECONDS, Store, shared_connection
from bridge.store.log import COUNT_WINDOW_SECONDS
from bridge.store.schema import MIGRATIONS, split_sql
from tests.standin import new_id

SERVER = "http://mm.example.test"
WEBHOOK_TOKEN = "hooktokenhooktokenhooktok1"
BOT_ID, AGENT_ID, CHANNEL_ID, TEAM_ID = new_id(), new_id(), new_id(), new_id()
HOOK = "/hooks/mattermost/test"
FORM = "application/x-www-form-urlencoded"
POST_URL = re.compile(rf"{re.escape(SERVER)}/api/v4/posts/(\w+)$")
USER_URL = re.compile(rf"{re.escape(SERVER)}/api/v4/users/\w+$")
MM_HEADERS = {"X-Version-Id": "9.11.0", "Content-Type": "application/json"}


def configure(store: Store) -> str:
    """An active test environment with one mirrored conversation; its root post id."""
    store.update_environment(
        "test",
        server_url=SERVER,
        bot_token="bottokenbottokenbottoken26",
        bot_user_id=BOT_ID,
        bot_username="bridge-bot",
        bot_is_bot=1,
        webhook_token=WEBHOOK_TOKEN,
        mirror_channel_id=CHANNEL_ID,
        active=1,
    )
    conversation, _ = store.create_conversation("test", "Vera", "", "", "Is breakfast included?")
    root = new_id()
    store.set_conversation_root(conversation["id"], root, CHANNEL_ID)
    return root


def fields(post_id: str, **overrides) -> dict[str, str]:
    """A form-encoded call as Mattermost sends it for an agent's post."""
    return {
        "token": WEBHOOK_TOKEN,
        "team_id": TEAM_ID,
        "team_domain": "acme",
        "channel_id": CHANNEL_ID,
        "channel_name": "support",
        "timestamp": "1700000000",
        "user_id": AGENT_ID,
        "user_name": "alice",
        "post_id": post_id,
        "text": "Yes, from 7 to 10.",
        "trigger_word": "",
        "file_ids": "",
        **overrides,
    }


def kept_fields(post_id: str) -> dict:
    """What the inbox keeps of a call (the token is never kept)."""
    kept = {k: v for k, v in fields(post_id).items() if k not in ("token", "file_ids")}
    return {**kept, "timestamp": 1700000000.0}


def mock_mattermost(mocker, root: str, *, status: int = 200) -> None:
    """GET /posts/{id} answers a reply in the thread ``root`` (or ``status``)."""

    def post(request, context):
        context.status_code = status
        if status != 200:
            return {"id": "app.post.get.app_error", "message": "boom", "status_code": status}
        post_id = POST_URL.match(request.url).group(1)
        return {"id": post_id, "root_id": root, "message": f"reply {post_id}", "props": {}}

    mocker.get(POST_URL, json=post, headers=MM_HEADERS)
    mocker.get(
        USER_URL,
        json={"id": AGENT_ID, "username": "alice", "first_name": "Alice", "last_name": "Agent"},
        headers=MM_HEADERS,
    )


def lookups(mocker) -> list[str]:
    return [POST_URL.match(r.url).group(1) for r in mocker.request_history if POST_URL.match(r.url)]


def agent_posts(store: Store) -> list[str]:
    rows = store.db.query("SELECT post_id FROM messages WHERE direction = 'agent' ORDER BY id")
    return [row["post_id"] for row in rows]


def db_rows(store: Store, table: str) -> int:
    return next(store.db.query(f"SELECT COUNT(*) AS n FROM {table}"))["n"]


# -- the store: kept once, claims and leases ------------------------------------------


def test_a_post_is_kept_once_claimed_by_its_keeper(store):
    post_id = new_id()
    first = store.add_to_inbox("test", post_id, kept_fields(post_id))
    assert store.add_to_inbox("test", post_id, kept_fields(post_id)) is None
    assert db_rows(store, "inbox") == 1
    row = store.inbox_row(first["id"])
    assert (row["state"], row["claim"], row["attempts"]) == ("routing", first["claim"], 1)
    assert row["payload"] == kept_fields(post_id)


def test_a_claim_is_exclusive_until_its_lease_runs_out(store):
    configure(store)
    kept = store.add_to_inbox("test", new_id(), {})
    inbox_id = kept["id"]
    assert store.holds_inbox_claim(inbox_id, kept["claim"])
    assert store.due_inbox_ids() == [] and store.claim_inbox(inbox_id) is None
    # The keeper died before routing it: once the lease has run out, a retry takes it.
    later = time.time() + INBOX_LEASE_SECONDS + 1
    assert store.due_inbox_ids(now=later) == [inbox_id]
    retry = store.claim_inbox(inbox_id, now=later)
    assert retry["claim"] != kept["claim"] and retry["attempts"] == 2
    assert store.claim_inbox(inbox_id, now=later) is None  # the retry's claim holds now
    # The old claim can change nothing any more; the new one finishes the row.
    assert not store.holds_inbox_claim(inbox_id, kept["claim"])
    assert store.finish_inbox(inbox_id, kept["claim"], "ok") is False
    assert store.release_inbox(inbox_id, kept["claim"], error="x", delay=0) is False
    assert store.finish_inbox(inbox_id, retry["claim"], "ok") is True
    assert store.inbox_row(inbox_id)["state"] == "done"
    assert store.claim_inbox(inbox_id, now=later + INBOX_LEASE_SECONDS + 1) is None


def test_a_released_row_is_due_again_after_its_delay(store):
    configure(store)
    kept = store.add_to_inbox("test", new_id(), {})
    assert store.release_inbox(kept["id"], kept["claim"], error="HTTP 500", delay=30)
    row = store.inbox_row(kept["id"])
    assert (row["state"], row["error"], row["claim"]) == ("pending", "HTTP 500", "")
    assert store.due_inbox_ids() == [] and store.claim_inbox(kept["id"]) is None
    assert store.due_inbox_ids(now=time.time() + 31) == [kept["id"]]
    assert store.count_queued_inbound("test") == 1


def test_rows_of_an_inactive_environment_wait_until_it_is_active(store):
    configure(store)
    kept = store.add_to_inbox("test", new_id(), {})
    store.release_inbox(kept["id"], kept["claim"], error="HTTP 500", delay=0)
    store.update_environment("test", active=0)
    assert store.due_inbox_ids() == []
    store.update_environment("test", active=1)
    assert store.due_inbox_ids() == [kept["id"]]


def test_routed_rows_are_pruned_after_a_day_and_kept_ones_never(store):
    configure(store)
    done, kept = (store.add_to_inbox("test", new_id(), {}) for _ in range(2))
    store.finish_inbox(done["id"], done["claim"], "ok")
    assert store.prune_inbox(now=time.time() + INBOX_KEEP_DONE_SECONDS - 60) == 0
    assert store.prune_inbox(now=time.time() + INBOX_KEEP_DONE_SECONDS + 60) == 1
    assert store.inbox_row(done["id"]) is None
    assert store.inbox_row(kept["id"])["state"] == "routing"


def test_migration_moves_kept_calls_of_inbound_queue_into_the_inbox(tmp_path):
    """A database of schema 8 (inbound_queue) keeps its kept calls, and they route."""
    path = str(tmp_path / "old.db")
    old = Store(path)
    for script in MIGRATIONS[:8]:
        for statement in split_sql(script):
            old.db.execute(statement)
    old.db.execute("INSERT INTO meta (key, value) VALUES ('schema_version', '8')")
    root = configure(old)
    post_id = new_id()
    old.db.execute(
        "INSERT INTO inbound_queue (env, post_id, payload, error, attempts, created_at, next_at)"
        " VALUES ('test', ?, ?, 'cannot look the post up', 2, 1700000000, 0)",
        [post_id, json.dumps(kept_fields(post_id))],
    )
    assert old.migrate() == len(MIGRATIONS)
    assert "inbound_queue" not in old.db.table_names()
    row = old.inbox_row(old.due_inbox_ids()[0])
    assert (row["post_id"], row["state"], row["attempts"]) == (post_id, "pending", 2)
    assert row["payload"] == kept_fields(post_id)
    with requests_mock.Mocker() as mocker:
        mock_mattermost(mocker, root)
        assert InboundRouter(old, sleep=lambda s: None).retry_queued() == {
            "stored": 1,
            "ignored": 0,
            "failed": 0,
        }
    assert agent_posts(old) == [post_id]
    old.close()


# -- routing exactly once, also when two processes race -------------------------------


def _race_router(path, start, results):
    """One of two processes: list the due rows, then claim each at the same moment
    as the other process (a barrier before every claim), and route what it wins."""

    class RacingStore(Store):
        def due_inbox_ids(self, *args, **kwargs):
            ids = super().due_inbox_ids(*args, **kwargs)
            start.wait(timeout=30)  # both hold the same list before either claims a row
            return ids

        def claim_inbox(self, *args, **kwargs):
            start.wait(timeout=30)  # both go for the same row together
            return super().claim_inbox(*args, **kwargs)

    store = RacingStore(path)
    session = requests.Session()
    with requests_mock.Mocker(session=session) as mocker:
        mock_mattermost(
            mocker, store.db.execute("SELECT root_post_id FROM conversations").fetchone()[0]
        )
        counts = InboundRouter(store, session=session, sleep=lambda s: None).retry_queued()
        results.put({"pid": os.getpid(), "counts": counts, "looked_up": lookups(mocker)})
    store.close()


def test_two_processes_racing_for_the_same_rows_route_each_exactly_once(app, store):
    configure(store)
    posts = [new_id() for _ in range(150)]
    for post_id in posts:  # kept, their lookup failed: due for a retry
        kept = store.add_to_inbox("test", post_id, kept_fields(post_id))
        store.release_inbox(kept["id"], kept["claim"], error="HTTP 500", delay=0)
    context = multiprocessing.get_context("fork")
    start, results = context.Barrier(2), context.Queue()
    racers = [
        context.Process(target=_race_router, args=(app.config["DATABASE"], start, results))
        for _ in range(2)
    ]
    for racer in racers:
        racer.start()
    outcomes = [results.get(timeout=60) for _ in racers]
    for racer in racers:
        racer.join(timeout=30)
        assert racer.exitcode == 0
    looked_up = [post_id for outcome in outcomes for post_id in outcome["looked_up"]]
    assert sorted(looked_up) == sorted(posts)  # each post looked up once, by one process
    assert sum(outcome["counts"]["stored"] for outcome in outcomes) == 150
    assert sorted(agent_posts(store)) == sorted(posts)
    routed = store.db.query(
        "SELECT post_id, COUNT(*) AS n FROM log WHERE action = 'webhook_retry' GROUP BY post_id"
    )
    assert {row["post_id"]: row["n"] for row in routed} == dict.fromkeys(posts, 1)
    assert store.count_queued_inbound("test") == 0


# -- the webhook: kept first, answered, routed after the answer ------------------------


@pytest.fixture
def hook_app(app, store):
    """The app with an active environment; its root post id and a Mattermost mock."""
    root = configure(store)
    with requests_mock.Mocker() as mocker:
        yield root, mocker


def test_a_reply_is_kept_before_mattermost_is_asked_and_routed_after_the_answer(
    client, store, hook_app
):
    root, mocker = hook_app
    mock_mattermost(mocker, root)
    post_id = new_id()
    response = client.post(HOOK, data=fields(post_id))
    # The answer is ready: the call is kept (claimed by this process), Mattermost not asked yet.
    assert (response.status_code, response.data) == (200, b"")
    kept = next(store.db.query("SELECT * FROM inbox"))
    assert (kept["state"], kept["attempts"]) == ("routing", 1)
    assert store.due_inbox_ids() == []  # a retry leaves it to this process
    assert lookups(mocker) == []
    response.close()  # gunicorn closes it once the answer is written
    assert lookups(mocker) == [post_id]
    assert agent_posts(store) == [post_id]
    row = next(store.db.query("SELECT * FROM inbox"))
    assert (row["state"], row["outcome"], row["attempts"]) == ("done", "ok", 1)
    assert WEBHOOK_TOKEN not in row["payload"]


def test_a_failed_lookup_keeps_the_reply_and_a_retry_routes_it_once(client, store, hook_app):
    root, mocker = hook_app
    mock_mattermost(mocker, root, status=500)
    post_id = new_id()
    client.post(HOOK, data=fields(post_id)).close()
    assert lookups(mocker) == [post_id, post_id]  # the lookup and its inline retry
    row = next(store.db.query("SELECT * FROM inbox"))
    assert (row["state"], row["attempts"]) == ("pending", 1)
    assert "cannot look the post up" in row["error"]
    assert agent_posts(store) == [] and store.count_queued_inbound("test") == 1
    # The lookups are in the log with the call's outcome (written in one commit).
    logged = store.db.query("SELECT direction, action, http_status FROM log ORDER BY id")
    assert [tuple(r.values()) for r in logged] == [
        ("outbound", "lookup", 500),
        ("outbound", "lookup", 500),
        ("inbound", "webhook", 200),
    ]

    # Due again at once (QUEUE_BACKOFF[0]); failing again, it waits 30 s, then 2 min.
    router = InboundRouter(store, sleep=lambda s: None)
    for failures, wait in enumerate(QUEUE_BACKOFF[1:3], start=2):
        assert store.due_inbox_ids() == [row["id"]]
        assert router.retry_queued() == {"stored": 0, "ignored": 0, "failed": 1}
        kept = store.inbox_row(row["id"])
        assert kept["attempts"] == failures
        assert wait - 1 < kept["next_at"] - time.time() <= wait
        assert store.due_inbox_ids() == [] and router.retry_queued()["failed"] == 0
        store.db.execute("UPDATE inbox SET next_at = 0")  # the wait is over

    mock_mattermost(mocker, root)
    assert router.retry_queued() == {"stored": 1, "ignored": 0, "failed": 0}
    assert router.retry_queued() == {"stored": 0, "ignored": 0, "failed": 0}
    assert agent_posts(store) == [post_id]
    assert lookups(mocker) == [post_id] * 7  # 2 at the call, 2 + 2 failed retries, 1 stored
    assert store.count_queued_inbound("test") == 0


def test_a_call_kept_by_a_process_that_died_is_routed_once_its_claim_runs_out(
    client, store, hook_app
):
    root, mocker = hook_app
    mock_mattermost(mocker, root)
    post_id = new_id()
    response = client.post(HOOK, data=fields(post_id))  # never closed: the worker was killed
    assert response.status_code == 200
    assert store.db.execute("SELECT COUNT(*) FROM inbox").fetchone() == (1,)  # kept, claimed
    router = InboundRouter(store, sleep=lambda s: None)
    assert router.retry_queued() == {"stored": 0, "ignored": 0, "failed": 0}  # claim holds
    store.db.execute("UPDATE inbox SET next_at = ?", [time.time() - 1])  # the lease ran out
    assert router.retry_queued() == {"stored": 1, "ignored": 0, "failed": 0}
    assert router.retry_queued() == {"stored": 0, "ignored": 0, "failed": 0}
    assert agent_posts(store) == [post_id] and lookups(mocker) == [post_id]
    # Had that process only stalled, its routing after the answer does nothing now.
    logged = store.db.execute("SELECT COUNT(*) FROM log WHERE direction = 'inbound'").fetchone()
    response.close()
    assert lookups(mocker) == [post_id] and agent_posts(store) == [post_id]
    assert store.db.execute("SELECT COUNT(*) FROM log WHERE direction = 'inbound'").fetchone() == (
        logged
    )


def test_a_repeated_delivery_is_kept_once_and_logged_as_a_duplicate(client, store, hook_app):
    root, mocker = hook_app
    mock_mattermost(mocker, root)
    post_id = new_id()
    first = client.post(HOOK, data=fields(post_id))
    second = client.post(HOOK, data=fields(post_id))
    assert first.status_code == second.status_code == 200
    first.close()
    second.close()
    assert db_rows(store, "inbox") == 1
    assert agent_posts(store) == [post_id] and lookups(mocker) == [post_id]
    outcomes = store.db.query("SELECT outcome, error FROM log WHERE direction = 'inbound'")
    assert sorted((row["outcome"], row["error"]) for row in outcomes) == [
        ("ignored", "duplicate delivery: post already stored"),
        ("ok", "agent reply stored"),
    ]


def test_calls_ignored_without_a_lookup_are_not_kept(client, store, hook_app):
    _, mocker = hook_app
    bot_post = fields(new_id(), user_id=BOT_ID, user_name="bridge-bot")
    other_channel = fields(new_id(), channel_id=new_id())
    for call in (bot_post, other_channel):
        with client.post(HOOK, data=call) as response:
            assert (response.status_code, response.data) == (200, b"")
    assert db_rows(store, "inbox") == 0 and lookups(mocker) == []
    reasons = store.db.query("SELECT error FROM log WHERE outcome = 'ignored' ORDER BY id")
    assert [row["error"] for row in reasons] == [
        "post by the bridge's own bot (reply-loop guard)",
        "not the mirror channel",
    ]


def test_a_locked_database_refuses_the_call_having_kept_and_asked_nothing(
    app, client, store, hook_app
):
    root, mocker = hook_app
    mock_mattermost(mocker, root)
    # Another process (a backup, a sqlite3 shell) holds the write lock.
    locker = sqlite3.connect(app.config["DATABASE"], isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    # The request's pooled connection (this thread's) gives up quickly, not after 5 s.
    shared_connection(app.config["DATABASE"]).execute("PRAGMA busy_timeout = 50")
    try:
        with client.post(HOOK, data=fields(new_id())) as response:
            assert response.status_code >= 500
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert db_rows(store, "inbox") == 0 and db_rows(store, "log") == 0
    assert mocker.call_count == 0


# -- rejected calls are counted, and cannot fill the disk ------------------------------


def test_repeated_events_share_one_log_row_per_reason_and_window(store):
    now = 1_700_000_400.0  # 400 s into a 600 s window
    for _ in range(1000):
        store.log_counted(
            env="test",
            direction="inbound",
            action="webhook",
            outcome="rejected",
            reason="token mismatch",
            http_status=403,
            now=now,
        )
    counted = {"env": "test", "direction": "inbound", "action": "webhook", "outcome": "rejected"}
    assert store.log_counted(**counted, reason="bad payload: x", http_status=400, now=now) == 1
    next_window = now + COUNT_WINDOW_SECONDS
    assert store.log_counted(**counted, reason="token mismatch", http_status=403, now=next_window)
    rows = store.db.query("SELECT error, count, ts, last_ts FROM log ORDER BY id")
    assert [(r["error"], r["count"], r["ts"], r["last_ts"]) for r in rows] == [
        ("token mismatch", 1000, now, now),
        ("bad payload: x", 1, now, now),
        ("token mismatch", 1, next_window, next_window),
    ]


def rejected_rows(store: Store) -> dict[str, int]:
    """Counted rejections by reason (summed over windows) and the rows they take."""
    rows = list(store.db.query("SELECT error, count FROM log WHERE outcome = 'rejected'"))
    totals: dict[str, int] = {}
    for row in rows:
        totals[row["error"]] = totals.get(row["error"], 0) + row["count"]
    return totals, len(rows)


def test_a_thousand_rejected_calls_add_a_handful_of_log_rows(client, store, hook_app):
    junk = [
        # (how many, body, content type, status)
        (400, urlencode(fields(new_id(), token="x" * 26)), FORM, 403),
        (200, urlencode({"token": WEBHOOK_TOKEN, "post_id": new_id()}), FORM, 400),
        (200, urlencode(fields("not-an-id-but-26-chars-xyz")), FORM, 400),
        (100, "{broken", "application/json", 400),
        (100, "token=abc", "text/x-junk-{n}", 400),  # a new content type every call
    ]
    for count, body, content_type, status in junk:
        for n in range(count):
            response = client.post(HOOK, data=body, content_type=content_type.format(n=n))
            assert response.status_code == status
    totals, rows = rejected_rows(store)
    assert totals == {
        "token mismatch": 400,
        "bad payload: missing fields: user_id, channel_id (body read as "
        "application/x-www-form-urlencoded; is the webhook's content type right?)": 200,
        "bad payload: post_id is not a Mattermost id (26 letters and digits)": 200,
        "bad payload: the body is not valid JSON": 100,
        "bad payload: unsupported content type": 100,
    }
    assert rows <= 2 * len(totals)  # one per reason, two if a window ended meanwhile
    assert db_rows(store, "log") == rows and db_rows(store, "inbox") == 0


def database_bytes(path: str) -> int:
    """The database file after writing the WAL back into it (what stays on disk)."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return os.path.getsize(path)


def test_big_rejected_calls_barely_grow_the_database(app, client, store, hook_app):
    """The probe: 100 calls of 300 KB with a wrong token grew it by 13.5 MB."""
    big = "x" * 300_000
    calls = [
        fields(new_id(), token="y" * 26, file_ids=big),  # 403: token mismatch
        fields(new_id(), token="y" * 26, text=big),  # 400: longer than any post
        fields(big, token="y" * 26),  # 400: not an id
        fields(new_id(), token="y" * 26, channel_name=big[:60_000], user_name=big[:60_000]),
    ]
    before = database_bytes(app.config["DATABASE"])
    statuses = []
    for n in range(100):
        body = urlencode(calls[n % len(calls)]).encode()
        assert len(body) > 100_000
        statuses.append(client.post(HOOK, data=body, content_type=FORM).status_code)
    grown = database_bytes(app.config["DATABASE"]) - before
    assert sorted(set(statuses)) == [400, 403]
    assert grown < 32 * 1024, f"the database grew by {grown} bytes"
    totals, rows = rejected_rows(store)
    assert sum(totals.values()) == 100 and rows <= 2 * len(totals)


def test_the_log_page_shows_how_often_a_rejection_repeated(admin, store, hook_app):
    for _ in range(3):
        admin.post(HOOK, data=fields(new_id(), token="z" * 26))
    page = admin.get("/log?outcome=rejected").get_data(as_text=True)
    assert page.count("token mismatch") == 1
    assert "×3, last at" in page
