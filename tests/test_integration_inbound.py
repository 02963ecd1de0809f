"""Inbound, end to end: the stand-in fires outgoing webhooks at the bridge under gunicorn."""

from __future__ import annotations

import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.conftest import configure_env
from tests.live import wait_until

pytestmark = pytest.mark.integration
WEBHOOK_TOKEN = "test-webhook-token-0123456"


@pytest.fixture(scope="module")
def key(live, mm):
    key = configure_env(live, mm)
    hook_url = f"{live.url}/hooks/mattermost/test"
    mm.add_outgoing_webhook(mm.channels["support"]["id"], hook_url, token=WEBHOOK_TOKEN)
    return key


def settle(live, mm):
    """Mattermost has its answers, and the bridge has routed what it kept (after answering)."""
    mm.wait_for_webhooks()
    live.wait_routed()


def start_chat_from_page(live, text="Is breakfast included?"):
    """What the visitor's browser does on the public chat page."""
    session = requests.Session()
    response = session.post(
        f"{live.url}/chat/test/start", data={"name": "Vera", "email": "", "text": text}, timeout=30
    )
    assert response.status_code == 200, response.text[:300]
    conversation_id = re.search(r"[?&]c=([a-z0-9]{26})", response.url).group(1)
    session.close()
    return conversation_id


def start_chat_from_api(live, key, text):
    response = live.api(
        "POST", "/api/v1/conversations", key, json={"visitor": {"name": "Hans Host"}, "text": text}
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


def conversation(live, key, conversation_id):
    return live.api("GET", f"/api/v1/conversations/{conversation_id}", key).json()


def messages(live, key, conversation_id, after=0):
    response = live.api(
        "GET", f"/api/v1/conversations/{conversation_id}/messages?after={after}", key
    )
    return response.json()["messages"]


def hook_payload(mm, post, token=WEBHOOK_TOKEN, user=None):
    user = user or mm.agent
    channel = mm.channels["support"]
    return {
        "token": token,
        "team_id": mm.team["id"],
        "team_domain": "acme",
        "channel_id": channel["id"],
        "channel_name": channel["name"],
        "timestamp": str(post["create_at"] // 1000),
        "user_id": user["id"],
        "user_name": user["username"],
        "post_id": post["id"],
        "text": post["message"],
        "trigger_word": "",
        "file_ids": "",
    }


def test_agent_reply_in_thread_reaches_the_visitor_without_a_loop(live, mm, key):
    conversation_id = start_chat_from_page(live)
    root_post_id = conversation(live, key, conversation_id)["root_post_id"]
    assert root_post_id and mm.get_post(root_post_id)["root_id"] == ""
    settle(live, mm)
    # The bot's own root post fired the hook and was ignored: no reply post came back.
    assert [
        d["status"] for d in mm.webhook_deliveries if d["payload"]["post_id"] == root_post_id
    ] == [200]

    posts_before = len(mm.posts)
    mm.user_post(mm.agent, mm.channels["support"]["id"], "Yes, from 7 to 10.", root_id=root_post_id)
    settle(live, mm)
    assert len(mm.posts) == posts_before + 1  # the agent's post, nothing from the bridge
    delivery = mm.webhook_deliveries[-1]
    assert delivery["content_type"] == "application/x-www-form-urlencoded"
    assert delivery["status"] == 200 and delivery["response_body"] == ""

    found = messages(live, key, conversation_id)
    assert [(m["direction"], m["text"]) for m in found] == [
        ("visitor", "Is breakfast included?"),
        ("agent", "Yes, from 7 to 10."),
    ]
    assert found[1]["author"] == "Alice Agent"

    chat = requests.get(f"{live.url}/chat/test?c={conversation_id}", timeout=10).text
    assert "Yes, from 7 to 10." in chat and "Alice Agent" in chat


def test_visitor_follow_up_from_the_page_is_a_threaded_reply(live, mm, key):
    conversation_id = start_chat_from_page(live, "first")
    root_post_id = conversation(live, key, conversation_id)["root_post_id"]
    response = requests.post(
        f"{live.url}/chat/test/{conversation_id}/messages",
        data={"text": "<b>second</b>"},
        headers={"HX-Request": "true"},
        timeout=30,
    )
    assert response.status_code == 200
    reply = [p for p in mm.posts if "second" in p["message"] and p["root_id"] == root_post_id]
    assert len(reply) == 1
    page = requests.get(f"{live.url}/chat/test?c={conversation_id}", timeout=10).text
    assert "&lt;b&gt;second&lt;/b&gt;" in page and "<b>second</b>" not in page


def test_top_level_post_and_unknown_thread_are_ignored_and_logged(live, mm, key):
    support = mm.channels["support"]["id"]
    mm.user_post(mm.agent, support, "a new topic, not a reply")
    other_root = mm.user_post(mm.agent, support, "a thread the bridge did not start")
    mm.user_post(mm.agent, support, "reply there", root_id=other_root["id"])
    settle(live, mm)
    admin = live.login()
    log = admin.get(f"{live.url}/log?env=test&direction=inbound&outcome=ignored", timeout=10).text
    assert "top-level post" in log
    assert "not a mirrored conversation" in log
    assert "own bot" in log


def test_wrong_token_gets_403_and_stores_nothing(live, mm, key):
    conversation_id = start_chat_from_api(live, key, "token test")
    root = conversation(live, key, conversation_id)["root_post_id"]
    post = mm.user_post(mm.agent, mm.channels["not-joined"]["id"], "forged")  # no hook there
    post = {**post, "root_id": root}
    response = requests.post(
        f"{live.url}/hooks/mattermost/test", data=hook_payload(mm, post, token="x" * 26), timeout=10
    )
    assert response.status_code == 403
    assert len(messages(live, key, conversation_id)) == 1
    log = live.login().get(f"{live.url}/log?env=test&outcome=rejected", timeout=10).text
    assert "token mismatch" in log
    assert "x" * 26 not in log


def test_json_content_type_with_millisecond_timestamp_works(live, mm, key):
    conversation_id = start_chat_from_api(live, key, "json please")
    root = conversation(live, key, conversation_id)["root_post_id"]
    agent_post = mm.user_post(mm.agent, mm.channels["sales"]["id"], "x")  # no hook in sales
    # A real reply post in the thread, delivered by hand as JSON (timestamp in ms).
    settle(live, mm)
    reply = mm.user_post(mm.agent, mm.channels["support"]["id"], "JSON reply", root_id=root)
    settle(live, mm)
    payload = hook_payload(mm, reply)
    payload["timestamp"] = reply["create_at"]
    # The form delivery already stored it; JSON of the same post is a duplicate -> once.
    response = requests.post(f"{live.url}/hooks/mattermost/test", json=payload, timeout=10)
    assert response.status_code == 200 and response.text == ""
    assert [m["text"] for m in messages(live, key, conversation_id)].count("JSON reply") == 1
    assert agent_post["channel_id"] != mm.channels["support"]["id"]


def test_json_hook_stores_a_reply(live, mm, key, tmp_path):
    conversation_id = start_chat_from_api(live, key, "json hook")
    root = conversation(live, key, conversation_id)["root_post_id"]
    # Post as the agent without firing hooks, then deliver it once as JSON.
    reply = mm.user_post(mm.agent, mm.channels["town-square"]["id"], "via JSON")
    reply = dict(reply, channel_id=mm.channels["support"]["id"])
    mm._posts_by_id[reply["id"]].update(root_id=root, channel_id=reply["channel_id"])
    response = requests.post(
        f"{live.url}/hooks/mattermost/test",
        data=json.dumps({**hook_payload(mm, reply), "timestamp": reply["create_at"]}),
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 200 and response.text == ""
    live.wait_routed()
    assert [m["text"] for m in messages(live, key, conversation_id)][-1] == "via JSON"


def test_same_delivery_sent_concurrently_to_two_workers_is_stored_once(live, mm, key):
    conversation_id = start_chat_from_api(live, key, "race")
    root = conversation(live, key, conversation_id)["root_post_id"]
    reply = mm.user_post(mm.agent, mm.channels["town-square"]["id"], "raced reply")
    mm._posts_by_id[reply["id"]].update(root_id=root, channel_id=mm.channels["support"]["id"])
    payload = hook_payload(mm, {**reply, "channel_id": mm.channels["support"]["id"]})
    barrier = threading.Barrier(16)

    def deliver(_):
        barrier.wait(timeout=10)
        return requests.post(
            f"{live.url}/hooks/mattermost/test", data=payload, timeout=30
        ).status_code

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(deliver, range(16)))
    assert statuses == [200] * 16
    live.wait_routed()
    assert [m["text"] for m in messages(live, key, conversation_id)].count("raced reply") == 1


@pytest.mark.parametrize(
    "body, content_type",
    [
        (b"", "application/x-www-form-urlencoded"),
        (b"token=abc", "application/x-www-form-urlencoded"),
        (b"%%%&&&==", "application/x-www-form-urlencoded"),
        (b"{not json", "application/json"),
        (b"[1, 2, 3]", "application/json"),
        (
            b'{"token": {"a": 1}, "post_id": [], "user_id": 1, "channel_id": null}',
            "application/json",
        ),
        (b"\xff\xfe\x00garbage", "application/json"),
        (b"token=a&post_id=b", "text/plain"),
        (b"--x\r\nbroken multipart", "multipart/form-data; boundary=x"),
    ],
)
def test_malformed_bodies_get_400_never_500(live, key, body, content_type):
    response = requests.post(
        f"{live.url}/hooks/mattermost/test",
        data=body,
        headers={"Content-Type": content_type},
        timeout=10,
    )
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "bad_payload"


def test_missing_field_is_named_with_a_content_type_hint(live, key):
    response = requests.post(
        f"{live.url}/hooks/mattermost/test",
        data={"token": WEBHOOK_TOKEN, "post_id": "p" * 26, "channel_id": "c" * 26},
        timeout=10,
    )
    assert response.status_code == 400
    assert "user_id" in response.json()["error"]
    assert "content type" in response.json()["error"]


def test_agent_note_is_hidden_and_close_ends_the_chat(live, mm, key):
    conversation_id = start_chat_from_page(live, "note and close")
    root = conversation(live, key, conversation_id)["root_post_id"]
    support = mm.channels["support"]["id"]
    mm.user_post(mm.agent, support, "note: VIP guest, be nice", root_id=root)
    mm.user_post(mm.agent, support, "!close", root_id=root)
    settle(live, mm)
    settle(live, mm)
    texts = [m["text"] for m in messages(live, key, conversation_id)]
    assert not any("VIP" in t for t in texts)
    assert conversation(live, key, conversation_id)["status"] == "closed"
    notice = [p for p in mm.posts if p["root_id"] == root and "Conversation closed" in p["message"]]
    assert len(notice) == 1
    page = requests.get(f"{live.url}/chat/test?c={conversation_id}", timeout=10).text
    assert "closed" in page and "VIP" not in page
    refused = live.api(
        "POST", f"/api/v1/conversations/{conversation_id}/messages", key, json={"text": "hello?"}
    )
    assert refused.status_code == 409


def test_inactive_environment_acknowledges_and_ignores_replies(live, mm, key):
    conversation_id = start_chat_from_api(live, key, "before deactivation")
    root = conversation(live, key, conversation_id)["root_post_id"]
    live.cli("configure", "test", "--deactivate")
    try:
        mm.user_post(mm.agent, mm.channels["support"]["id"], "while inactive", root_id=root)
        settle(live, mm)
        assert mm.webhook_deliveries[-1]["status"] == 200
        assert len(messages(live, key, conversation_id)) == 1
    finally:
        live.cli("configure", "test", "--activate")


class HostReceiver:
    """The host's callback endpoint, verifying the signature as a host would."""

    def __init__(self, secret: str, answer: int = 200):
        from werkzeug.serving import make_server
        from werkzeug.wrappers import Request, Response

        self.secret, self.answer, self.received = secret, answer, []

        @Request.application
        def app(request):
            from bridge.callbacks import verify_signature

            body = request.get_data()
            valid = verify_signature(
                self.secret,
                request.headers.get("X-Bridge-Timestamp", ""),
                body,
                request.headers.get("X-Bridge-Signature", ""),
            )
            self.received.append({"valid": valid, "json": json.loads(body)})
            return Response("", status=self.answer if valid else 401)

        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}/replies?key=host-secret-query"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def test_agent_reply_is_posted_to_the_host_signed_and_retried_after_failure(live, mm, key):
    secret = "callback-secret-for-tests"
    receiver = HostReceiver(secret, answer=503)
    live.cli("configure", "test", "--callback-url", receiver.url, "--callback-secret", secret)
    try:
        conversation_id = start_chat_from_api(live, key, "callback please")
        root = conversation(live, key, conversation_id)["root_post_id"]
        mm.user_post(mm.agent, mm.channels["support"]["id"], "Signed answer", root_id=root)
        settle(live, mm)
        # Two attempts right after routing (after the answer), both refused by the host.
        wait_until(lambda: len(receiver.received) == 2, what="two callback attempts")
        assert len(receiver.received) == 2
        assert all(r["valid"] for r in receiver.received)
        payload = receiver.received[0]["json"]
        assert payload["event"] == "message.created"
        assert payload["conversation"]["id"] == conversation_id
        assert payload["message"]["text"] == "Signed answer"
        assert payload["message"]["author"] == "Alice Agent"

        receiver.answer = 200
        db = str(live.instance / "bridge.db")
        import sqlite3

        conn = sqlite3.connect(db, timeout=10)
        conn.execute("UPDATE messages SET next_delivery_at = 0 WHERE delivery_status = 'failed'")
        conn.commit()
        conn.close()
        result = live.cli("retry", "test", check=False)
        assert "1 delivered" in result.stdout
        assert len(receiver.received) == 3 and receiver.received[-1]["valid"]
        log = live.login().get(f"{live.url}/log?env=test&direction=callback", timeout=10).text
        assert "HTTP 503" in log and secret not in log and "host-secret-query" not in log
    finally:
        live.cli("configure", "test", "--callback-url", "")
        receiver.close()


def test_reply_whose_lookup_fails_is_kept_and_routed_by_retry(live, mm, key):
    conversation_id = start_chat_from_api(live, key, "lookup trouble")
    root = conversation(live, key, conversation_id)["root_post_id"]
    mm.fail_next(2, 503)  # the lookup and its inline retry both fail
    mm.user_post(mm.agent, mm.channels["support"]["id"], "Parking is free.", root_id=root)
    settle(live, mm)
    assert mm.webhook_deliveries[-1]["status"] == 200
    assert len(messages(live, key, conversation_id)) == 1
    dashboard = live.login().get(f"{live.url}/", timeout=10).text
    assert "1 agent reply not routed yet" in dashboard
    result = live.cli("retry", "test", check=False)
    assert "1 stored" in result.stdout, result.stdout
    assert [m["text"] for m in messages(live, key, conversation_id)][-1] == "Parking is free."
    assert "Agent replies kept" not in live.cli("retry", "test", check=False).stdout  # done
    dashboard = live.login().get(f"{live.url}/", timeout=10).text
    assert "not routed yet" not in dashboard


def test_rate_limited_lookup_is_retried_inline(live, mm, key):
    conversation_id = start_chat_from_api(live, key, "rate limited lookup")
    root = conversation(live, key, conversation_id)["root_post_id"]
    mm.fail_next(1, 429)
    mm.user_post(mm.agent, mm.channels["support"]["id"], "After the limit.", root_id=root)
    settle(live, mm)
    assert [m["text"] for m in messages(live, key, conversation_id)][-1] == "After the limit."


def test_other_bots_are_ignored_unless_the_admin_accepts_them(live, mm, key):
    conversation_id = start_chat_from_api(live, key, "bot replies")
    root = conversation(live, key, conversation_id)["root_post_id"]
    support = mm.channels["support"]["id"]
    mm.user_post(mm.prod_bot, support, "I am another bot", root_id=root)
    settle(live, mm)
    assert [m["text"] for m in messages(live, key, conversation_id)] == ["bot replies"]

    admin = live.login()
    page = admin.get(f"{live.url}/env/test/config", timeout=10).text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)

    def save_config(**extra):
        form = {
            "csrf_token": token,
            "mirror_channel_id": support,
            "notify_type": "booking.created",
            "notify_channel": mm.channels["sales"]["id"],
            **extra,
        }
        return admin.post(f"{live.url}/env/test/config", timeout=10, data=form)

    assert "Configuration saved." in save_config(accept_other_bots="1").text
    try:
        mm.user_post(mm.prod_bot, support, "Bots welcome now", root_id=root)
        settle(live, mm)
        assert [m["text"] for m in messages(live, key, conversation_id)][-1] == "Bots welcome now"
    finally:
        save_config()  # back to ignoring other bots
