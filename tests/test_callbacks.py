"""bridge/callbacks.py: signed reply callbacks, checked by a real receiver."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time

import pytest
import requests
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from bridge import callbacks
from bridge.callbacks import CallbackSender, sign, verify_signature
from tests.ids import mm_id

SECRET = "callback-secret-0123456789"


class _QuietHandler(WSGIRequestHandler):
    def log(self, type, message, *args):  # werkzeug's signature
        pass


class Receiver:
    """The host's end: checks the signature the way a host would, then answers."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.status = 200
        self.calls: list[dict] = []
        self._server = make_server(
            "127.0.0.1", 0, self._app, threaded=True, request_handler=_QuietHandler
        )
        self.url = f"http://127.0.0.1:{self._server.server_port}/bridge/replies"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def _app(self, environ, start_response):
        request = Request(environ)
        body = request.get_data()
        timestamp = request.headers.get("X-Bridge-Timestamp", "")
        signature = request.headers.get("X-Bridge-Signature", "")
        expected = (
            "sha256="
            + hmac.new(
                self.secret.encode(), f"{timestamp}.{body.decode()}".encode(), hashlib.sha256
            ).hexdigest()
        )
        fresh = timestamp.isdigit() and abs(time.time() - int(timestamp)) < 60
        valid = fresh and hmac.compare_digest(signature, expected)
        self.calls.append(
            {
                "path": request.path,
                "query": request.query_string.decode(),
                "content_type": request.content_type,
                "timestamp": timestamp,
                "signature": signature,
                "body": body,
                "valid": valid,
            }
        )
        status = self.status if valid else 401
        return Response("{}", status, content_type="application/json")(environ, start_response)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@pytest.fixture
def receiver():
    receiver = Receiver(SECRET)
    yield receiver
    receiver.close()


@pytest.fixture
def reply(store, receiver):
    """A stored agent reply waiting for delivery to the receiver."""
    store.update_environment("test", callback_url=receiver.url, callback_secret=SECRET, active=1)
    conversation, _ = store.create_conversation("test", "Ann", "", "order-77", "Hi")
    return store.add_inbound_message(
        env="test",
        conversation_id=conversation["id"],
        direction="agent",
        author="Bo Agent",
        text="Your order ships today.",
        post_id=mm_id("mmpost1"),
        delivery_status="pending",
    )


@pytest.fixture
def sleeps():
    return []


@pytest.fixture
def sender(store, sleeps):
    session = requests.Session()
    yield CallbackSender(store, session=session, sleep=sleeps.append)
    session.close()


# -- sign / verify ------------------------------------------------------------------


def test_sign_is_hmac_sha256_of_timestamp_dot_body():
    body = b'{"a":1}'
    expected = hmac.new(b"s3cret", b'1700000000.{"a":1}', hashlib.sha256).hexdigest()
    assert sign("s3cret", "1700000000", body) == f"sha256={expected}"


def test_verify_signature_accepts_a_fresh_correct_signature():
    now = 1_700_000_000
    body = b'{"x":"y"}'
    signature = sign(SECRET, str(now), body)
    assert verify_signature(SECRET, str(now), body, signature, now=now + 10)


@pytest.mark.parametrize(
    "secret, timestamp, body, now",
    [
        ("wrong-secret", "1700000000", b'{"x":"y"}', 1_700_000_000),
        (SECRET, "1700000000", b'{"x":"z"}', 1_700_000_000),  # tampered body
        (SECRET, "1700000001", b'{"x":"y"}', 1_700_000_000),  # tampered timestamp
        (SECRET, "1700000000", b'{"x":"y"}', 1_700_000_000 + 301),  # too old
        (SECRET, "1700000000", b'{"x":"y"}', 1_700_000_000 - 301),  # from the future
    ],
)
def test_verify_signature_rejects_what_a_host_must_reject(secret, timestamp, body, now):
    signature = sign(SECRET, "1700000000", b'{"x":"y"}')
    assert not verify_signature(secret, timestamp, body, signature, now=now)


def test_verify_signature_rejects_a_timestamp_that_is_not_a_number():
    assert not verify_signature(SECRET, "soon", b"{}", sign(SECRET, "soon", b"{}"))


# -- delivery to a real receiver ------------------------------------------------------


def test_delivery_is_signed_so_the_receiver_can_verify_it(store, receiver, reply, sender):
    before = int(time.time())
    assert sender.deliver(reply["id"]) is True
    after = time.time()
    (call,) = receiver.calls
    assert call["valid"]
    assert call["content_type"] == "application/json"
    assert before <= int(call["timestamp"]) <= after  # the moment it was sent
    assert verify_signature(SECRET, call["timestamp"], call["body"], call["signature"])
    payload = json.loads(call["body"])
    assert payload["event"] == "message.created"
    assert payload["environment"] == "test"
    assert payload["conversation"]["external_id"] == "order-77"
    assert payload["message"]["text"] == "Your order ships today."
    assert payload["message"]["author"] == "Bo Agent"
    assert payload["message"]["created_at"].endswith("Z")
    assert store.message(reply["id"])["delivery_status"] == "delivered"
    (row,) = store.log_page(direction="callback")
    assert row["outcome"] == "ok"
    assert row["http_status"] == 200
    assert row["message_id"] == reply["id"]


def test_a_delivered_reply_is_not_sent_again(store, receiver, reply, sender):
    assert sender.deliver(reply["id"])
    assert sender.deliver(reply["id"]) is False
    assert sender.retry_due() == {"delivered": 0, "failed": 0}
    assert len(receiver.calls) == 1


def test_wrong_secret_is_refused_by_the_receiver_and_kept_failed(store, receiver, reply, sender):
    store.update_environment("test", callback_secret="not-the-shared-secret")
    assert sender.deliver(reply["id"]) is False
    assert receiver.calls[0]["valid"] is False
    assert store.message(reply["id"])["delivery_status"] == "failed"


def test_failing_receiver_leaves_the_delivery_failed_with_a_backoff(store, receiver, reply, sender):
    receiver.status = 500
    before = time.time()
    assert sender.deliver(reply["id"]) is False
    after = time.time()
    message = store.message(reply["id"])
    assert message["delivery_status"] == "failed"
    assert message["delivery_attempts"] == 1
    backoff = callbacks.BACKOFF[0]
    assert before + backoff <= message["next_delivery_at"] <= after + backoff
    (row,) = store.log_page(direction="callback")
    assert row["action"] == "reply_callback"
    assert row["outcome"] == "error"
    assert row["http_status"] == 500
    assert "500" in row["error"]
    assert SECRET not in repr(row)
    # Not due yet: retry_due leaves it alone until the backoff has passed.
    assert sender.retry_due() == {"delivered": 0, "failed": 0}
    assert len(receiver.calls) == 1


def test_backoff_grows_with_each_failed_attempt(store, receiver, reply, sender, sleeps):
    receiver.status = 503
    before = time.time()
    assert sender.deliver(reply["id"], attempts=2) is False
    after = time.time()
    message = store.message(reply["id"])
    assert message["delivery_attempts"] == 2
    backoff = callbacks.BACKOFF[1]
    assert before + backoff <= message["next_delivery_at"] <= after + backoff
    assert len(sleeps) == 1
    assert len(store.log_page(direction="callback")) == 2


def test_a_due_failed_delivery_is_retried_and_delivered(store, receiver, reply, sender):
    receiver.status = 500
    sender.deliver(reply["id"])
    store.finish_delivery(reply["id"], "failed", next_at=time.time() - 1)  # backoff over
    receiver.status = 200
    assert sender.retry_due("test") == {"delivered": 1, "failed": 0}
    assert store.message(reply["id"])["delivery_status"] == "delivered"
    assert len(receiver.calls) == 2


def test_unreachable_callback_url_is_logged_and_failed(store, reply, sender):
    receiver = Receiver(SECRET)
    url = receiver.url
    receiver.close()  # nothing listens there any more
    store.update_environment("test", callback_url=url)
    assert sender.deliver(reply["id"]) is False
    (row,) = store.log_page(direction="callback")
    assert row["outcome"] == "error"
    assert row["http_status"] is None
    assert "cannot reach" in row["error"]
    assert store.message(reply["id"])["delivery_status"] == "failed"


def test_log_target_keeps_only_scheme_host_and_port(store, receiver, reply, sender):
    # Slack- and Zapier-style hook URLs carry their secret in the path or user info.
    url = (
        receiver.url.replace("http://", "http://user:s3cret@") + "/T00/XYZsecret?key=hostapikey123"
    )
    store.update_environment("test", callback_url=url)
    sender.deliver(reply["id"])
    (row,) = store.log_page(direction="callback")
    assert row["target"] == receiver.url.split("/bridge")[0]
    for secret in ("hostapikey123", "s3cret", "XYZsecret"):
        assert secret not in repr(row)


def test_closing_event_is_delivered_as_conversation_closed(store, receiver, sender):
    store.update_environment("test", callback_url=receiver.url, callback_secret=SECRET)
    conversation, _ = store.create_conversation("test", "Ann", "", "", "Hi")
    store.close_conversation(conversation["id"])
    event = store.add_inbound_message(
        env="test",
        conversation_id=conversation["id"],
        direction="event",
        author="Bo",
        text="Bo closed the conversation.",
        post_id=mm_id("pclose"),
        delivery_status="pending",
    )
    assert sender.deliver(event["id"])
    payload = json.loads(receiver.calls[0]["body"])
    assert payload["event"] == "conversation.closed"
    assert payload["conversation"]["status"] == "closed"


def test_removed_callback_url_ends_the_delivery_without_a_call(store, receiver, reply, sender):
    store.update_environment("test", callback_url="")
    assert sender.deliver(reply["id"]) is True
    assert receiver.calls == []
    assert store.message(reply["id"])["delivery_status"] == ""
