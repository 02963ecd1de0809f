"""Outbound, end to end: host API -> bridge under gunicorn -> live Mattermost stand-in."""

from __future__ import annotations

import sqlite3

import pytest

from tests.conftest import configure_env
from tests.live import retry_counts

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def key(live, mm):
    return configure_env(live, mm)


def failed_messages(live) -> int:
    """Messages of the test environment the bridge still holds as failed."""
    conn = sqlite3.connect(f"file:{live.instance / 'bridge.db'}?mode=ro", uri=True, timeout=10)
    try:
        query = "SELECT COUNT(*) FROM messages WHERE env = 'test' AND status = 'failed'"
        return conn.execute(query).fetchone()[0]
    finally:
        conn.close()


def start(live, key, text="Hello, is the room free on Friday?", name="Vera Visitor"):
    response = live.api(
        "POST",
        "/api/v1/conversations",
        key,
        json={"visitor": {"name": name, "email": "vera@example.com"}, "text": text},
    )
    assert response.status_code == 201, response.text
    return response.json()


def test_conversation_becomes_root_post_and_next_message_a_threaded_reply(live, mm, key):
    support = mm.channels["support"]["id"]
    conversation = start(live, key)
    assert conversation["status"] == "sent"
    root = mm.get_post(conversation["root_post_id"])
    assert root["channel_id"] == support == conversation["channel_id"]
    assert root["root_id"] == ""
    assert root["user_id"] == mm.bot["id"]
    assert "Hello, is the room free on Friday?" in root["message"]

    reply = live.api(
        "POST",
        f"/api/v1/conversations/{conversation['id']}/messages",
        key,
        json={"text": "Two people, two nights."},
    )
    assert reply.status_code == 201, reply.text
    body = reply.json()
    assert body["status"] == "sent"
    post = mm.get_post(body["post_id"])
    assert post["root_id"] == conversation["root_post_id"]
    assert "Two people, two nights." in post["message"]


def test_visitor_cannot_ping_the_channel(live, mm, key):
    conversation = start(live, key, text="@channel @here @all help!! mail me at vera@example.com")
    message = mm.get_post(conversation["root_post_id"])["message"]
    for mention in ("@channel", "@here", "@all"):
        assert mention not in message
    assert "vera@example.com" in message


def test_long_text_is_split_into_ordered_posts_in_the_thread(live, mm, key):
    text = "".join(f"line {n:05d} of a very long message\n" for n in range(900))  # ~31 KB
    conversation = start(live, key, text=text)
    assert conversation["status"] == "sent"
    root_id = conversation["root_post_id"]
    parts = [mm.get_post(root_id)] + [p for p in mm.posts if p["root_id"] == root_id]
    assert len(parts) >= 2
    assert all(len(p["message"]) <= 16383 for p in parts)
    joined = "".join(p["message"] for p in parts)
    assert "line 00000" in joined and "line 00899" in joined
    assert joined.index("line 00100") < joined.index("line 00800")


def test_mapped_notification_reaches_its_channel_and_unmapped_is_skipped(live, mm, key):
    sent = live.api(
        "POST",
        "/api/v1/notifications",
        key,
        json={"type": "booking.created", "text": "Booking #42 created"},
    )
    assert sent.status_code == 201
    body = sent.json()
    assert body["status"] == "sent"
    assert body["channel_id"] == mm.channels["sales"]["id"]
    assert mm.get_post(body["post_id"])["message"] == "Booking #42 created"

    before = len(mm.posts)
    skipped = live.api(
        "POST",
        "/api/v1/notifications",
        key,
        json={"type": "payment.failed", "text": "Card declined"},
    )
    assert skipped.status_code == 201
    assert skipped.json()["status"] == "skipped"
    assert "payment.failed" in skipped.json()["reason"]
    assert len(mm.posts) == before


def test_bot_not_in_channel_gives_403_cause_and_keeps_the_message(live, mm, key):
    result = live.cli(
        "configure", "test", "--notify", f"ops.alert={mm.channels['not-joined']['id']}"
    )
    assert "not a member" in result.stderr  # saved with a warning, not refused
    response = live.api(
        "POST", "/api/v1/notifications", key, json={"type": "ops.alert", "text": "disk full"}
    )
    body = response.json()
    assert response.status_code == 201
    assert body["status"] == "failed"
    assert "not a member" in body["error"] and "@bridge-bot" in body["error"]
    assert "Not Joined" in body["error"]  # named, not just an id
    live.cli("configure", "test", "--notify", f"booking.created={mm.channels['sales']['id']}")


def test_rate_limit_is_honoured_and_the_message_still_sent(live, mm, key):
    mm.fail_next(1, 429)
    conversation = start(live, key, text="rate limited hello")
    assert conversation["status"] == "sent"
    assert len([p for p in mm.posts if "rate limited hello" in p["message"]]) == 1


def test_inactive_environment_sends_nothing(live, mm, key):
    live.cli("configure", "test", "--deactivate")
    try:
        before = len(mm.posts)
        conversation = start(live, key, text="anyone there?")
        assert conversation["status"] == "skipped"
        assert "inactive" in conversation["reason"]
        note = live.api(
            "POST", "/api/v1/notifications", key, json={"type": "booking.created", "text": "x"}
        )
        assert note.json()["status"] == "skipped"
        assert len(mm.posts) == before
    finally:
        live.cli("configure", "test", "--activate")


def test_message_failed_while_server_down_is_sent_exactly_once_by_retry(live, mm, key):
    mm.stop()
    try:
        conversation = start(live, key, text="sent while Mattermost was down")
        assert conversation["status"] == "failed"
        assert "cannot reach" in conversation["error"]
        follow_up = live.api(
            "POST",
            f"/api/v1/conversations/{conversation['id']}/messages",
            key,
            json={"text": "and a follow-up"},
        ).json()
        assert follow_up["status"] == "failed"
        kept = live.api("GET", f"/api/v1/conversations/{conversation['id']}/messages", key).json()
        assert [m["status"] for m in kept["messages"]] == ["failed", "failed"]
    finally:
        mm.restart()
    # The 403 notification of an earlier test (when it ran) is still failing: exit 1.
    result = live.cli("retry", "test", check=False)
    counts = retry_counts(result.stdout)["messages"]
    assert counts == {"sent": 2, "failed": failed_messages(live), "skipped": 0}
    assert result.returncode == (1 if counts["failed"] else 0)
    roots = [p for p in mm.posts if "sent while Mattermost was down" in p["message"]]
    replies = [p for p in mm.posts if "and a follow-up" in p["message"]]
    assert len(roots) == 1 and len(replies) == 1
    assert replies[0]["root_id"] == roots[0]["id"]
    # A second retry finds nothing left to send.
    again = retry_counts(live.cli("retry", "test", check=False).stdout)["messages"]
    assert again == {"sent": 0, "failed": failed_messages(live), "skipped": 0}
    assert len([p for p in mm.posts if "sent while Mattermost was down" in p["message"]]) == 1


def test_configure_with_a_wrong_token_exits_non_zero_and_says_invalid(live, mm):
    result = live.cli(
        "configure",
        "production",
        "--server-url",
        mm.url,
        "--bot-token",
        "wrongtokenwrongtokenwrongt",
        check=False,
    )
    assert result.returncode != 0
    assert "invalid" in (result.stderr + result.stdout).lower()
    assert "wrongtoken" not in result.stderr + result.stdout


def test_log_records_every_call_without_tokens(live, mm, key):
    session = live.login()
    page = session.get(live.url + "/log", timeout=10).text
    assert "outbound" in page and "post" in page
    for secret in (mm.bot["token"], key):
        assert secret not in page
    assert mm.bot["token"] not in (live.instance / "gunicorn.log").read_text()


def test_long_text_is_split_at_the_servers_own_max_post_size(live, mm, key):
    mm.max_post_size = 4000  # a server on an old database schema
    try:
        live.cli("configure", "test", "--bot-token", mm.bot["token"])  # verify re-reads it
        text = "word " * 2000  # 10,000 characters
        conversation = start(live, key, text=text)
        assert conversation["status"] == "sent"
        root_id = conversation["root_post_id"]
        parts = [mm.get_post(root_id)] + [p for p in mm.posts if p["root_id"] == root_id]
        assert len(parts) == 3 and all(len(p["message"]) <= 4000 for p in parts)
    finally:
        mm.max_post_size = 16383
        live.cli("configure", "test", "--bot-token", mm.bot["token"])
