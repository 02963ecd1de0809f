"""The worker beside gunicorn (gunicorn.conf.py, one web worker): nothing needs cron.

- A web worker killed with SIGKILL in the middle of a send leaves the message
  in 'sending'; the worker takes it back and it is posted exactly once,
  whether Mattermost had saved the post or not.
- A message that failed while Mattermost was down is delivered by the worker
  alone once Mattermost is back: no cron, no ``flask retry``.

The worker runs with a short reclaim age and retry schedule (environment
variables) so this takes seconds.
"""

from __future__ import annotations

import os
import signal
import threading

import pytest
import requests

from tests.conftest import configure_env
from tests.live import LiveBridge, wait_until

pytestmark = pytest.mark.integration
FAST_WORKER = {"BRIDGE_WORKER_INTERVAL": "0.1", "BRIDGE_RECLAIM_AFTER": "1"}


@pytest.fixture(scope="module")
def live1(tmp_path_factory):
    """One web worker, so the one in the middle of a send is the one to kill."""
    bridge = LiveBridge(
        tmp_path_factory.mktemp("live-worker"),
        workers=1,
        extra_env={"BRIDGE_RETRY_SCHEDULE": "0.5,1"},
    )
    with bridge:
        yield bridge


@pytest.fixture(scope="module")
def key(live1, mm):
    return configure_env(live1, mm)


def start_conversation(live, key, text: str) -> dict:
    response = live.api(
        "POST", "/api/v1/conversations", key, json={"visitor": {"name": "Kim"}, "text": text}
    )
    assert response.json()["status"] == "sent", response.text
    return response.json()


def last_visitor_message(live, conversation_id: str) -> dict:
    return live.query(
        "SELECT * FROM messages WHERE conversation_id = ? AND direction = 'visitor'"
        " ORDER BY id DESC LIMIT 1",
        [conversation_id],
    )[0]


def posts_with_key(mm, pending_key: str) -> list[dict]:
    return [p for p in mm.posts if p["props"].get("bridge_key") == pending_key]


def kill_web_worker_mid_send(live, mm, key, conversation_id: str, *, after_save: bool) -> dict:
    """Send a message, SIGKILL the web worker while Mattermost holds the post; the row."""
    mm.hold_posts(after_save=after_save)
    outcome: dict = {}

    def send():
        try:
            with requests.Session() as session:
                outcome["response"] = session.post(
                    f"{live.url}/api/v1/conversations/{conversation_id}/messages",
                    json={"text": "Is the sauna open late?"},
                    headers={"Authorization": f"Bearer {key}"},
                    timeout=30,
                )
        except requests.RequestException as exc:
            outcome["error"] = exc

    sender = threading.Thread(target=send)
    sender.start()
    try:
        mm.wait_for_posts_in_flight(1, timeout=30)
        (pid,) = live.worker_pids()
        os.kill(pid, signal.SIGKILL)
        sender.join(timeout=30)
    finally:
        mm.release_posts(save=after_save)
    assert "error" in outcome, outcome  # the host's call died with the worker
    # gunicorn replaces the worker; the bridge serves again.
    wait_until(lambda: len(live.worker_pids()) == 1 and live.worker_pids() != [pid])
    message = last_visitor_message(live, conversation_id)
    assert message["status"] == "sending" and message["text"] == "Is the sauna open late?"
    return message


def test_killed_mid_send_before_mattermost_saved_it_the_worker_sends_it_once(live1, mm, key):
    conversation = start_conversation(live1, key, "killed before saving")
    message = kill_web_worker_mid_send(live1, mm, key, conversation["id"], after_save=False)
    assert posts_with_key(mm, message["pending_key"]) == []

    with live1.worker(**FAST_WORKER) as worker:
        wait_until(
            lambda: last_visitor_message(live1, conversation["id"])["status"] == "sent",
            what="the worker sends the message",
        )
    assert worker.process.returncode == 0, worker.log
    (post,) = posts_with_key(mm, message["pending_key"])
    assert post["root_id"] == conversation["root_post_id"]
    assert last_visitor_message(live1, conversation["id"])["post_id"] == post["id"]


def test_killed_mid_send_after_mattermost_saved_it_the_worker_finds_the_post(live1, mm, key):
    conversation = start_conversation(live1, key, "killed after saving")
    # Long after Mattermost's own 30 s deduplication: only the bridge's look at
    # the thread can tell that the post exists.
    mm.pending_post_ttl = 0
    try:
        message = kill_web_worker_mid_send(live1, mm, key, conversation["id"], after_save=True)
        (saved,) = posts_with_key(mm, message["pending_key"])

        with live1.worker(**FAST_WORKER) as worker:
            wait_until(
                lambda: last_visitor_message(live1, conversation["id"])["status"] == "sent",
                what="the worker settles the message",
            )
        assert worker.process.returncode == 0, worker.log
    finally:
        mm.pending_post_ttl = 30.0
    assert [p["id"] for p in posts_with_key(mm, message["pending_key"])] == [saved["id"]]
    assert last_visitor_message(live1, conversation["id"])["post_id"] == saved["id"]


def test_the_worker_alone_delivers_a_message_that_failed_while_mattermost_was_down(live1, mm, key):
    conversation = start_conversation(live1, key, "before the outage")
    with live1.worker(BRIDGE_WORKER_INTERVAL="0.1") as worker:
        wait_until(lambda: live1.query("SELECT 1 FROM meta WHERE key = 'worker_heartbeat'"))
        mm.stop()
        try:
            response = live1.api(
                "POST",
                f"/api/v1/conversations/{conversation['id']}/messages",
                key,
                json={"text": "Sent during the outage"},
            )
            assert response.status_code == 201
            assert response.json()["status"] == "failed", response.text
            message_id = response.json()["id"]
            # The worker keeps trying on its schedule while Mattermost is down.
            wait_until(
                lambda: (
                    live1.query("SELECT attempts FROM messages WHERE id = ?", [message_id])[0][
                        "attempts"
                    ]
                    >= 3
                ),
                what="two more failed attempts by the worker",
            )
        finally:
            mm.restart()

        def status():
            return live1.query("SELECT * FROM messages WHERE id = ?", [message_id])[0]

        wait_until(lambda: status()["status"] == "sent", what="the worker delivers it")
    assert worker.process.returncode == 0, worker.log
    assert len(posts_with_key(mm, status()["pending_key"])) == 1
    page = live1.api("GET", f"/api/v1/conversations/{conversation['id']}/messages", key).json()
    assert [(m["text"], m["status"]) for m in page["messages"]][-1] == (
        "Sent during the outage",
        "sent",
    )
