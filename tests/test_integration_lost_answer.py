"""No double post, end to end: lost answers retried after Mattermost's dedup window,
and two `flask retry` runs at once.

The stand-in keeps a pending_post_id for 1 s here (a real server: 30 s), so a
retry can run after the window has closed without waiting half a minute; the
order of events is driven by the stand-in's fault queue and gates, not sleeps.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import configure_env
from tests.live import ROOT, retry_counts

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def mm():
    """A stand-in whose pending_post_id window is 1 s instead of 30."""
    from tests.standin import MattermostStandin

    standin = MattermostStandin(pending_post_ttl=1.0).start()
    yield standin
    standin.close()
    assert standin.internal_errors == []


@pytest.fixture(scope="module")
def key(live, mm):
    return configure_env(live, mm)


def posts_saying(mm, text):
    return [post for post in mm.posts if text in post["message"]]


def create_post_requests(mm) -> int:
    return sum(1 for request in list(mm.requests_seen) if request == ("POST", "/api/v4/posts"))


def send_with_lost_answer(mm, send):
    """Mattermost saves the post but the answer is lost; every later try gets 503."""
    mm.lose_next_answers(1)
    mm.failing_status = 503
    try:
        return send()
    finally:
        mm.failing_status = None
        assert mm.faults_left() == 0


def test_lost_answers_retried_after_the_window_post_once(live, mm, key):
    started = live.api(
        "POST",
        "/api/v1/conversations",
        key,
        json={"visitor": {"name": "Lena"}, "text": "first, answered"},
    ).json()
    assert started["status"] == "sent"

    # A reply in the thread: Mattermost saves it, the bridge never hears back.
    reply = send_with_lost_answer(
        mm,
        lambda: live.api(
            "POST",
            f"/api/v1/conversations/{started['id']}/messages",
            key,
            json={"text": "reply whose answer was lost"},
        ).json(),
    )
    # A new conversation: its root post is saved, the answer lost.
    lost_root = send_with_lost_answer(
        mm,
        lambda: live.api(
            "POST",
            "/api/v1/conversations",
            key,
            json={"visitor": {"name": "Lou"}, "text": "root whose answer was lost"},
        ).json(),
    )
    assert (reply["status"], lost_root["status"]) == ("failed", "failed")
    assert "503" in reply["error"] and "503" in lost_root["error"]
    saved_reply = posts_saying(mm, "reply whose answer was lost")
    saved_root = posts_saying(mm, "root whose answer was lost")
    assert (len(saved_reply), len(saved_root)) == (1, 1)  # Mattermost has them already

    # Past the server's pending_post_id window a repeat would be a second post.
    mm.wait_for_pending_windows_to_close()
    creates = create_post_requests(mm)
    result = live.cli("retry", "test", check=False)
    assert retry_counts(result.stdout)["messages"] == {"sent": 2, "failed": 0, "skipped": 0}
    assert result.returncode == 0

    # Found by their props, in the thread and among the channel's recent posts.
    assert create_post_requests(mm) == creates
    assert posts_saying(mm, "reply whose answer was lost") == saved_reply
    assert posts_saying(mm, "root whose answer was lost") == saved_root
    thread = live.api("GET", f"/api/v1/conversations/{lost_root['id']}", key).json()
    assert thread["root_post_id"] == saved_root[0]["id"]
    kept = live.api("GET", f"/api/v1/conversations/{started['id']}/messages", key).json()
    assert [m["status"] for m in kept["messages"]] == ["sent", "sent"]
    assert saved_reply[0]["root_id"] == started["root_post_id"]


def test_two_retry_runs_at_once_post_each_message_once(live, mm, key):
    support, sales = mm.channels["support"]["id"], mm.channels["sales"]["id"]
    started = live.api(
        "POST", "/api/v1/conversations", key, json={"visitor": {"name": "Rita"}, "text": "hello"}
    ).json()
    assert started["status"] == "sent"
    # The bot is taken out of both channels: every send fails at once with 403.
    texts = [f"concurrent retry {n}" for n in range(6)]
    for channel in (support, sales):
        mm.remove_member(channel, mm.bot["id"])
    try:
        for text in texts[:4]:
            sent = live.api(
                "POST",
                f"/api/v1/conversations/{started['id']}/messages",
                key,
                json={"text": text},
            ).json()
            assert sent["status"] == "failed"
        for text in texts[4:]:
            sent = live.api(
                "POST",
                "/api/v1/notifications",
                key,
                json={"type": "booking.created", "text": text},
            ).json()
            assert sent["status"] == "failed"
    finally:
        for channel in (support, sales):
            mm.add_member(channel, mm.bot["id"])

    # Both runs hold a post in flight at the same moment before either may finish.
    gate = mm.hold("create_post")
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", "app", "retry", "test"],
            cwd=ROOT,
            env=live.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        gate.wait_for_arrivals(2, timeout=30)
    finally:
        gate.release()
        outputs = [run.communicate(timeout=60) for run in runs]
    counts = [retry_counts(stdout)["messages"] for stdout, _ in outputs]
    assert sum(c["sent"] for c in counts) == len(texts), outputs
    assert [c["failed"] for c in counts] == [0, 0], outputs
    assert [run.returncode for run in runs] == [0, 0], outputs
    for text in texts:
        assert len(posts_saying(mm, text)) == 1, text
