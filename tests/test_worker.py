"""bridge/worker.py: one pass of the worker, its schedule, heartbeat and dashboard.

Against the in-process Mattermost stand-in; time is moved by rewriting the
rows' timestamps, never by sleeping.
"""

from __future__ import annotations

import contextlib
import re
import time
from pathlib import Path

import pytest

from bridge import sender as sender_module
from bridge.callbacks import CallbackSender
from bridge.sender import Sender
from bridge.store.base import AUTOCHECKPOINT_PAGES
from bridge.worker import (
    Worker,
    WorkerSettings,
    settings_from_env,
    worker_status,
    write_heartbeat,
)
from tests.test_callbacks import SECRET, Receiver

WEBHOOK_TOKEN = "workerwebhooktoken01234567"


@pytest.fixture
def env(store, mm):
    return store.update_environment(
        "test",
        server_url=mm.url,
        bot_token=mm.bot["token"],
        bot_user_id=mm.bot["id"],
        bot_username=mm.bot["username"],
        mirror_channel_id=mm.channels["support"]["id"],
        webhook_token=WEBHOOK_TOKEN,
        active=1,
    )


def worker(store, **settings) -> Worker:
    return Worker(store, WorkerSettings(**settings))


def posts_with_key(mm, message: dict) -> list[dict]:
    return [p for p in mm.posts if p["props"].get("bridge_key") == message["pending_key"]]


def post_requests(mm) -> int:
    return sum(
        1 for method, path in mm.requests_seen if (method, path) == ("POST", "/api/v4/posts")
    )


@contextlib.contextmanager
def bot_out_of_the_channel(mm):
    """Every post to the support channel fails with 403 meanwhile."""
    support, bot = mm.channels["support"]["id"], mm.bot["id"]
    mm.remove_member(support, bot)
    try:
        yield
    finally:
        mm.add_member(support, bot)


def failed_conversation(store, mm, text: str) -> dict:
    """A conversation whose root post failed once; its next attempt is an hour away."""
    with bot_out_of_the_channel(mm):
        _, message = Sender(store, schedule=(3600.0,)).start_conversation("test", "Ann", text)
    assert message["status"] == "failed" and message["error"].startswith("403")
    return message


def make_due(store, message_id: int) -> None:
    """Move a failed message's next attempt into the past."""
    store.db.execute(
        "UPDATE messages SET next_attempt_at = ? WHERE id = ?", [time.time() - 1, message_id]
    )


# -- failed messages: growing delays ------------------------------------------------------


def test_each_failed_attempt_schedules_the_next_one_later(store, env, mm):
    sender = Sender(store, schedule=(10.0, 30.0, 60.0))
    message = failed_conversation(store, mm, "schedule me")  # first failure, other schedule
    delays = []
    with bot_out_of_the_channel(mm):
        for _ in range(4):
            message = sender.deliver(message["id"])
            assert message["status"] == "failed"
            delays.append(message["next_attempt_at"] - message["updated_at"])
    # Attempts 2, 3, 4, 5 failed: the schedule's 2nd, 3rd, then its last delay again.
    assert delays == pytest.approx([30.0, 60.0, 60.0, 60.0], abs=1.0)
    assert store.message(message["id"])["attempts"] == 5


def test_worker_sends_a_failed_message_only_once_its_next_attempt_is_due(store, env, mm):
    message = failed_conversation(store, mm, "wait for me")
    requests_before = post_requests(mm)

    counts = worker(store).run_once()
    assert counts.messages == {"sent": 0, "failed": 0, "busy": 0, "skipped": 0}
    assert post_requests(mm) == requests_before
    assert store.message(message["id"])["status"] == "failed"

    make_due(store, message["id"])
    counts = worker(store).run_once()
    assert counts.messages["sent"] == 1
    sent = store.message(message["id"])
    assert sent["status"] == "sent" and sent["next_attempt_at"] is None
    assert [p["id"] for p in posts_with_key(mm, message)] == [sent["post_id"]]
    # Sent is sent: the next pass leaves it alone.
    worker(store).run_once()
    assert len(posts_with_key(mm, message)) == 1


def test_flask_retry_ignores_the_schedule(runner, store, env, mm):
    message = failed_conversation(store, mm, "retry me by hand")
    result = runner.invoke(args=["retry", "test"])
    assert result.output.splitlines()[0] == (
        "Retried: 1 sent, 0 still failed, 0 left for an inactive environment."
    )
    assert store.message(message["id"])["status"] == "sent"
    assert len(posts_with_key(mm, message)) == 1


def test_worker_leaves_failed_messages_of_an_inactive_environment(store, env, mm):
    message = failed_conversation(store, mm, "inactive")
    make_due(store, message["id"])
    store.update_environment("test", active=0)
    worker(store).run_once()
    assert store.message(message["id"])["status"] == "failed"
    assert posts_with_key(mm, message) == []


# -- messages left in 'sending' by a dead sender ------------------------------------------------


def test_worker_takes_back_a_message_left_sending_only_after_the_reclaim_age(store, env, mm):
    # Stored and claimed by a web request that died before posting it.
    _, message = store.create_conversation("test", "Ann", "", "", "left behind")
    assert message["status"] == "sending"

    worker(store, reclaim_after=60).run_once()
    assert store.message(message["id"])["status"] == "sending"
    assert posts_with_key(mm, message) == []

    store.db.execute(
        "UPDATE messages SET updated_at = ? WHERE id = ?", [time.time() - 61, message["id"]]
    )
    counts = worker(store, reclaim_after=60).run_once()
    assert counts.messages["sent"] == 1
    assert store.message(message["id"])["status"] == "sent"
    assert len(posts_with_key(mm, message)) == 1


def test_a_claim_taken_back_finds_the_post_the_dead_sender_made(store, env, mm):
    """The dead sender's post went through, its answer was lost: no second post."""
    conversation, root = Sender(store).start_conversation("test", "Ann", "root")
    message = store.add_visitor_message("test", conversation["id"], "Ann", "posted, unseen")
    made = mm.user_post(
        mm.bot, mm.channels["support"]["id"], "**Ann:** posted, unseen", root_id=root["post_id"]
    )
    # What the dead sender's post carried: the message's key in its props.
    made["props"].update({"bridge_key": message["pending_key"], "bridge_part": "0"})
    store.db.execute(
        "UPDATE messages SET updated_at = ? WHERE id = ?", [time.time() - 600, message["id"]]
    )
    requests_before = post_requests(mm)
    worker(store).run_once()
    sent = store.message(message["id"])
    assert sent["status"] == "sent" and sent["post_id"] == made["id"]
    assert post_requests(mm) == requests_before


def test_reclaim_age_is_longer_than_any_live_send_holds_a_claim():
    longest = sender_module.LONGEST_CLAIM_SECONDS  # one lookup, one part's post with retries
    one_part = sender_module.RETRY_BUDGET_SECONDS + sum(sender_module.mm.DEFAULT_TIMEOUT)
    assert longest == pytest.approx(34.1)
    assert sender_module.RECLAIM_AFTER_SECONDS > 2 * longest
    assert sender_module.RECLAIM_AFTER_SECONDS > longest + one_part  # a root sent first


# -- kept replies, callbacks, the log -----------------------------------------------------------


def test_worker_routes_an_agent_reply_whose_lookup_failed(client, store, env, mm):
    conversation, root = Sender(store).start_conversation("test", "Ann", "lookup trouble")
    reply = mm.user_post(
        mm.agent, mm.channels["support"]["id"], "Parking is free.", root_id=root["post_id"]
    )
    mm.fail_next(2, 503)  # the lookup and its inline retry
    response = client.post(
        "/hooks/mattermost/test",
        data={
            "token": WEBHOOK_TOKEN,
            "team_id": mm.team["id"],
            "channel_id": mm.channels["support"]["id"],
            "channel_name": "support",
            "user_id": mm.agent["id"],
            "user_name": "alice",
            "post_id": reply["id"],
            "text": reply["message"],
        },
    )
    assert response.status_code == 200
    response.close()  # routing follows the answer (gunicorn closes it once written): it fails

    def agent_texts():
        return [
            m["text"] for m in store.messages_after(conversation["id"]) if m["direction"] == "agent"
        ]

    assert agent_texts() == []
    worker(store).run_once()
    assert agent_texts() == ["Parking is free."]
    worker(store).run_once()
    assert agent_texts() == ["Parking is free."]


def test_worker_delivers_a_reply_callback_when_it_is_due(store, env):
    receiver = Receiver(SECRET)
    try:
        receiver.status = 503
        store.update_environment("test", callback_url=receiver.url, callback_secret=SECRET)
        conversation, _ = store.create_conversation("test", "Ann", "", "order-9", "Hi")
        reply = store.add_inbound_message(
            env="test",
            conversation_id=conversation["id"],
            direction="agent",
            author="Bo",
            text="Ships today.",
            post_id="mmpost0000000000000000009",
            delivery_status="pending",
        )
        assert not CallbackSender(store).deliver(reply["id"])  # host down: retried later
        worker(store).run_once()
        assert len(receiver.calls) == 1  # not due yet

        receiver.status = 200
        store.db.execute(
            "UPDATE messages SET next_delivery_at = ? WHERE id = ?", [time.time() - 1, reply["id"]]
        )
        counts = worker(store).run_once()
        assert counts.callbacks == {"delivered": 1, "failed": 0}
        assert [call["valid"] for call in receiver.calls] == [True, True]
        assert store.message(reply["id"])["delivery_status"] == "delivered"
    finally:
        receiver.close()


def test_worker_prunes_the_log_past_retention_at_most_once_an_hour(store):
    old = store.log(env="test", direction="outbound", action="post", outcome="ok")
    recent = store.log(env="test", direction="outbound", action="post", outcome="ok")
    store.db.execute("UPDATE log SET ts = ? WHERE id = ?", [time.time() - 11 * 86400, old])
    store.db.execute("UPDATE log SET ts = ? WHERE id = ?", [time.time() - 9 * 86400, recent])

    counts = worker(store, log_retention_days=10).run_once()
    assert counts.pruned == 1
    assert [row["id"] for row in store.log_page()] == [recent]

    store.db.execute("UPDATE log SET ts = ? WHERE id = ?", [time.time() - 11 * 86400, recent])
    assert worker(store, log_retention_days=10).run_once().pruned is None  # within the hour
    assert [row["id"] for row in store.log_page()] == [recent]

    store.db.execute(
        "UPDATE meta SET value = ? WHERE key = 'log_pruned_at'", [repr(time.time() - 3601)]
    )
    assert worker(store, log_retention_days=10).run_once().pruned == 1
    assert store.log_page() == []


def test_a_locked_database_skips_the_pass_and_the_next_one_works(store, env, mm, app):
    from bridge.store import Store

    message = failed_conversation(store, mm, "locked out")
    make_due(store, message["id"])
    other = Store(app.config["DATABASE"])
    other.db.conn.execute("PRAGMA busy_timeout = 0")
    store.db.conn.execute("PRAGMA busy_timeout = 50")
    try:
        other.db.conn.execute("BEGIN IMMEDIATE")  # a backup or a sqlite3 shell holds the lock
        counts = worker(store).run_once()
        assert counts.errors and all("database" in error for error in counts.errors)
        assert not store.db.conn.in_transaction
        other.db.conn.execute("ROLLBACK")
        counts = worker(store).run_once()
        assert counts.errors == [] and counts.messages["sent"] == 1
    finally:
        other.close()


# -- heartbeat and dashboard --------------------------------------------------------------------


def test_each_pass_writes_a_heartbeat_the_dashboard_reads(store):
    assert worker_status(store)["running"] is False
    assert worker_status(store)["seen_at"] is None
    worker(store).run_once()
    status = worker_status(store)
    assert status["running"] is True and status["age"] < 60
    later = worker_status(store, now=status["seen_at"] + 61)
    assert later["running"] is False and later["seen_at"] == status["seen_at"]


def test_each_pass_copies_the_wal_into_the_database_file(store):
    """Requests leave checkpoints to the worker; AUTOCHECKPOINT_PAGES is only a fallback."""
    assert store.db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == AUTOCHECKPOINT_PAGES
    database = Path(store.path)
    worker(store).run_once()
    before = database.stat().st_size
    for _ in range(300):  # ~2,000 WAL pages: SQLite's default would have copied them by now
        store.log(env="test", direction="inbound", action="webhook", outcome="ok", error="x" * 900)
    assert database.stat().st_size == before  # still in the WAL only
    worker(store).run_once()
    assert database.stat().st_size > before + 300 * 900


def test_dashboard_warns_when_the_worker_has_never_run(admin):
    page = admin.get("/").get_data(as_text=True)
    assert 'role="alert" data-worker="not-running"' in page
    assert "The background worker is not running" in page
    assert "never run against this database" in page


def test_dashboard_shows_when_the_worker_was_last_seen(admin, store):
    write_heartbeat(store, started_at=time.time())
    page = admin.get("/").get_data(as_text=True)
    assert 'data-worker="running"' in page and "not running" not in page
    assert re.search(r"last seen \d+ s ago \(pid \d+ on ", page)


def test_the_dashboard_worker_line_refreshes_itself(admin, store):
    """The line polls its own fragment, so a worker that stops shows without a reload."""
    page = admin.get("/").get_data(as_text=True)
    assert 'hx-get="/worker-status" hx-trigger="every 10s"' in page
    assert 'data-worker="not-running"' in admin.get("/worker-status").get_data(as_text=True)
    write_heartbeat(store, started_at=time.time())
    fragment = admin.get("/worker-status", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert 'data-worker="running"' in fragment and "<html" not in fragment
    write_heartbeat(store, started_at=time.time() - 900, now=time.time() - 600)
    fragment = admin.get("/worker-status", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert 'data-worker="not-running"' in fragment and "last seen 10 min ago" in fragment
    assert 'role="status"' in fragment  # the page's first render says it with role="alert"


def test_a_poll_after_logout_brings_the_admin_back_to_the_page_not_the_fragment(admin):
    admin.post("/logout")
    poll = admin.get(
        "/worker-status",
        headers={"HX-Request": "true", "HX-Current-URL": "http://localhost/?tab=1"},
    )
    assert poll.status_code == 200 and poll.headers["HX-Redirect"] == "/login?next=/?tab%3D1"
    elsewhere = admin.get(
        "/worker-status",
        headers={"HX-Request": "true", "HX-Current-URL": "https://evil.example/"},
    )
    assert elsewhere.headers["HX-Redirect"] == "/login"


def test_dashboard_warns_when_the_heartbeat_is_old(admin, store):
    write_heartbeat(store, started_at=time.time() - 900, now=time.time() - 600)
    page = admin.get("/").get_data(as_text=True)
    assert 'data-worker="not-running"' in page
    assert "last seen 10 min ago" in page


def test_dashboard_says_the_worker_retries_failed_messages(admin, store, env, mm):
    failed_conversation(store, mm, "waiting")
    write_heartbeat(store, started_at=time.time())
    page = admin.get("/").get_data(as_text=True)
    assert '">1 failed message</a>' in page and "the worker tries again (next send" in page
    store.set_meta("worker_heartbeat", "")
    page = admin.get("/").get_data(as_text=True)
    assert "the worker is not running; start it, or run" in page


# -- settings ---------------------------------------------------------------------------------


def test_settings_come_from_the_environment():
    settings = settings_from_env(
        {
            "BRIDGE_WORKER_INTERVAL": "0.2",
            "BRIDGE_RECLAIM_AFTER": "3",
            "BRIDGE_RETRY_SCHEDULE": "1, 2.5,10",
            "BRIDGE_LOG_RETENTION_DAYS": "30",
        }
    )
    assert (settings.interval, settings.reclaim_after) == (0.2, 3.0)
    assert settings.schedule == (1.0, 2.5, 10.0)
    assert settings.log_retention_days == 30.0
    assert settings_from_env({}) == WorkerSettings()
    assert WorkerSettings().log_retention_days == 90.0


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("BRIDGE_WORKER_INTERVAL", "0"),
        ("BRIDGE_RECLAIM_AFTER", "soon"),
        ("BRIDGE_RETRY_SCHEDULE", "10,,30"),
        ("BRIDGE_RETRY_SCHEDULE", "-1"),
        ("BRIDGE_LOG_RETENTION_DAYS", "-5"),
    ],
)
def test_a_bad_setting_is_a_clear_error(variable, value):
    with pytest.raises(ValueError, match=variable):
        settings_from_env({variable: value})
