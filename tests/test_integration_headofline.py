"""A slow Mattermost does not freeze the service (gunicorn from gunicorn.conf.py).

Six host sends wait on the stand-in, which holds each post open (the issue's
Mattermost took 4 s per post; here it holds them until released, so the test
cannot race the clock). Meanwhile the login page, the inbound webhook and a
host API read must each answer, with a client timeout of a few seconds.
How fast they answer is measured in bench/ (``python -m bench --only
headofline``), not asserted here.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.conftest import configure_env
from tests.test_integration_inbound import hook_payload

pytestmark = pytest.mark.integration
SLOW_SENDS = 6
CLIENT_TIMEOUT = 5.0  # a few seconds: the sends are held far longer


def test_login_webhook_and_api_answer_while_six_sends_wait_on_mattermost(live, mm):
    key = configure_env(live, mm)
    started = live.api(
        "POST", "/api/v1/conversations", key, json={"visitor": {"name": "Vera"}, "text": "Hi"}
    ).json()
    conversation_id, root = started["id"], started["root_post_id"]
    reply = mm.user_post(mm.agent, mm.channels["support"]["id"], "On my way.", root_id=root)

    def slow_send(n: int) -> requests.Response:
        with requests.Session() as session:  # a connection of its own, like six hosts
            return session.post(
                f"{live.url}/api/v1/conversations/{conversation_id}/messages",
                json={"text": f"slow send {n}"},
                headers={"Authorization": f"Bearer {key}"},
                timeout=60,
            )

    mm.hold_posts()
    try:
        with ThreadPoolExecutor(SLOW_SENDS) as pool:
            sends = [pool.submit(slow_send, n) for n in range(SLOW_SENDS)]
            mm.wait_for_posts_in_flight(SLOW_SENDS, timeout=30)

            with requests.Session() as client:
                login = client.get(f"{live.url}/login", timeout=CLIENT_TIMEOUT)
                hook = client.post(
                    f"{live.url}/hooks/mattermost/test",
                    data=hook_payload(mm, reply),
                    timeout=CLIENT_TIMEOUT,
                )
                read = client.get(
                    f"{live.url}/api/v1/conversations/{conversation_id}",
                    headers={"Authorization": f"Bearer {key}"},
                    timeout=CLIENT_TIMEOUT,
                )
            # All three answered while the six sends were still waiting on Mattermost.
            assert mm.posts_in_flight == SLOW_SENDS
            assert not any(send.done() for send in sends)
            assert (login.status_code, hook.status_code, read.status_code) == (200, 200, 200)
            assert 'name="password"' in login.text
            assert read.json()["id"] == conversation_id

            mm.release_posts()
            answers = [send.result(timeout=60) for send in sends]
    finally:
        mm.release_posts()
    assert [(a.status_code, a.json()["status"]) for a in answers] == [(201, "sent")] * SLOW_SENDS
    messages = live.api("GET", f"/api/v1/conversations/{conversation_id}/messages", key).json()
    agent = [m["text"] for m in messages["messages"] if m["direction"] == "agent"]
    assert agent == ["On my way."]
