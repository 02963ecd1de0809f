"""The inbound inbox under gunicorn against the stand-in: a reply whose post
lookup fails while Mattermost calls the hook is kept, and routed exactly once
later, also by two retry processes started together."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import configure_env
from tests.live import ROOT

pytestmark = pytest.mark.integration
WEBHOOK_TOKEN = "test-webhook-token-0123456"  # what configure_env sets for "test"


@pytest.fixture(scope="module")
def key(live, mm):
    key = configure_env(live, mm)
    mm.add_outgoing_webhook(
        mm.channels["support"]["id"], f"{live.url}/hooks/mattermost/test", token=WEBHOOK_TOKEN
    )
    return key


def lookups_of(mm, post_id: str) -> int:
    return mm.requests_seen.count(("GET", f"/api/v4/posts/{post_id}"))


def retry_together(live, n: int = 2) -> list[subprocess.CompletedProcess]:
    """``flask retry test`` in ``n`` processes at once, as two workers by mistake would."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", "app", "retry", "test"],
            cwd=ROOT,
            env=live.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]
    outputs = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=60)
        outputs.append(
            subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
        )
    return outputs


def test_reply_whose_lookup_fails_at_hook_time_is_kept_and_routed_once(live, mm, key):
    started = live.api(
        "POST", "/api/v1/conversations", key, json={"visitor": {"name": "Ida"}, "text": "Parking?"}
    ).json()
    mm.wait_for_webhooks()  # the root post's own hook call (ignored: the bot's post)
    live.wait_routed()

    mm.fail_next(2, 500)  # GET /posts/{id} and its inline retry, right after the answer
    reply = mm.user_post(
        mm.agent, mm.channels["support"]["id"], "Parking is free.", root_id=started["root_post_id"]
    )
    mm.wait_for_webhooks()
    live.wait_routed()
    delivery = mm.webhook_deliveries[-1]
    assert delivery["payload"]["post_id"] == reply["id"]
    assert (delivery["status"], delivery["response_body"]) == (200, "")  # Mattermost is done
    assert lookups_of(mm, reply["id"]) == 2
    messages = live.api("GET", f"/api/v1/conversations/{started['id']}/messages", key).json()
    assert [m["direction"] for m in messages["messages"]] == ["visitor"]  # not routed yet

    results = retry_together(live)
    assert [r.returncode for r in results] == [0, 0], [r.stderr[-500:] for r in results]
    stored = [
        r for r in results if "Agent replies kept after a failed lookup: 1 stored" in r.stdout
    ]
    assert len(stored) == 1, [r.stdout for r in results]  # one process routed it
    assert lookups_of(mm, reply["id"]) == 3  # two failed, one by the process that won
    messages = live.api("GET", f"/api/v1/conversations/{started['id']}/messages", key).json()
    assert [(m["direction"], m["text"]) for m in messages["messages"]] == [
        ("visitor", "Parking?"),
        ("agent", "Parking is free."),
    ]
    log = live.login().get(f"{live.url}/log?env=test&direction=inbound", timeout=10).text
    assert log.count(f"post <code>{reply['id']}</code>") == 2  # the failure, the stored reply
    assert "cannot look the post up" in log and "agent reply stored" in log
    assert "Agent replies kept" not in live.cli("retry", "test").stdout  # nothing left
