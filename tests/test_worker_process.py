"""``flask --app app worker`` as a process: clean stop on SIGTERM, two workers at once.

The worker runs as a subprocess on a temporary database, against the live
Mattermost stand-in, which holds posts open so the tests can act while a
post is in the worker's hands.
"""

from __future__ import annotations

import os
import re
import signal

import pytest

from tests.live import LiveWorker, wait_until
from tests.test_worker import failed_conversation, make_due

pytestmark = pytest.mark.integration


@pytest.fixture
def env(store, mm):
    return store.update_environment(
        "test",
        server_url=mm.url,
        bot_token=mm.bot["token"],
        bot_user_id=mm.bot["id"],
        bot_username=mm.bot["username"],
        mirror_channel_id=mm.channels["support"]["id"],
        active=1,
    )


@pytest.fixture
def worker_env(app, tmp_path):
    return {
        **os.environ,
        "BRIDGE_DATABASE": app.config["DATABASE"],
        "BRIDGE_SECRET_KEY": "worker-test-secret",
        "BRIDGE_WORKER_INTERVAL": "0.1",
        "PYTHONUNBUFFERED": "1",
    }


def posts_with_key(mm, message: dict) -> list[dict]:
    return [p for p in mm.posts if p["props"].get("bridge_key") == message["pending_key"]]


def test_sigterm_lets_the_worker_finish_the_post_in_hand_then_exit(
    store, env, mm, worker_env, tmp_path
):
    message = failed_conversation(store, mm, "finish me")
    make_due(store, message["id"])
    mm.hold_posts()
    worker = LiveWorker(tmp_path, worker_env).start()
    try:
        mm.wait_for_posts_in_flight(1, timeout=30)
        worker.process.send_signal(signal.SIGTERM)
        wait_until(lambda: "SIGTERM: stopping after the current item" in worker.log, what="log")
        assert worker.process.poll() is None, worker.log  # still waiting for its post
        mm.release_posts()
        assert worker.process.wait(timeout=20) == 0, worker.log
    finally:
        mm.release_posts()
        worker.stop()
    assert store.message(message["id"])["status"] == "sent"
    assert len(posts_with_key(mm, message)) == 1
    assert "worker stopped" in worker.log


def test_an_idle_worker_stops_on_sigterm_and_sigint(store, worker_env, tmp_path):
    for signum in (signal.SIGTERM, signal.SIGINT):
        worker = LiveWorker(tmp_path, worker_env).start()
        try:
            wait_until(lambda: store.get_meta("worker_heartbeat"), what="a heartbeat")
            worker.process.send_signal(signum)
            assert worker.process.wait(timeout=10) == 0, worker.log
        finally:
            worker.stop()
        store.set_meta("worker_heartbeat", "")


def test_two_workers_never_send_a_message_twice(store, env, mm, worker_env, tmp_path):
    messages = [failed_conversation(store, mm, f"race {n}") for n in range(30)]
    for message in messages:
        make_due(store, message["id"])
    # Mattermost's own 30 s deduplication is off, so a double post would show.
    mm.pending_post_ttl = 0
    mm.hold_posts()
    workers = [LiveWorker(tmp_path, worker_env) for _ in range(2)]
    try:
        for worker in workers:
            worker.start()
        # Both workers are in the middle of a post at once: each holds its own message.
        mm.wait_for_posts_in_flight(2, timeout=30)
        mm.release_posts()

        def all_sent():
            return all(store.message(m["id"])["status"] == "sent" for m in messages)

        wait_until(all_sent, timeout=30, what="every message sent")
    finally:
        mm.release_posts()
        codes = [worker.stop() for worker in workers]
        mm.pending_post_ttl = 30.0
    assert codes == [0, 0], [worker.log for worker in workers]
    assert {m["id"]: len(posts_with_key(mm, m)) for m in messages} == {m["id"]: 1 for m in messages}
    # Each message was claimed once more than its one failed attempt, by one worker.
    assert {store.message(m["id"])["attempts"] for m in messages} == {2}
    sent = [
        sum(int(n) for n in re.findall(r"messages (\d+) sent", worker.log)) for worker in workers
    ]
    assert sum(sent) == 30 and min(sent) >= 1, sent


def test_worker_once_makes_one_pass_and_exits(runner, store, env, mm):
    message = failed_conversation(store, mm, "once")
    make_due(store, message["id"])
    result = runner.invoke(args=["worker", "--once"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "messages 1 sent"
    assert store.message(message["id"])["status"] == "sent"
    assert runner.invoke(args=["worker", "--once"]).output.strip() == "Nothing to do."
