"""bridge/sender.py: persist -> post -> log, retries, split, pending_post_id."""

from __future__ import annotations

import itertools
import re

import pytest
import requests
import requests_mock as rm

from bridge import mattermost as mm
from bridge import sender as sender_module
from bridge.sender import ConversationClosed, Sender
from bridge.store import Store
from tests.ids import mm_id
from tests.test_text import mattermost_mentions

SERVER = "https://chat.example.com"
TOKEN = "b0tt0ken5ecret0123456789ab"
POSTS = f"{SERVER}/api/v4/posts"
MIRROR = "mirrorchannelid0000000000a"
ORDERS = "orderschannelid00000000000"
JSON = {"Content-Type": "application/json", "X-Version-Id": "9.11.0.9.11.0.abc.false"}


def app_error(status: int, message: str = "error") -> dict:
    return {
        "id": f"test.{status}.app_error",
        "message": message,
        "detailed_error": "",
        "request_id": "req",
        "status_code": status,
    }


def failure(status: int, message: str = "error") -> dict:
    return {"status_code": status, "json": app_error(status, message), "headers": JSON}


@pytest.fixture
def env(store):
    return store.update_environment(
        "test",
        server_url=SERVER,
        bot_token=TOKEN,
        bot_user_id=mm_id("botuserid"),
        bot_username="bridgebot",
        mirror_channel_id=MIRROR,
        mirror_channel_name="Support",
        active=1,
        notify_map={"order": ORDERS},
    )


@pytest.fixture
def session():
    return requests.Session()


def thread_of(root: dict, *replies: dict) -> dict:
    """GET /posts/{id}/thread's PostList: the root and its replies, newest first."""
    posts = [root, *replies][::-1]
    return {"order": [p["id"] for p in posts], "posts": {p["id"]: p for p in posts}}


def root_post(post_id: str) -> dict:
    return {"id": post_id, "root_id": "", "channel_id": MIRROR, "message": "root", "props": {}}


@pytest.fixture
def mock(session):
    with rm.Mocker(session=session) as mocker:
        # A retry first asks whether Mattermost already has the post: by default it has
        # not, so a thread holds only its root, and the channel nothing new.
        json_headers = {"X-Version-Id": "9.11.0", "Content-Type": "application/json"}
        mocker.get(
            re.compile(r".*/api/v4/posts/[^/]+/thread$"),
            json=lambda request, context: thread_of(root_post(request.path.split("/")[-2])),
            headers=json_headers,
        )
        mocker.get(
            re.compile(r".*/api/v4/channels/[^/]+/posts"),
            json={"order": [], "posts": {}},
            headers=json_headers,
        )
        yield mocker


@pytest.fixture
def sleeps():
    return []


@pytest.fixture
def sender(store, session, sleeps, env):
    return Sender(store, session=session, sleep=sleeps.append, retry_budget=8.0)


_ids = itertools.count(1)


def created(request, context):
    """Mattermost's 201 answer to POST /posts: the post with a new id."""
    context.status_code = 201
    context.headers.update(JSON)
    body = request.json()
    return {"id": f"post{next(_ids):022d}", "root_id": "", **body}


def posted(mock) -> list[dict]:
    return [request.json() for request in mock.request_history if request.method == "POST"]


# -- threads ----------------------------------------------------------------------


def test_new_conversation_becomes_a_root_post_and_the_next_message_a_reply(mock, sender, store):
    mock.post(POSTS, json=created)
    conversation, first = sender.start_conversation("test", "Ann", "Hello there")
    assert first["status"] == "sent"
    assert conversation["root_post_id"] == first["post_id"]
    assert conversation["channel_id"] == MIRROR

    reply = sender.add_visitor_message("test", conversation["id"], "Anyone?")
    assert reply["status"] == "sent"

    root_body, reply_body = posted(mock)
    assert "root_id" not in root_body
    assert root_body["channel_id"] == MIRROR
    assert "Ann" in root_body["message"] and "Hello there" in root_body["message"]
    assert reply_body["root_id"] == conversation["root_post_id"]
    assert reply_body["channel_id"] == MIRROR
    assert "Anyone?" in reply_body["message"]
    assert reply_body["props"] == {
        "bridge_message_id": str(reply["id"]),
        "bridge_key": reply["pending_key"],
        "bridge_part": "0",
    }


def test_every_post_carries_a_pending_post_id_from_the_message(mock, sender, store):
    mock.post(POSTS, json=created)
    _, message = sender.start_conversation("test", "Ann", "Hello")
    assert posted(mock)[0]["pending_post_id"] == f"{message['pending_key']}:0"


def test_text_over_the_post_limit_is_split_into_posts_in_order(mock, sender, store):
    mock.post(POSTS, json=created)
    text = " ".join(f"w{i:05d}" for i in range(7000))  # about 49,000 characters
    conversation, message = sender.start_conversation("test", "Ann", text)

    bodies = posted(mock)
    assert len(bodies) >= 3
    assert all(len(body["message"]) <= mm.MAX_POST_SIZE for body in bodies)
    assert "".join(body["message"] for body in bodies) == sender_module.format_message(
        message, is_root=True
    )
    assert "root_id" not in bodies[0]
    root = conversation["root_post_id"]
    assert all(body["root_id"] == root for body in bodies[1:])
    assert len({body["pending_post_id"] for body in bodies}) == len(bodies)
    assert message["status"] == "sent"
    assert len(message["chunk_post_ids"]) == len(bodies)
    assert message["post_id"] == message["chunk_post_ids"][0] == root


def test_long_reply_parts_all_stay_in_the_conversation_thread(mock, sender, store):
    mock.post(POSTS, json=created)
    conversation, _ = sender.start_conversation("test", "Ann", "Hi")
    reply = sender.add_visitor_message("test", conversation["id"], "z" * 20000)
    bodies = posted(mock)[1:]
    assert len(bodies) == 2
    assert all(body["root_id"] == conversation["root_post_id"] for body in bodies)
    assert reply["status"] == "sent"
    # The reply's first part does not become the conversation's thread root.
    assert store.conversation(conversation["id"])["root_post_id"] == conversation["root_post_id"]


# -- mentions ---------------------------------------------------------------------


def test_visitor_mentions_never_reach_mattermost_verbatim(mock, sender):
    mock.post(POSTS, json=created)
    conversation, _ = sender.start_conversation("test", "@all Eve", "@channel help, @here!")
    sender.add_visitor_message("test", conversation["id"], "still there @john?")
    for body in posted(mock):
        for mention in ("@channel", "@here", "@all", "@john"):
            assert mention not in body["message"]
        assert mattermost_mentions(body["message"]) == set()


def test_splitting_never_starts_a_post_with_a_live_mention(mock, sender):
    # "a@channel" is not a mention, so it is left alone; a hard cut right
    # before the "@" must not turn the next part into "@channel ...".
    mock.post(POSTS, json=created)
    prefix = len(
        sender_module.format_message(
            {"direction": "visitor", "author": "Eve", "text": ""}, is_root=True
        )
    )
    text = "a" * (mm.MAX_POST_SIZE - prefix) + "@channel look at this"
    sender.start_conversation("test", "Eve", text)
    bodies = posted(mock)
    assert len(bodies) == 2
    for body in bodies:
        assert mattermost_mentions(body["message"]) == set()


# -- failures ---------------------------------------------------------------------


def test_403_fails_the_message_naming_the_bot_and_channel_and_how_to_fix(mock, sender, store):
    mock.post(POSTS, **failure(403, "You do not have the appropriate permissions."))
    conversation, message = sender.start_conversation("test", "Ann", "Hello")
    assert message["status"] == "failed"
    assert "@bridgebot" in message["error"]
    assert "Support" in message["error"]
    assert "add it" in message["error"]
    assert len(mock.request_history) == 1  # not retried: it cannot succeed
    assert conversation["root_post_id"] == ""


def test_403_for_an_unnamed_channel_names_the_channel_id(mock, sender, store):
    mock.post(POSTS, **failure(403))
    message = sender.notify("test", "order", "New order #12")
    assert message["status"] == "failed"
    assert ORDERS in message["error"]
    assert "@bridgebot" in message["error"]


def test_401_fails_the_message_saying_the_token_is_bad(mock, sender):
    mock.post(POSTS, **failure(401, "Invalid or expired session, please login again."))
    _, message = sender.start_conversation("test", "Ann", "Hello")
    assert message["status"] == "failed"
    assert "token" in message["error"]
    assert len(mock.request_history) == 1


def test_429_then_201_is_sent_after_sleeping_retry_after(mock, sender, sleeps):
    mock.post(
        POSTS,
        [
            {
                "status_code": 429,
                "text": "limit exceeded\n",
                "headers": {
                    "Retry-After": "3",
                    "X-RateLimit-Reset": "3",
                    "Content-Type": "text/plain",
                },
            },
            {"json": created},
        ],
    )
    _, message = sender.start_conversation("test", "Ann", "Hello")
    assert message["status"] == "sent"
    assert sleeps == [3.0]
    assert len(mock.request_history) == 2


def test_429_longer_than_the_budget_is_not_waited_for(mock, sender, sleeps):
    mock.post(POSTS, status_code=429, text="limit exceeded", headers={"Retry-After": "60"})
    _, message = sender.start_conversation("test", "Ann", "Hello")
    assert message["status"] == "failed"
    assert sleeps == []
    assert "429" in message["error"]


def test_500s_fail_within_the_retry_budget_then_retry_sends_once_with_the_same_pending_id(
    mock, sender, sleeps, store
):
    mock.post(POSTS, **failure(500, "Unable to save the post."))
    conversation, message = sender.start_conversation("test", "Ann", "Hello")
    assert message["status"] == "failed"
    assert "500" in message["error"]
    failed_calls = posted(mock)
    assert len(failed_calls) == sender_module.MAX_ATTEMPTS
    assert sum(sleeps) < sender.retry_budget
    pending_ids = {body["pending_post_id"] for body in failed_calls}
    assert len(pending_ids) == 1

    mock.reset_mock()
    mock.post(POSTS, json=created)
    counts = sender.retry_failed()
    assert counts == {"sent": 1, "failed": 0, "skipped": 0}
    retried = posted(mock)
    assert len(retried) == 1
    assert retried[0]["pending_post_id"] in pending_ids
    message = store.message(message["id"])
    assert message["status"] == "sent"
    assert message["error"] == ""
    assert store.conversation(conversation["id"])["root_post_id"] == message["post_id"]

    mock.reset_mock()
    assert sender.retry_failed() == {"sent": 0, "failed": 0, "skipped": 0}
    assert mock.call_count == 0


def test_a_small_retry_budget_stops_retrying_early(mock, store, session, env):
    sleeps: list[float] = []
    sender = Sender(store, session=session, sleep=sleeps.append, retry_budget=1.0)
    mock.post(POSTS, **failure(503))
    _, message = sender.start_conversation("test", "Ann", "Hello")
    assert message["status"] == "failed"
    assert sum(sleeps) < 1.0
    assert len(mock.request_history) == len(sleeps) + 1 < sender_module.MAX_ATTEMPTS


def test_unreachable_server_fails_with_the_cause_and_is_kept(mock, sender, store):
    mock.post(POSTS, exc=requests.exceptions.ConnectionError)
    _, message = sender.start_conversation("test", "Ann", "Hello")
    assert message["status"] == "failed"
    assert "cannot reach chat.example.com" in message["error"]
    assert store.message(message["id"])["text"] == "Hello"
    assert store.failed_message_ids("test") == [message["id"]]


def test_a_reply_whose_root_failed_earlier_posts_the_root_first(mock, sender, store):
    mock.post(POSTS, **failure(500))
    conversation, first = sender.start_conversation("test", "Ann", "First words")
    assert first["status"] == "failed"

    mock.reset_mock()
    mock.post(POSTS, json=created)
    reply = sender.add_visitor_message("test", conversation["id"], "Second words")
    assert reply["status"] == "sent"
    root_body, reply_body = posted(mock)
    assert "First words" in root_body["message"] and "root_id" not in root_body
    assert "Second words" in reply_body["message"]
    conversation = store.conversation(conversation["id"])
    assert reply_body["root_id"] == conversation["root_post_id"] != ""
    assert store.message(first["id"])["status"] == "sent"


def test_a_reply_fails_when_its_root_still_cannot_be_posted(mock, sender, store):
    mock.post(POSTS, **failure(403))
    conversation, _ = sender.start_conversation("test", "Ann", "First")
    reply = sender.add_visitor_message("test", conversation["id"], "Second")
    assert reply["status"] == "failed"
    assert reply["error"] == (
        "the conversation's first message is not posted yet: 403: @bridgebot is not a member "
        f"of channel Support ({MIRROR}) — add it to the channel (/invite @bridgebot) and try again."
    )
    assert all("root_id" not in body for body in posted(mock))


def test_retry_of_a_split_message_continues_with_the_missing_part(mock, sender, store):
    mock.post(POSTS, [{"json": created}] + [failure(500)] * sender_module.MAX_ATTEMPTS)
    conversation, message = sender.start_conversation("test", "Ann", "y" * 20000)
    assert message["status"] == "failed"
    assert len(message["chunk_post_ids"]) == 1
    # The thread is known as soon as its first part is posted, before the rest fails.
    assert conversation["root_post_id"] == message["chunk_post_ids"][0]

    mock.reset_mock()
    mock.post(POSTS, json=created)
    first_part = {
        "id": message["chunk_post_ids"][0],
        "root_id": "",
        "props": {"bridge_key": message["pending_key"], "bridge_part": "0"},
    }
    mock.get(
        f"{SERVER}/api/v4/posts/{first_part['id']}/thread",
        json=thread_of(first_part),  # the first part is the thread's root
        headers={"X-Version-Id": "9.11.0", "Content-Type": "application/json"},
    )
    assert sender.retry_failed("test")["sent"] == 1
    (second_part,) = posted(mock)
    assert second_part["pending_post_id"] == f"{message['pending_key']}:1"
    assert second_part["root_id"] == message["chunk_post_ids"][0]
    # The second part continues the root's own text, not a reply's "Ann:" prefix.
    assert second_part["message"].startswith("y") and "Ann" not in second_part["message"]
    assert len(store.message(message["id"])["chunk_post_ids"]) == 2


def test_retry_after_a_lost_answer_finds_the_post_in_the_thread_and_posts_nothing(
    mock, sender, store
):
    mock.post(POSTS, json=created)
    conversation, _ = sender.start_conversation("test", "Ann", "Hi")
    mock.post(POSTS, exc=requests.exceptions.ConnectionError)  # the answer is lost
    reply = sender.add_visitor_message("test", conversation["id"], "Are you there?")
    assert reply["status"] == "failed"
    # ... but Mattermost had created it: the thread holds a post with its props.
    landed = {
        "id": "x" * 26,
        "root_id": conversation["root_post_id"],
        "props": {"bridge_key": reply["pending_key"], "bridge_part": "0"},
    }
    mock.get(
        f"{SERVER}/api/v4/posts/{conversation['root_post_id']}/thread",
        json=thread_of(root_post(conversation["root_post_id"]), landed),
        headers={"X-Version-Id": "9.11.0", "Content-Type": "application/json"},
    )
    mock.reset_mock()
    mock.post(POSTS, json=created)
    assert sender.retry_failed("test")["sent"] == 1
    assert posted(mock) == []
    assert store.message(reply["id"])["post_id"] == "x" * 26


@pytest.mark.parametrize(
    "second_worker",
    [
        pytest.param(lambda other, message_id: other.retry_failed("test"), id="flask retry"),
        pytest.param(lambda other, message_id: other.deliver(message_id), id="deliver"),
    ],
)
def test_two_workers_retrying_one_failed_message_at_once_post_it_once(
    mock, sender, store, session, second_worker
):
    mock.post(POSTS, json=created)
    conversation, _ = sender.start_conversation("test", "Ann", "Hi")
    mock.post(POSTS, **failure(500))
    reply = sender.add_visitor_message("test", conversation["id"], "Hello?")
    assert reply["status"] == "failed"
    # Another worker, with its own connection, starts its retry exactly while
    # this worker's post of the same message is on its way to Mattermost.
    other_store = Store(store.path)
    other = Sender(other_store, session=session, sleep=lambda seconds: None)
    in_flight: list[dict] = []

    def post_while_the_other_worker_retries(request, context):
        if not in_flight:
            in_flight.append(request.json())
            second_worker(other, reply["id"])
        return created(request, context)

    mock.reset_mock()
    mock.post(POSTS, json=post_while_the_other_worker_retries)
    sender.retry_failed("test")
    other_store.close()
    bodies = [body for body in posted(mock) if "Hello?" in body["message"]]
    assert len(bodies) == 1
    assert store.message(reply["id"])["status"] == "sent"


def test_visitor_cannot_write_to_a_closed_conversation(mock, sender, store):
    mock.post(POSTS, json=created)
    conversation, _ = sender.start_conversation("test", "Ann", "Hi")
    store.close_conversation(conversation["id"])
    with pytest.raises(ConversationClosed):
        sender.add_visitor_message("test", conversation["id"], "Hello?")
    assert len(posted(mock)) == 1


def test_no_mirror_channel_fails_with_a_reason(mock, sender, store):
    store.update_environment("test", mirror_channel_id="")
    _, message = sender.start_conversation("test", "Ann", "Hi")
    assert message["status"] == "failed"
    assert message["error"] == "no mirror channel is configured for this environment"
    assert mock.call_count == 0


# -- skipped ------------------------------------------------------------------------


def test_inactive_environment_skips_with_a_reason_and_no_http_call(mock, sender, store):
    store.update_environment("test", active=0)
    _, message = sender.start_conversation("test", "Ann", "Hello")
    assert message["status"] == "skipped"
    assert message["reason"] == "environment is inactive"
    assert mock.call_count == 0
    (row,) = store.log_page(env="test")
    assert row["outcome"] == "ignored"
    assert "inactive" in row["error"]
    assert row["message_id"] == message["id"]


def test_retry_leaves_failed_messages_of_an_inactive_environment_alone(mock, sender, store):
    mock.post(POSTS, **failure(500))
    _, message = sender.start_conversation("test", "Ann", "Hello")
    store.update_environment("test", active=0)
    mock.reset_mock()
    assert sender.retry_failed() == {"sent": 0, "failed": 0, "skipped": 1}
    assert mock.call_count == 0
    assert store.message(message["id"])["status"] == "failed"


def test_unmapped_notification_type_is_skipped_naming_the_type(mock, sender, store):
    message = sender.notify("test", "refund", "Refund requested")
    assert message["status"] == "skipped"
    assert "refund" in message["reason"]
    assert mock.call_count == 0
    (row,) = store.log_page(env="test")
    assert row["outcome"] == "ignored"
    assert "refund" in row["error"]


def test_mapped_notification_is_sent_to_its_channel_as_given(mock, sender):
    mock.post(POSTS, json=created)
    message = sender.notify("test", "order", "New order #42 from @bob")
    assert message["status"] == "sent"
    assert message["channel_id"] == ORDERS
    (body,) = posted(mock)
    assert body["channel_id"] == ORDERS
    assert "root_id" not in body
    assert body["message"] == "New order #42 from @bob"


# -- the integration log --------------------------------------------------------------


def test_every_attempt_leaves_one_log_row_without_the_token(mock, sender, store):
    mock.post(POSTS, [failure(500), failure(502), {"json": created}])
    conversation, message = sender.start_conversation("test", "Ann", "Hello")
    assert message["status"] == "sent"
    rows = store.log_page(env="test")
    assert len(rows) == 3 == mock.call_count
    assert [row["http_status"] for row in reversed(rows)] == [500, 502, 201]
    assert [row["outcome"] for row in reversed(rows)] == ["error", "error", "ok"]
    for row in rows:
        assert row["direction"] == "outbound"
        assert row["action"] == "post"
        assert row["target"] == MIRROR
        assert row["message_id"] == message["id"]
        assert row["conversation_id"] == conversation["id"]
        assert TOKEN not in repr(row)
    assert rows[0]["post_id"] == message["post_id"]


def test_failed_send_log_rows_never_hold_the_token(mock, sender, store):
    mock.post(POSTS, **failure(401, "Invalid or expired session, please login again."))
    sender.start_conversation("test", "Ann", "Hello")
    sender.notify("test", "order", "x")
    rows = store.log_page()
    assert len(rows) == 2
    assert all(row["outcome"] == "error" and row["http_status"] == 401 for row in rows)
    assert all(TOKEN not in repr(row) for row in rows)


# -- test message ----------------------------------------------------------------------


def test_test_message_returns_a_permalink(mock, sender):
    mock.post(POSTS, json=created)
    result = sender.send_test_message("test")
    assert result.ok
    body = posted(mock)[0]
    assert result.permalink.startswith(f"{SERVER}/_redirect/pl/post")
    assert body["channel_id"] == MIRROR


def test_test_message_explains_a_403(mock, sender, store):
    mock.post(POSTS, **failure(403))
    result = sender.send_test_message("test")
    assert not result.ok
    assert "@bridgebot" in result.error and "Support" in result.error
    assert store.log_page()[0]["action"] == "test_message"


def test_test_message_needs_a_configured_environment(mock, store, session):
    result = Sender(store, session=session).send_test_message("production")
    assert not result.ok
    assert "authentication" in result.error
    assert mock.call_count == 0


def test_root_post_retried_late_is_found_among_the_channels_recent_posts(mock, sender, store):
    mock.post(POSTS, exc=requests.exceptions.ReadTimeout)  # posted, but the answer was lost
    conversation, message = sender.start_conversation("test", "Ann", "Hello?")
    assert message["status"] == "failed"
    landed = {
        "id": "r" * 26,
        "root_id": "",
        "channel_id": MIRROR,
        "props": {"bridge_key": message["pending_key"], "bridge_part": "0"},
    }
    mock.get(
        f"{SERVER}/api/v4/channels/{MIRROR}/posts",
        json={"order": [landed["id"]], "posts": {landed["id"]: landed}},
        headers={"X-Version-Id": "9.11.0", "Content-Type": "application/json"},
    )
    mock.reset_mock()
    mock.post(POSTS, json=created)
    assert sender.retry_failed("test")["sent"] == 1
    assert posted(mock) == []
    assert store.conversation(conversation["id"])["root_post_id"] == "r" * 26
    since = int(mock.request_history[0].qs["since"][0])
    # From just before the message was stored: it cannot have been posted earlier.
    assert message["created_at"] * 1000 - 5000 <= since <= message["created_at"] * 1000


def test_conversation_begun_while_inactive_is_mirrored_after_activation(mock, sender, store):
    store.update_environment("test", active=0)
    conversation, first = sender.start_conversation("test", "Ann", "Anyone there?")
    assert first["status"] == "skipped"
    store.update_environment("test", active=1)
    mock.post(POSTS, json=created)
    reply = sender.add_visitor_message("test", conversation["id"], "Hello again")
    assert reply["status"] == "sent"
    root, second = posted(mock)
    assert "root_id" not in root and "Anyone there?" in root["message"]
    assert second["root_id"] == store.conversation(conversation["id"])["root_post_id"]


def test_retry_leaves_a_message_another_run_is_sending_to_that_run(
    mock, sender, store, monkeypatch
):
    mock.post(POSTS, **failure(403))
    _, message = sender.start_conversation("test", "Ann", "Hello")
    assert message["status"] == "failed"
    listed = store.failed_message_ids

    def listed_then_taken(env=None, **kwargs):
        ids = listed(env, **kwargs)
        assert store.claim_message(message["id"])  # another run takes it right after
        return ids

    monkeypatch.setattr(store, "failed_message_ids", listed_then_taken)
    mock.reset_mock()
    mock.post(POSTS, json=created)
    assert sender.retry_failed("test") == {"sent": 0, "failed": 0, "skipped": 0}
    assert mock.call_count == 0
    assert store.message(message["id"])["status"] == "sending"  # still the other run's


# -- found by mutation testing (make mutate) ---------------------------------------------


def test_errors_name_the_channel_by_its_saved_name(mock, sender, store):
    store.update_environment("test", channel_names={ORDERS: "Acme / Orders", MIRROR: "Acme / Help"})
    mock.post(POSTS, **failure(403))
    message = sender.notify("test", "order", "New order #12")
    assert message["error"] == (
        f"403: @bridgebot is not a member of channel Acme / Orders ({ORDERS}) — add it to the "
        "channel (/invite @bridgebot) and try again."
    )
    # The mirror channel's own saved name wins over the one kept for the mirror setting.
    _, first = sender.start_conversation("test", "Ann", "Hello")
    assert f"channel Acme / Help ({MIRROR})" in first["error"]


def test_errors_for_an_unknown_bot_and_channel_say_so_plainly(mock, sender, store):
    store.update_environment("test", bot_username="", mirror_channel_name="")
    mock.post(POSTS, **failure(403))
    message = sender.notify("test", "order", "New order #12")
    assert message["error"] == (
        f"403: the bot is not a member of channel {ORDERS} — add it to the channel "
        "(/invite the bot) and try again."
    )
    mock.post(POSTS, **failure(401))
    _, first = sender.start_conversation("test", "Ann", "Hello")
    assert (
        first["error"] == "401: the bot token is invalid or has been revoked — create a new token."
    )


def test_retry_of_one_environment_leaves_the_other_alone(mock, sender, store):
    store.update_environment(
        "production",
        server_url=SERVER,
        bot_token=TOKEN,
        mirror_channel_id=MIRROR,
        active=1,
    )
    mock.post(POSTS, **failure(500))
    sender.start_conversation("production", "Pia", "Hello from production")
    sender.start_conversation("test", "Ann", "Hello from test")
    mock.reset_mock()
    mock.post(POSTS, json=created)
    assert sender.retry_failed("test") == {"sent": 1, "failed": 0, "skipped": 0}
    assert ["Hello from test" in body["message"] for body in posted(mock)] == [True]
    assert len(store.failed_message_ids("production")) == 1


def test_retry_counts_every_message_and_goes_on_after_an_inactive_one(mock, sender, store):
    store.update_environment(
        "production", server_url=SERVER, bot_token=TOKEN, active=1, mirror_channel_id=MIRROR
    )
    mock.post(POSTS, **failure(500))
    for name in ("Pia", "Paul"):
        sender.start_conversation("production", name, "Hello")  # retried first: oldest
    for name in ("Ann", "Bo"):
        sender.start_conversation("test", name, "Hello")
    store.update_environment("production", active=0)
    mock.reset_mock()
    mock.post(POSTS, json=created)
    assert sender.retry_failed() == {"sent": 2, "failed": 0, "skipped": 2}
    assert store.failed_message_ids("test") == []


def test_every_mattermost_call_carries_the_senders_timeout(mock, store, session, env):
    sender = Sender(store, session=session, sleep=lambda s: None, timeout=(1.5, 4.0))
    mock.post(POSTS, exc=requests.exceptions.ReadTimeout)
    sender.start_conversation("test", "Ann", "Hello")  # failed: the retry looks first
    mock.post(POSTS, json=created)
    sender.retry_failed("test")
    assert sender.send_test_message("test").ok
    assert len(mock.request_history) >= 3
    assert {request.timeout for request in mock.request_history} == {(1.5, 4.0)}


def test_the_servers_own_post_size_decides_where_text_is_split(mock, sender, store):
    store.update_environment("test", max_post_size=4000)
    mock.post(POSTS, json=created)
    sender.notify("test", "order", "z" * 4001)
    assert [len(body["message"]) for body in posted(mock)] == [4000, 1]


def test_retry_after_a_lost_answer_continues_after_every_part_that_landed(mock, sender, store):
    # Three parts; the first two reached Mattermost but the answer to the second was lost.
    mock.post(
        POSTS,
        [{"json": created}, {"exc": requests.exceptions.ConnectionError}]
        + [failure(500)] * sender_module.MAX_ATTEMPTS,
    )
    message = sender.notify("test", "order", "y" * 40000)
    assert message["status"] == "failed" and len(message["chunk_post_ids"]) == 1
    root = message["chunk_post_ids"][0]
    landed = [
        {
            "id": root,
            "root_id": "",
            "props": {"bridge_key": message["pending_key"], "bridge_part": "0"},
        },
        {
            "id": "l" * 26,
            "root_id": root,
            "props": {"bridge_key": message["pending_key"], "bridge_part": "1"},
        },
        {
            "id": "o" * 26,
            "root_id": root,
            "props": {"bridge_key": "another-key", "bridge_part": "2"},
        },
    ]
    mock.get(
        f"{SERVER}/api/v4/posts/{root}/thread",
        json={"order": [p["id"] for p in landed], "posts": {p["id"]: p for p in landed}},
        headers=JSON,
    )
    mock.reset_mock()
    mock.post(POSTS, json=created)
    assert sender.retry_failed("test")["sent"] == 1
    (third,) = posted(mock)
    assert third["pending_post_id"] == f"{message['pending_key']}:2"
    assert store.message(message["id"])["chunk_post_ids"][:2] == [root, "l" * 26]


def test_a_skipped_message_is_logged_as_an_ignored_post_to_its_channel(mock, sender, store):
    store.update_environment("test", active=0)
    conversation, message = sender.start_conversation("test", "Ann", "Hello")
    notification = sender.notify("test", "order", "New order")
    rows = store.log_page(env="test")
    assert [
        (r["direction"], r["action"], r["target"], r["conversation_id"], r["message_id"])
        for r in reversed(rows)
    ] == [
        ("outbound", "post", "", conversation["id"], message["id"]),
        ("outbound", "post", ORDERS, "", notification["id"]),
    ]


def test_test_message_explains_what_is_missing_without_calling_mattermost(mock, store, session):
    sender = Sender(store, session=session)
    store.update_environment("test", server_url=SERVER)
    result = sender.send_test_message("test")
    assert (result.ok, result.error) == (
        False,
        "Fill in and verify the authentication screen first.",
    )
    store.update_environment("test", bot_token=TOKEN)
    result = sender.send_test_message("test")
    assert (result.ok, result.error) == (False, "Choose a mirror channel and save first.")
    assert mock.call_count == 0


def test_test_message_says_what_it_is_and_where_it_went(mock, sender):
    mock.post(POSTS, json=created)
    result = sender.send_test_message("test")
    (body,) = posted(mock)
    assert body["message"] == (
        "Mattermost Bridge test message from the **test** environment. "
        "If you can read this, the bot can post here."
    )
    assert (result.ok, result.error) == (True, "")
    assert result.channel == f"channel Support ({MIRROR})"
    mock.post(POSTS, **failure(403))
    failed = sender.send_test_message("test")
    assert failed.ok is False and failed.error.startswith("403: @bridgebot")


def test_an_unexpected_error_leaves_the_message_failed_not_stuck_sending(mock, sender, store):
    def broken(request, context):
        raise ValueError("a bug somewhere below the sender")

    mock.post(POSTS, json=broken)
    with pytest.raises(ValueError):
        sender.start_conversation("test", "Ann", "Hello")
    (message_id,) = store.failed_message_ids("test")
    message = store.message(message_id)
    assert (message["status"], message["error"]) == ("failed", "unexpected error while sending")


def test_messages_remember_the_channel_they_went_to_or_failed_in(mock, sender, store):
    mock.post(POSTS, json=created)
    _, sent = sender.start_conversation("test", "Ann", "Hello")
    mock.post(POSTS, **failure(500))
    _, failed = sender.start_conversation("test", "Bo", "Hello")
    assert (sent["status"], sent["channel_id"]) == ("sent", MIRROR)
    assert (failed["status"], failed["channel_id"]) == ("failed", MIRROR)


def test_a_split_reply_retried_continues_in_the_conversations_thread(mock, sender, store):
    mock.post(POSTS, json=created)
    conversation, _ = sender.start_conversation("test", "Ann", "Hello")
    mock.post(POSTS, [{"json": created}] + [failure(500)] * sender_module.MAX_ATTEMPTS)
    reply = sender.add_visitor_message("test", conversation["id"], "y" * 20000)
    assert reply["status"] == "failed" and len(reply["chunk_post_ids"]) == 1
    mock.reset_mock()
    mock.post(POSTS, json=created)
    assert sender.retry_failed("test")["sent"] == 1
    (second,) = posted(mock)
    assert second["root_id"] == conversation["root_post_id"]
    assert second["pending_post_id"] == f"{reply['pending_key']}:1"


def test_500s_are_retried_after_half_a_second_one_second_then_two(mock, sender, sleeps):
    mock.post(POSTS, **failure(500))
    sender.start_conversation("test", "Ann", "Hello")
    assert sleeps == [0.5, 1.0, 2.0]


def test_the_visitors_name_is_written_on_one_line_with_single_spaces(mock, sender):
    mock.post(POSTS, json=created)
    conversation, _ = sender.start_conversation("test", "Ann  Marie\nSmith", "Hello")
    sender.add_visitor_message("test", conversation["id"], "Still there?")
    root, reply = posted(mock)
    assert root["message"] == "**Ann Marie Smith** started a web chat:\nHello"
    assert reply["message"] == "**Ann Marie Smith:** Still there?"
    sender.start_conversation("test", " \t ", "Hi")
    assert posted(mock)[-1]["message"] == "**Visitor** started a web chat:\nHi"
