"""Load and fault runs with bounded size and time: nothing lost, nothing doubled.

- 10,000 webhook deliveries (5,000 posts, each delivered twice, shuffled) into
  4 gunicorn workers: every delivery logged once, each reply stored once, no
  "database is locked".
- 1,000 visitor messages while the stand-in goes down, answers 500, 429 and
  slowly: afterwards every message is `sent` and posted exactly once.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.conftest import configure_env
from tests.live import LiveBridge

pytestmark = pytest.mark.integration
WEBHOOK_TOKEN = "test-webhook-token-0123456"  # what configure_env sets for "test"


def count(db_path, sql, params=()):
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute(sql, params).fetchone()[0]
    finally:
        conn.close()


@pytest.fixture(scope="module")
def bridge4(tmp_path_factory):
    with LiveBridge(tmp_path_factory.mktemp("load"), workers=4) as bridge:
        yield bridge


def test_ten_thousand_concurrent_deliveries_are_each_logged_once_and_stored_once(bridge4, mm):
    key = configure_env(bridge4, mm)
    support = mm.channels["support"]["id"]
    conversations = []
    for n in range(20):
        started = bridge4.api(
            "POST",
            "/api/v1/conversations",
            key,
            json={"visitor": {"name": f"V{n}"}, "text": f"load {n}"},
        ).json()
        conversations.append(started["root_post_id"])
    # 5,000 agent replies created without firing hooks (the bridge has no hook
    # registered in this stand-in), then delivered by hand, each twice.
    posts = [
        mm.user_post(mm.agent, support, f"reply {n}", root_id=conversations[n % 20])
        for n in range(5000)
    ]
    deliveries = [post for post in posts for _ in range(2)]
    random.Random(7).shuffle(deliveries)
    session_local = threading.local()

    def deliver(post):
        if not hasattr(session_local, "session"):
            session_local.session = requests.Session()
        payload = {
            "token": WEBHOOK_TOKEN,
            "team_id": mm.team["id"],
            "channel_id": support,
            "channel_name": "support",
            "timestamp": str(post["create_at"] // 1000),
            "user_id": mm.agent["id"],
            "user_name": "alice",
            "post_id": post["id"],
            "text": post["message"],
            "trigger_word": "",
            "file_ids": "",
        }
        return session_local.session.post(
            f"{bridge4.url}/hooks/mattermost/test", data=payload, timeout=60
        ).status_code

    started = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(deliver, deliveries))
    elapsed = time.monotonic() - started
    assert statuses.count(200) == 10_000, {s: statuses.count(s) for s in set(statuses)}
    bridge4.wait_routed(timeout=60)  # routing follows each answer
    db = bridge4.instance / "bridge.db"
    assert count(db, "SELECT COUNT(*) FROM log WHERE direction = 'inbound'") == 10_000
    assert count(db, "SELECT COUNT(*) FROM messages WHERE direction = 'agent'") == 5_000
    assert (
        count(
            db,
            "SELECT COUNT(*) FROM (SELECT post_id FROM messages WHERE direction = "
            "'agent' GROUP BY post_id HAVING COUNT(*) > 1)",
        )
        == 0
    )
    assert count(db, "SELECT COUNT(*) FROM log WHERE error LIKE '%locked%'") == 0
    assert "database is locked" not in bridge4.log_path.read_text()
    assert elapsed < 240, f"10,000 deliveries took {elapsed:.0f} s"


@pytest.fixture(scope="module")
def bridge2(tmp_path_factory):
    with LiveBridge(tmp_path_factory.mktemp("faults"), workers=2) as bridge:
        yield bridge


def test_burst_through_outage_errors_rate_limits_and_slowness_posts_each_once(bridge2, mm):
    key = configure_env(bridge2, mm, channel="billing")
    billing = mm.channels["billing"]["id"]
    started = bridge2.api(
        "POST",
        "/api/v1/conversations",
        key,
        json={"visitor": {"name": "Burst"}, "text": "burst root"},
    ).json()
    assert started["status"] == "sent"
    conversation_id = started["id"]
    texts = [f"burst message {n:04d}" for n in range(1000)]
    statuses: list[str] = []
    local = threading.local()

    def send(text):
        if not hasattr(local, "session"):
            local.session = requests.Session()
        response = local.session.post(
            f"{bridge2.url}/api/v1/conversations/{conversation_id}/messages",
            json={"text": text},
            headers={"Authorization": f"Bearer {key}"},
            timeout=120,
        )
        assert response.status_code == 201, response.text
        return response.json()["status"]

    def faults():
        """The stand-in's bad afternoon, while the burst is under way."""
        time.sleep(0.5)
        mm.stop()  # down long enough that some sends give up
        time.sleep(9)
        mm.restart()
        time.sleep(0.5)
        mm.fail_next(40, 500)
        time.sleep(1)
        mm.fail_next(20, 429)
        time.sleep(1.5)
        mm.delay = 0.3
        time.sleep(2)
        mm.delay = 0.0

    chaos = threading.Thread(target=faults)
    chaos.start()
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(send, texts))
    chaos.join()
    assert set(statuses) <= {"sent", "failed"}
    assert "failed" in statuses  # the outage really bit
    for _ in range(3):
        result = bridge2.cli("retry", "test", check=False)
        if "0 still failed" in result.stdout:
            break
    assert "0 still failed" in result.stdout, result.stdout
    kept = []
    after = 0
    while True:
        page = bridge2.api(
            "GET", f"/api/v1/conversations/{conversation_id}/messages?after={after}", key
        ).json()["messages"]
        if not page:
            break
        kept += page
        after = page[-1]["id"]
    assert len(kept) == 1001 and {m["status"] for m in kept} == {"sent"}
    posted = [p["message"] for p in mm.posts_in(billing)]
    for text in texts:
        assert sum(text in message for message in posted) == 1, text
    db = bridge2.instance / "bridge.db"
    assert (
        count(
            db, "SELECT COUNT(*) FROM log WHERE outcome = 'error' AND error LIKE '%cannot reach%'"
        )
        > 0
    )
    assert count(db, "SELECT COUNT(*) FROM log WHERE http_status = 429") > 0
    assert count(db, "SELECT COUNT(*) FROM log WHERE http_status = 500") > 0
