"""Inbound, end to end: the stand-in fires outgoing webhooks at the bridge under gunicorn."""

from __future__ import annotations

import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.conftest import configure_env
from tests.live import retry_counts, wait_until

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


def save_config(live, mm, **extra):
    """Save the test environment's configuration screen as an admin would."""
    admin = live.login()
    page = admin.get(f"{live.url}/env/test/config", timeout=10).text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    form = {
        "csrf_token": token,
        "mirror_channel_id": mm.channels["support"]["id"],
        "notify_type": "booking.created",
        "notify_channel": mm.channels["sales"]["id"],
        **extra,
    }
    response = admin.post(f"{live.url}/env/test/config", timeout=10, data=form)
    assert "Configuration saved." in response.text
    return response


def deliveries_of(mm, post_ids):
    return [d for d in mm.webhook_deliveries if d["payload"]["post_id"] in post_ids]


def test_agent_reply_in_thread_reaches_the_visitor_without_a_loop(live, mm, key):
    conversation_id = start_chat_from_page(live)
    root_post_id = conversation(live, key, conversation_id)["root_post_id"]
    assert root_post_id and mm.get_post(root_post_id)["root_id"] == ""
    support = mm.channels["support"]["id"]
    # With other bots accepted, the from_bot prop no longer filters anything: only the
    # reply-loop guard (the bot's own user id / username) keeps the bridge's own
    # threaded posts from coming back as agent replies.
    save_config(live, mm, accept_other_bots="1")
    try:
        follow_up = requests.post(
            f"{live.url}/chat/test/{conversation_id}/messages",
            data={"text": "Also, is there parking?"},
            headers={"HX-Request": "true"},
            timeout=30,
        )
        assert follow_up.status_code == 200
        settle(live, mm)
        bot_posts = [
            p["id"]
            for p in mm.posts_in(support)
            if root_post_id in (p["id"], p["root_id"]) and p["user_id"] == mm.bot["id"]
        ]
        assert len(bot_posts) == 2  # the root and the threaded follow-up
        # Each fired the hook once; each was answered 200 with nothing to post.
        fired = deliveries_of(mm, bot_posts)
        assert sorted(d["payload"]["post_id"] for d in fired) == sorted(bot_posts)
        assert [(d["status"], d["response_body"], d["response_post_id"]) for d in fired] == [
            (200, "", None)
        ] * 2
        assert [(m["direction"], m["text"]) for m in messages(live, key, conversation_id)] == [
            ("visitor", "Is breakfast included?"),
            ("visitor", "Also, is there parking?"),
        ]

        agent_post = mm.user_post(mm.agent, support, "Yes, from 7 to 10.", root_id=root_post_id)
        settle(live, mm)
        (delivery,) = deliveries_of(mm, {agent_post["id"]})
        assert delivery["content_type"] == "application/x-www-form-urlencoded"
        assert (delivery["status"], delivery["response_body"]) == (200, "")
        assert delivery["response_post_id"] is None  # the bridge made Mattermost post nothing
    finally:
        save_config(live, mm)  # back to ignoring other bots

    found = messages(live, key, conversation_id)
    assert [(m["direction"], m["text"]) for m in found] == [
        ("visitor", "Is breakfast included?"),
        ("visitor", "Also, is there parking?"),
        ("agent", "Yes, from 7 to 10."),
    ]
    assert found[2]["author"] == "Alice Agent"

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


def test_json_hook_with_millisecond_timestamp_stores_the_reply_once(live, mm, key):
    conversation_id = start_chat_from_api(live, key, "json please")
    root = conversation(live, key, conversation_id)["root_post_id"]
    # The admin switches the hook to JSON: Mattermost then sends numbers, and the
    # timestamp in milliseconds (the form sends seconds). The JSON body is the only
    # delivery of this reply, so it must be read and stored, exactly once.
    mm.update_outgoing_webhook(WEBHOOK_TOKEN, content_type="application/json")
    try:
        reply = mm.user_post(mm.agent, mm.channels["support"]["id"], "JSON reply", root_id=root)
        settle(live, mm)
    finally:
        mm.update_outgoing_webhook(WEBHOOK_TOKEN, content_type="application/x-www-form-urlencoded")
    (delivery,) = deliveries_of(mm, {reply["id"]})
    assert delivery["content_type"] == "application/json"
    assert delivery["payload"]["timestamp"] == reply["create_at"]  # ms, a JSON number
    assert (delivery["status"], delivery["response_body"]) == (200, "")
    assert [(m["direction"], m["text"]) for m in messages(live, key, conversation_id)] == [
        ("visitor", "json please"),
        ("agent", "JSON reply"),
    ]


def test_form_and_json_timestamps_are_read_in_their_own_units(live, mm, key):
    """Form timestamps are seconds, JSON ones milliseconds: each is accepted as sent,
    and a JSON timestamp that is not a number is refused with 400, storing nothing."""
    conversation_id = start_chat_from_api(live, key, "units")
    root = conversation(live, key, conversation_id)["root_post_id"]
    support = mm.channels["support"]["id"]
    reply = mm.user_post(mm.agent, mm.channels["town-square"]["id"], "in seconds")
    mm._posts_by_id[reply["id"]].update(root_id=root, channel_id=support)
    form = hook_payload(mm, {**reply, "channel_id": support})
    assert form["timestamp"] == str(reply["create_at"] // 1000)
    bad = {**form, "timestamp": "soon"}
    refused = requests.post(f"{live.url}/hooks/mattermost/test", json=bad, timeout=10)
    assert refused.status_code == 400 and "timestamp" in refused.json()["error"]
    assert len(messages(live, key, conversation_id)) == 1
    stored = requests.post(f"{live.url}/hooks/mattermost/test", data=form, timeout=10)
    assert (stored.status_code, stored.text) == (200, "")
    live.wait_routed()
    assert [m["text"] for m in messages(live, key, conversation_id)] == ["units", "in seconds"]


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
        assert retry_counts(result.stdout)["callbacks"] == {"delivered": 1, "failed": 0}
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
    assert re.search(r"(?<!\d)1 agent reply not routed yet", dashboard)
    result = live.cli("retry", "test", check=False)
    assert retry_counts(result.stdout)["replies"] == {"stored": 1, "ignored": 0, "failed": 0}
    assert [m["text"] for m in messages(live, key, conversation_id)] == [
        "lookup trouble",
        "Parking is free.",
    ]
    assert "replies" not in retry_counts(live.cli("retry", "test", check=False).stdout)  # done
    dashboard = live.login().get(f"{live.url}/", timeout=10).text
    assert "not routed yet" not in dashboard


def test_rate_limited_lookup_is_retried_inline(live, mm, key):
    conversation_id = start_chat_from_api(live, key, "rate limited lookup")
    root = conversation(live, key, conversation_id)["root_post_id"]
    mm.fail_next(1, 429)
    mm.user_post(mm.agent, mm.channels["support"]["id"], "After the limit.", root_id=root)
    settle(live, mm)
    assert [m["text"] for m in messages(live, key, conversation_id)] == [
        "rate limited lookup",
        "After the limit.",
    ]


def test_other_bots_are_ignored_unless_the_admin_accepts_them(live, mm, key):
    conversation_id = start_chat_from_api(live, key, "bot replies")
    root = conversation(live, key, conversation_id)["root_post_id"]
    support = mm.channels["support"]["id"]
    mm.user_post(mm.prod_bot, support, "I am another bot", root_id=root)
    settle(live, mm)
    assert [m["text"] for m in messages(live, key, conversation_id)] == ["bot replies"]

    save_config(live, mm, accept_other_bots="1")
    try:
        mm.user_post(mm.prod_bot, support, "Bots welcome now", root_id=root)
        settle(live, mm)
        assert [m["text"] for m in messages(live, key, conversation_id)] == [
            "bot replies",
            "Bots welcome now",
        ]
    finally:
        save_config(live, mm)  # back to ignoring other bots
