"""bridge/inbound.py InboundRouter: what one outgoing-webhook call means, Mattermost mocked.

Every decision goes through the router's public entry points (``webhook_call``
below), with payloads and posts shaped like the real server's, and
26-character ids from Mattermost's own alphabet.
"""

from __future__ import annotations

import hashlib

import pytest
import requests
import requests_mock as rm

from bridge.callbacks import CallbackSender
from bridge.inbound import USER_CACHE_SECONDS, InboundRouter, WebhookPayload, display_name
from bridge.store import Store
from tests.snapshot import dump_tables

SERVER = "https://chat.example.com"
MM_JSON = {"X-Version-Id": "9.11.0.9.11.0.abc.false", "Content-Type": "application/json"}
# model.NewId()'s alphabet (server/public/model/utils.go): base32, lowercase, 26 characters.
ALPHABET = "ybndrfg8ejkmcpqxot1uwisza345h769"


def mm_id(name: str) -> str:
    """A real-shaped Mattermost id, the same for the same name."""
    digest = hashlib.sha256(name.encode()).digest()
    return "".join(ALPHABET[byte % 32] for byte in digest[:26])


HOOK_TOKEN = mm_id("outgoing webhook token")
BOT_TOKEN = mm_id("bot access token")
BOT_ID, BOT_NAME = mm_id("bridge-bot"), "bridge-bot"
AGENT_ID, AGENT_NAME = mm_id("alice"), "alice"
TEAM = mm_id("team acme")
MIRROR = mm_id("channel support")
OTHER_CHANNEL = mm_id("channel random")
ROOT = mm_id("root post of the conversation")


@pytest.fixture
def settings(store):
    return store.update_environment(
        "test",
        server_url=SERVER,
        bot_token=BOT_TOKEN,
        bot_user_id=BOT_ID,
        bot_username=BOT_NAME,
        bot_is_bot=1,
        webhook_token=HOOK_TOKEN,
        mirror_channel_id=MIRROR,
        mirror_channel_name="Acme / Support",
        active=1,
    )


@pytest.fixture
def conversation(store, settings):
    """A mirrored conversation: its first message is the thread's root post."""
    conversation, first = store.create_conversation("test", "Vera", "", "", "Hello")
    store.set_conversation_root(conversation["id"], ROOT, MIRROR)
    store.finish_message(first["id"], "sent", channel_id=MIRROR, post_ids=[ROOT])
    return store.conversation(conversation["id"])


@pytest.fixture
def session():
    return requests.Session()


@pytest.fixture
def mattermost(session):
    with rm.Mocker(session=session) as mocker:
        yield mocker


@pytest.fixture
def router(store, session):
    return InboundRouter(store, session=session, sleep=lambda seconds: None)


def payload(post_id: str, *, text: str = "", **fields) -> WebhookPayload:
    """An outgoing-webhook call as Mattermost sends it (form-encoded, seconds)."""
    values = {
        "token": HOOK_TOKEN,
        "team_id": TEAM,
        "team_domain": "acme",
        "channel_id": MIRROR,
        "channel_name": "support",
        "timestamp": 1_760_000_000.0,
        "user_id": AGENT_ID,
        "user_name": AGENT_NAME,
        "post_id": post_id,
        "text": text,
        "trigger_word": "",
    }
    return WebhookPayload(**{**values, **fields})


def webhook_call(router: InboundRouter, env: str, call: WebhookPayload):
    """One webhook call, routed to the end: what the route and the work after its answer do.

    The inbox (issue 8) splits ``handle`` into ``accept`` (the call) and
    ``route_kept`` (after the answer, on what the call read); the decisions
    tested here are the same.
    """
    if not hasattr(router, "accept"):
        return router.handle(env, call)
    outcome = router.accept(env, call)
    if outcome.routing is None:
        return outcome
    return router.route_kept(outcome.routing)


def serve_post(mattermost, post_id: str, message: str, *, user_id=AGENT_ID, root_id=ROOT, **props):
    """``GET /api/v4/posts/{id}`` answers with the post as the server stores it."""
    post = {
        "id": post_id,
        "create_at": 1_760_000_000_000,
        "update_at": 1_760_000_000_000,
        "edit_at": 0,
        "delete_at": 0,
        "is_pinned": False,
        "user_id": user_id,
        "channel_id": MIRROR,
        "root_id": root_id,
        "original_id": "",
        "message": message,
        "type": "",
        "props": props,
        "hashtags": "",
        "pending_post_id": "",
        "reply_count": 1,
        "metadata": {},
    }
    mattermost.get(f"{SERVER}/api/v4/posts/{post_id}", json=post, headers=MM_JSON)
    return post


def serve_user(mattermost, user_id: str = AGENT_ID, **fields):
    """``GET /api/v4/users/{id}``: the fields a display name is made of."""
    user = {
        "id": user_id,
        "username": AGENT_NAME,
        "first_name": "",
        "last_name": "",
        "nickname": "",
        "is_bot": False,
        **fields,
    }
    mattermost.get(f"{SERVER}/api/v4/users/{user_id}", json=user, headers=MM_JSON)


def replies(store, conversation) -> list[tuple[str, str, str]]:
    """What the bridge stored from Mattermost: (direction, author, text)."""
    return [
        (m["direction"], m["author"], m["text"])
        for m in store.messages_after(conversation["id"])
        if m["direction"] != "visitor"
    ]


def everything_but_the_log(store, *also: str) -> dict[str, list[str]]:
    return dump_tables(store.path, skip=("log", "sqlite_sequence", *also))


# -- a stored reply, for contrast with what is refused ---------------------------------


def test_an_agents_reply_in_a_mirrored_thread_is_stored(router, store, mattermost, conversation):
    post_id = mm_id("reply")
    serve_post(mattermost, post_id, "We do serve breakfast.")
    serve_user(mattermost, first_name="Alice", last_name="Smith")
    outcome = webhook_call(router, "test", payload(post_id, text="We do serve breakfast."))
    assert (outcome.http_status, outcome.outcome) == (200, "ok")
    assert replies(store, conversation) == [("agent", "Alice Smith", "We do serve breakfast.")]
    (row,) = store.log_page(env="test", direction="inbound")
    assert (row["outcome"], row["post_id"]) == ("ok", post_id)
    assert row["conversation_id"] == conversation["id"]


# -- the webhook token ------------------------------------------------------------------


@pytest.mark.parametrize(
    "saved, sent",
    [
        pytest.param(HOOK_TOKEN, mm_id("another hook's token"), id="another token"),
        pytest.param(HOOK_TOKEN, HOOK_TOKEN[:-1] + "x", id="last character differs"),
        pytest.param(HOOK_TOKEN, HOOK_TOKEN[:13], id="a prefix"),
        pytest.param(HOOK_TOKEN, HOOK_TOKEN + "x", id="a longer one"),
        pytest.param("", HOOK_TOKEN, id="no token saved yet"),
    ],
)
def test_a_token_mismatch_answers_403_and_stores_nothing(
    router, store, mattermost, conversation, saved, sent
):
    store.update_environment("test", webhook_token=saved)
    post_id = mm_id("reply")
    serve_post(mattermost, post_id, "Hi, I am Alice")
    serve_user(mattermost)
    before = everything_but_the_log(store)
    outcome = webhook_call(router, "test", payload(post_id, token=sent, text="Hi, I am Alice"))
    assert (outcome.http_status, outcome.outcome) == (403, "rejected")
    assert outcome.reason.startswith("token mismatch")
    assert everything_but_the_log(store) == before
    assert mattermost.call_count == 0  # refused before any lookup
    (row,) = store.log_page(env="test")
    assert (row["outcome"], row["http_status"]) == ("rejected", 403)
    assert "token mismatch" in row["error"]
    assert sent not in repr(row) and HOOK_TOKEN not in repr(row)


# -- the reply-loop guard ---------------------------------------------------------------


def the_bots_reply(mattermost, post_id: str, message: str):
    """A post the bridge's bot made in the thread: REST posts by a bot carry from_bot.

    server/channels/app/post.go (CreatePost): ``if user.IsBot { AddProp(from_bot, "true") }``.
    """
    serve_post(mattermost, post_id, message, user_id=BOT_ID, from_bot="true")
    serve_user(mattermost, BOT_ID, username=BOT_NAME, is_bot=True)


# With other bots accepted, the loop guard is all that stops the bridge's own posts.
OTHER_BOTS = pytest.mark.parametrize(
    "accept_other_bots", [0, 1], ids=["other bots refused", "other bots accepted"]
)


@OTHER_BOTS
@pytest.mark.parametrize(
    "user_id, user_name",
    [
        pytest.param(BOT_ID, "renamed-bot", id="the bot's user id alone"),
        pytest.param(mm_id("a re-created bot"), BOT_NAME, id="the bot's username alone"),
    ],
)
def test_the_loop_guard_ignores_the_bots_own_posts_by_id_or_by_name(
    router, store, mattermost, conversation, accept_other_bots, user_id, user_name
):
    store.update_environment("test", accept_other_bots=accept_other_bots)
    post_id = mm_id("bot follow-up")
    the_bots_reply(mattermost, post_id, "**Vera:** Are you still there?")
    before = everything_but_the_log(store)
    outcome = webhook_call(
        router,
        "test",
        payload(post_id, user_id=user_id, user_name=user_name, text="**Vera:** Are you there?"),
    )
    assert (outcome.http_status, outcome.outcome) == (200, "ignored")
    assert outcome.reason == "post by the bridge's own bot (reply-loop guard)"
    assert everything_but_the_log(store) == before
    assert mattermost.call_count == 0  # every mirrored message fires the hook: no lookup


@OTHER_BOTS
def test_the_bots_threaded_follow_up_and_close_notice_are_never_stored(
    router, store, mattermost, conversation, accept_other_bots
):
    store.update_environment("test", accept_other_bots=accept_other_bots)
    # The bot mirrors the visitor's next message into the thread; the hook fires for it.
    follow_up = mm_id("mirrored visitor message")
    the_bots_reply(mattermost, follow_up, "**Vera:** Is breakfast included?")
    webhook_call(router, "test", payload(follow_up, user_id=BOT_ID, user_name=BOT_NAME))
    # The agent closes the conversation; the bot confirms in the thread over REST.
    close = mm_id("agent closes")
    serve_post(mattermost, close, "!close")
    serve_user(mattermost, first_name="Alice")
    notice = mm_id("close notice")
    mattermost.post(f"{SERVER}/api/v4/posts", status_code=201, json={"id": notice}, headers=MM_JSON)
    assert webhook_call(router, "test", payload(close, text="!close")).outcome == "ok"
    (notice_request,) = [r for r in mattermost.request_history if r.method == "POST"]
    assert notice_request.json()["root_id"] == ROOT
    # ... and the hook fires for the notice too.
    the_bots_reply(mattermost, notice, notice_request.json()["message"])
    outcome = webhook_call(router, "test", payload(notice, user_id=BOT_ID, user_name=BOT_NAME))
    assert outcome.outcome == "ignored"
    assert replies(store, conversation) == [("event", "Alice", "Alice closed the conversation.")]
    assert store.conversation(conversation["id"])["status"] == "closed"


# -- other bots and integrations ---------------------------------------------------------


@pytest.mark.parametrize("prop", ["from_bot", "from_webhook", "from_plugin"])
def test_posts_marked_as_from_a_bot_webhook_or_plugin_are_ignored(
    router, store, mattermost, conversation, prop
):
    # An incoming webhook posts under its creator's own (human) account: only the prop tells.
    post_id = mm_id(f"integration post {prop}")
    serve_post(mattermost, post_id, "Build 1234 passed", **{prop: "true"})
    serve_user(mattermost, first_name="Alice")
    before = everything_but_the_log(store, "inbox")  # where issue 8 keeps every call
    outcome = webhook_call(router, "test", payload(post_id, text="Build 1234 passed"))
    assert (outcome.http_status, outcome.outcome, outcome.reason) == (
        200,
        "ignored",
        "post by another bot or integration",
    )
    assert everything_but_the_log(store, "inbox") == before

    # The admin's "accept other bots" lets the next such post through.
    store.update_environment("test", accept_other_bots=1)
    next_post = mm_id(f"next integration post {prop}")
    serve_post(mattermost, next_post, "Build 1235 passed", **{prop: "true"})
    assert webhook_call(router, "test", payload(next_post, text="Build 1235")).outcome == "ok"
    assert replies(store, conversation) == [("agent", "Alice", "Build 1235 passed")]


def test_a_post_by_another_bot_account_without_props_is_ignored(
    router, store, mattermost, conversation
):
    post_id = mm_id("other bot")
    other_bot = mm_id("helpdesk-bot")
    serve_post(mattermost, post_id, "Ticket #12 opened", user_id=other_bot)
    serve_user(mattermost, other_bot, username="helpdesk-bot", is_bot=True)
    outcome = webhook_call(
        router, "test", payload(post_id, user_id=other_bot, user_name="helpdesk-bot", text="Ticket")
    )
    assert (outcome.http_status, outcome.outcome, outcome.reason) == (
        200,
        "ignored",
        "post by another bot or integration",
    )
    assert replies(store, conversation) == []


# -- the post is looked up, not trusted ---------------------------------------------------


@pytest.mark.parametrize(
    "sent, posted, stored",
    [
        pytest.param("forged", "We do serve breakfast.", "agent", id="reply"),
        pytest.param("!close", "Thanks, bye for now", "agent", id="payload says close"),
        pytest.param("note: internal", "Visible to the visitor", "agent", id="payload says note"),
        pytest.param("Visible to the visitor", "note: internal", "note", id="post says note"),
        pytest.param("Thanks", "!close", "event", id="post says close"),
    ],
)
def test_the_text_and_its_meaning_come_from_the_fetched_post(
    router, store, mattermost, conversation, sent, posted, stored
):
    post_id = mm_id("reply")
    serve_post(mattermost, post_id, posted)
    serve_user(mattermost, first_name="Alice")
    notice = {"id": mm_id("close notice")}  # what a close posts in the thread
    mattermost.post(f"{SERVER}/api/v4/posts", status_code=201, json=notice, headers=MM_JSON)
    assert webhook_call(router, "test", payload(post_id, text=sent)).outcome == "ok"
    ((direction, _, text),) = replies(store, conversation)
    assert direction == stored
    assert text == (posted if stored != "event" else "Alice closed the conversation.")
    closed = store.conversation(conversation["id"])["status"] == "closed"
    assert closed == (stored == "event")


def test_a_thread_is_found_from_the_posts_root_not_the_payload(
    router, store, mattermost, conversation
):
    post_id = mm_id("reply elsewhere")
    serve_post(mattermost, post_id, "Hello", root_id=mm_id("some other thread"))
    outcome = webhook_call(router, "test", payload(post_id, text="Hello"))
    assert outcome.reason == "reply in a thread that is not a mirrored conversation"
    assert replies(store, conversation) == []


# -- the agent's display name -------------------------------------------------------------


@pytest.mark.parametrize(
    "user, user_name, expected",
    [
        pytest.param(
            {"first_name": "Ada", "last_name": "Lovelace", "nickname": "Countess"},
            AGENT_NAME,
            "Ada Lovelace",
            id="first and last name",
        ),
        pytest.param({"first_name": "Ada"}, AGENT_NAME, "Ada", id="first name only"),
        pytest.param({"last_name": "Lovelace"}, AGENT_NAME, "Lovelace", id="last name only"),
        pytest.param({"nickname": "Countess"}, AGENT_NAME, "Countess", id="nickname"),
        pytest.param({"username": "ada.l"}, "stale-name", "ada.l", id="username"),
        pytest.param({"username": ""}, "alice", "alice", id="the payload's user_name"),
        pytest.param(None, "alice", "alice", id="lookup fails: the payload's user_name"),
        pytest.param(None, "", "Agent", id="lookup fails, no user_name"),
    ],
)
def test_the_agent_is_named_by_display_name_with_fallbacks(
    router, store, mattermost, conversation, user, user_name, expected
):
    post_id = mm_id("reply")
    serve_post(mattermost, post_id, "Hello Vera")
    if user is None:
        mattermost.get(
            f"{SERVER}/api/v4/users/{AGENT_ID}",
            status_code=500,
            json={"id": "app.user.get.app_error", "message": "boom", "status_code": 500},
            headers=MM_JSON,
        )
    else:
        serve_user(mattermost, **user)
    webhook_call(router, "test", payload(post_id, user_name=user_name, text="Hello Vera"))
    assert replies(store, conversation) == [("agent", expected, "Hello Vera")]


def test_display_name_prefers_full_name_then_nickname_then_username():
    assert display_name({"first_name": "Ada", "last_name": "Lovelace"}) == "Ada Lovelace"
    assert display_name({"nickname": "Countess", "username": "ada"}) == "Countess"
    assert display_name({"username": "ada"}) == "ada"
    assert display_name({}) == ""


def test_the_agents_name_is_looked_up_once_an_hour(router, store, mattermost, conversation):
    assert USER_CACHE_SECONDS == 3600
    for n in range(3):
        post_id = mm_id(f"reply {n}")
        serve_post(mattermost, post_id, f"Reply {n}")
    serve_user(mattermost, first_name="Alice")
    for n in range(3):
        webhook_call(router, "test", payload(mm_id(f"reply {n}"), text=f"Reply {n}"))
    lookups = [r for r in mattermost.request_history if "/users/" in r.path]
    assert len(lookups) == 1
    assert [author for _, author, _ in replies(store, conversation)] == ["Alice"] * 3


# -- replies whose lookup failed are kept and routed later -------------------------------


def lookup_fails(mattermost, post_id: str, status: int = 503):
    mattermost.get(
        f"{SERVER}/api/v4/posts/{post_id}",
        status_code=status,
        json={"id": "app.post.get.app_error", "message": "down", "status_code": status},
        headers=MM_JSON,
    )


def test_a_reply_whose_lookup_fails_is_kept_and_routed_once_by_retry(
    router, store, mattermost, conversation
):
    post_id = mm_id("reply while Mattermost is down")
    lookup_fails(mattermost, post_id)
    outcome = webhook_call(router, "test", payload(post_id, text="We do serve breakfast."))
    assert (outcome.http_status, outcome.outcome) == (200, "error")
    assert replies(store, conversation) == []
    assert store.count_queued_inbound("test") == 1

    serve_post(mattermost, post_id, "We do serve breakfast.")
    serve_user(mattermost, first_name="Alice")
    assert router.retry_queued() == {"stored": 1, "ignored": 0, "failed": 0}
    assert replies(store, conversation) == [("agent", "Alice", "We do serve breakfast.")]
    assert store.count_queued_inbound("test") == 0
    mattermost.reset_mock()
    assert router.retry_queued() == {"stored": 0, "ignored": 0, "failed": 0}
    assert mattermost.call_count == 0


def test_a_kept_reply_still_failing_stays_kept(router, store, mattermost, conversation):
    post_id = mm_id("reply while Mattermost is down")
    lookup_fails(mattermost, post_id)
    webhook_call(router, "test", payload(post_id, text="Hello"))
    assert router.retry_queued("test") == {"stored": 0, "ignored": 0, "failed": 1}
    assert store.count_queued_inbound("test") == 1
    assert replies(store, conversation) == []
    retried = [r for r in store.log_page(env="test") if r["action"] == "webhook_retry"]
    assert [(r["outcome"], r["post_id"]) for r in retried] == [("error", post_id)]
    # Failed twice now: it waits (30 s) before the next try.
    mattermost.reset_mock()
    assert router.retry_queued("test") == {"stored": 0, "ignored": 0, "failed": 0}
    assert mattermost.call_count == 0


def test_a_kept_reply_deleted_meanwhile_is_dropped(router, store, mattermost, conversation):
    post_id = mm_id("reply deleted later")
    lookup_fails(mattermost, post_id)
    webhook_call(router, "test", payload(post_id, text="Oops"))
    lookup_fails(mattermost, post_id, status=404)
    assert router.retry_queued("test") == {"stored": 0, "ignored": 1, "failed": 0}
    assert store.count_queued_inbound("test") == 0
    assert replies(store, conversation) == []


def test_kept_replies_wait_while_their_environment_is_inactive(
    router, store, mattermost, conversation
):
    post_id = mm_id("reply before deactivation")
    lookup_fails(mattermost, post_id)
    webhook_call(router, "test", payload(post_id, text="Hello"))
    store.update_environment("test", active=0)
    serve_post(mattermost, post_id, "Hello")
    serve_user(mattermost, first_name="Alice")
    mattermost.reset_mock()
    assert router.retry_queued() == {"stored": 0, "ignored": 0, "failed": 0}
    assert mattermost.call_count == 0
    assert store.count_queued_inbound("test") == 1
    store.update_environment("test", active=1)
    assert router.retry_queued() == {"stored": 1, "ignored": 0, "failed": 0}
    assert replies(store, conversation) == [("agent", "Alice", "Hello")]


def test_a_kept_reply_routed_later_is_called_back_to_the_host(
    store, session, mattermost, conversation
):
    store.update_environment(
        "test", callback_url="https://host.example.com/replies", callback_secret="s" * 32
    )
    host = mattermost.post("https://host.example.com/replies", status_code=503)
    router = InboundRouter(
        store,
        session=session,
        callbacks=CallbackSender(store, session=session, sleep=lambda seconds: None),
        sleep=lambda seconds: None,
    )
    post_id = mm_id("reply while Mattermost is down")
    lookup_fails(mattermost, post_id)
    webhook_call(router, "test", payload(post_id, text="Hello"))
    assert host.call_count == 0
    serve_post(mattermost, post_id, "Hello Vera")
    serve_user(mattermost, first_name="Alice")
    router.retry_queued()
    assert host.call_count == 1  # once: the worker retries later with growing delays
    assert host.last_request.json()["message"]["text"] == "Hello Vera"


# -- every decision, as the log and the answer show it (found by make mutate) ------------


def reply_in_thread(mattermost, post_id):
    serve_post(mattermost, post_id, "Hello")
    serve_user(mattermost, first_name="Alice")


IGNORED = [
    pytest.param(
        lambda store, mattermost, post_id: store.update_environment("test", active=0),
        {},
        "environment is inactive",
        id="inactive environment",
    ),
    pytest.param(
        lambda store, mattermost, post_id: reply_in_thread(mattermost, post_id),
        {"channel_id": OTHER_CHANNEL},
        "not the mirror channel",
        id="another channel",
    ),
    pytest.param(
        lambda store, mattermost, post_id: lookup_fails(mattermost, post_id, status=404),
        {},
        "the post is gone (deleted before it was looked up)",
        id="deleted post",
    ),
    pytest.param(
        lambda store, mattermost, post_id: serve_post(mattermost, post_id, "Hi all", root_id=""),
        {},
        "top-level post, not a reply in a mirrored thread",
        id="top-level post",
    ),
    pytest.param(
        lambda store, mattermost, post_id: serve_post(
            mattermost, post_id, "Hi", root_id=mm_id("another thread")
        ),
        {},
        "reply in a thread that is not a mirrored conversation",
        id="unmirrored thread",
    ),
]


@pytest.mark.parametrize("setup, fields, reason", IGNORED)
def test_each_call_that_is_not_a_reply_is_answered_200_ignored_with_its_reason(
    router, store, mattermost, conversation, setup, fields, reason
):
    post_id = mm_id("not a reply")
    setup(store, mattermost, post_id)
    outcome = webhook_call(router, "test", payload(post_id, text="Hello", **fields))
    assert (outcome.http_status, outcome.outcome, outcome.reason) == (200, "ignored", reason)
    assert replies(store, conversation) == []
    (row,) = [r for r in store.log_page(env="test") if r["direction"] == "inbound"]
    assert (row["outcome"], row["http_status"], row["error"]) == ("ignored", 200, reason)
    assert (row["post_id"], row["action"], row["conversation_id"]) == (post_id, "webhook", "")


def test_a_repeated_delivery_is_stored_once(router, store, mattermost, conversation):
    post_id = mm_id("reply")
    reply_in_thread(mattermost, post_id)
    first = webhook_call(router, "test", payload(post_id, text="Hello"))
    again = webhook_call(router, "test", payload(post_id, text="Hello"))
    assert (first.http_status, first.outcome) == (200, "ok")
    assert (again.http_status, again.outcome, again.reason) == (
        200,
        "ignored",
        "duplicate delivery: post already stored",
    )
    assert replies(store, conversation) == [("agent", "Alice", "Hello")]
    lookups = [r for r in mattermost.request_history if r.path.endswith(post_id)]
    assert len(lookups) == 1  # a post already stored is not looked up again


@pytest.mark.parametrize(
    "text, direction, reason",
    [
        ("Hello Vera", "agent", "agent reply stored"),
        ("note: she asked twice", "note", "internal note, not shown to the visitor"),
        ("!close", "event", "conversation closed by the agent"),
    ],
)
def test_a_stored_reply_is_logged_with_its_message_and_conversation(
    router, store, mattermost, conversation, text, direction, reason
):
    post_id = mm_id("reply")
    serve_post(mattermost, post_id, text)
    serve_user(mattermost, first_name="Alice")
    mattermost.post(
        f"{SERVER}/api/v4/posts", status_code=201, json={"id": mm_id("n")}, headers=MM_JSON
    )
    outcome = webhook_call(router, "test", payload(post_id, text=text))
    assert (outcome.http_status, outcome.outcome, outcome.reason) == (200, "ok", reason)
    (message,) = [
        m for m in store.messages_after(conversation["id"]) if m["direction"] != "visitor"
    ]
    assert message["direction"] == direction
    assert message["delivery_status"] == ""  # no callback URL: nothing to deliver
    (row,) = [r for r in store.log_page(env="test") if r["direction"] == "inbound"]
    assert (row["outcome"], row["error"], row["target"]) == ("ok", reason, MIRROR)
    assert (row["message_id"], row["conversation_id"]) == (message["id"], conversation["id"])


def test_closing_says_so_in_the_thread(router, store, mattermost, conversation):
    post_id = mm_id("close")
    serve_post(mattermost, post_id, "!close")
    serve_user(mattermost, first_name="Alice")
    notice = mattermost.post(
        f"{SERVER}/api/v4/posts", status_code=201, json={"id": mm_id("notice")}, headers=MM_JSON
    )
    webhook_call(router, "test", payload(post_id, text="!close"))
    assert notice.last_request.json() == {
        "channel_id": MIRROR,
        "message": "Conversation closed. The visitor sees that it has ended.",
        "root_id": ROOT,
    }
    actions = [r["action"] for r in store.log_page(env="test") if r["direction"] == "outbound"]
    assert "close_notice" in actions


@pytest.mark.parametrize(
    "answers, sleeps, outcome",
    [
        pytest.param([503, 200], [0.5], "ok", id="5xx: once more after half a second"),
        pytest.param([429, 200], [1.0], "ok", id="429: waits Retry-After when short"),
        pytest.param([429], [], "error", id="429: a long Retry-After is not waited for"),
        pytest.param([403], [], "error", id="403: not worth a second try"),
    ],
)
def test_a_failed_lookup_is_tried_once_more_only_when_worth_it(
    store, session, mattermost, conversation, answers, sleeps, outcome
):
    waited: list[float] = []
    router = InboundRouter(store, session=session, sleep=waited.append)
    post_id = mm_id("reply")
    serve_user(mattermost, first_name="Alice")
    responses = []
    for status in answers:
        if status == 200:
            post = serve_post(mattermost, post_id, "Hello")
            responses.append({"json": post, "headers": MM_JSON})
        else:
            retry_after = "1" if len(answers) > 1 else "5"
            responses.append(
                {
                    "status_code": status,
                    "json": {"id": "x", "message": "no", "status_code": status},
                    "headers": {**MM_JSON, "Retry-After": retry_after},
                }
            )
    mattermost.get(f"{SERVER}/api/v4/posts/{post_id}", responses)
    result = webhook_call(router, "test", payload(post_id, text="Hello"))
    assert result.outcome == outcome
    assert waited == sleeps
    lookups = [r for r in mattermost.request_history if r.path.endswith(post_id)]
    assert len(lookups) == len(answers)
    if outcome == "error":
        assert result.reason.startswith("cannot look the post up: ")
        assert store.count_queued_inbound("test") == 1


def test_another_bot_stays_ignored_once_its_account_is_cached(
    router, store, mattermost, conversation
):
    other_bot = mm_id("helpdesk-bot")
    serve_user(mattermost, other_bot, username="helpdesk-bot", is_bot=True)
    for n in range(2):
        serve_post(mattermost, mm_id(f"bot post {n}"), f"Ticket #{n}", user_id=other_bot)
        outcome = webhook_call(
            router, "test", payload(mm_id(f"bot post {n}"), user_id=other_bot, user_name="helpdesk")
        )
        assert outcome.reason == "post by another bot or integration"
    assert len([r for r in mattermost.request_history if "/users/" in r.path]) == 1
    assert replies(store, conversation) == []


def test_a_user_with_no_name_at_all_is_called_agent(router, store, mattermost, conversation):
    post_id = mm_id("reply")
    serve_post(mattermost, post_id, "Hello")
    serve_user(mattermost, username="")
    webhook_call(router, "test", payload(post_id, user_name="", text="Hello"))
    assert replies(store, conversation) == [("agent", "Agent", "Hello")]


@pytest.mark.parametrize("text", ["Hello Vera", "!close"])
def test_a_reply_is_called_back_to_the_host_right_away_with_one_retry(
    store, session, mattermost, conversation, text
):
    store.update_environment(
        "test", callback_url="https://host.example.com/replies", callback_secret="s" * 32
    )
    host = mattermost.post("https://host.example.com/replies", status_code=503)
    mattermost.post(
        f"{SERVER}/api/v4/posts", status_code=201, json={"id": mm_id("n")}, headers=MM_JSON
    )
    router = InboundRouter(
        store,
        session=session,
        callbacks=CallbackSender(store, session=session, sleep=lambda seconds: None),
    )
    post_id = mm_id("reply")
    serve_post(mattermost, post_id, text)
    serve_user(mattermost, first_name="Alice")
    webhook_call(router, "test", payload(post_id, text=text))
    assert host.call_count == 2  # INLINE_ATTEMPTS; then the worker takes over


def test_a_note_is_never_called_back_to_the_host(store, session, mattermost, conversation):
    store.update_environment(
        "test", callback_url="https://host.example.com/replies", callback_secret="s" * 32
    )
    host = mattermost.post("https://host.example.com/replies", status_code=204)
    router = InboundRouter(store, session=session, callbacks=CallbackSender(store, session=session))
    post_id = mm_id("note")
    serve_post(mattermost, post_id, "note: internal")
    serve_user(mattermost, first_name="Alice")
    webhook_call(router, "test", payload(post_id, text="note: internal"))
    assert host.call_count == 0
    (note,) = [m for m in store.messages_after(conversation["id"]) if m["direction"] == "note"]
    assert note["delivery_status"] == ""


def test_retry_of_one_environment_routes_only_its_own_kept_replies(
    router, store, mattermost, conversation
):
    store.update_environment(
        "production",
        server_url=SERVER,
        bot_token=BOT_TOKEN,
        bot_user_id=mm_id("production bot"),
        bot_username="bridge-bot-prod",
        webhook_token=HOOK_TOKEN,
        mirror_channel_id=MIRROR,
        active=1,
    )
    kept = {env: [mm_id(f"{env} reply {n}") for n in range(2)] for env in ("production", "test")}
    for env, post_ids in kept.items():
        for post_id in post_ids:
            lookup_fails(mattermost, post_id)
            webhook_call(router, env, payload(post_id, text="Hello"))
    for post_id in kept["test"] + kept["production"]:
        serve_post(mattermost, post_id, "Hello")
    serve_user(mattermost, first_name="Alice")
    store.update_environment("production", active=0)
    assert router.retry_queued("test") == {"stored": 2, "ignored": 0, "failed": 0}
    assert store.count_queued_inbound("production") == 2
    store.update_environment("production", active=1)
    assert router.retry_queued("test") == {"stored": 0, "ignored": 0, "failed": 0}
    assert store.count_queued_inbound("production") == 2


def test_an_inactive_environments_kept_replies_do_not_hold_up_the_others(
    router, store, mattermost, conversation
):
    store.update_environment(
        "production",
        webhook_token=HOOK_TOKEN,
        mirror_channel_id=MIRROR,
        active=1,
        server_url=SERVER,
        bot_token=BOT_TOKEN,
    )
    first = mm_id("production reply, kept first")
    lookup_fails(mattermost, first)
    webhook_call(router, "production", payload(first, text="Hello"))
    second = mm_id("test reply, kept second")
    lookup_fails(mattermost, second)
    webhook_call(router, "test", payload(second, text="Hello"))
    store.update_environment("production", active=0)
    serve_post(mattermost, second, "Hello")
    serve_user(mattermost, first_name="Alice")
    assert router.retry_queued() == {"stored": 1, "ignored": 0, "failed": 0}
    assert replies(store, conversation) == [("agent", "Alice", "Hello")]


def test_the_webhook_routes_default_callbacks_reach_the_host(
    store, session, mattermost, conversation, requests_mock
):
    # The route builds its router without a CallbackSender: the default one must work.
    store.update_environment(
        "test", callback_url="https://host.example.com/replies", callback_secret="s" * 32
    )
    host = requests_mock.post("https://host.example.com/replies", status_code=204)
    router = InboundRouter(store, session=session)
    post_id = mm_id("reply")
    serve_post(mattermost, post_id, "Hello Vera")
    serve_user(mattermost, first_name="Alice")
    webhook_call(router, "test", payload(post_id, text="Hello Vera"))
    assert host.call_count == 1


def test_two_routers_racing_over_one_post_store_it_once(store, session, mattermost, conversation):
    post_id = mm_id("reply")
    serve_post(mattermost, post_id, "Hello")
    other_store = Store(store.path)
    other = InboundRouter(other_store, session=session, sleep=lambda seconds: None)
    router = InboundRouter(store, session=session, sleep=lambda seconds: None)
    outcomes, started = [], []

    def user_while_the_other_router_runs(request, context):
        # The first router is past its duplicate check; the second one runs now.
        if not started:
            started.append(True)
            outcomes.append(webhook_call(other, "test", payload(post_id, text="Hello")))
        return {"id": AGENT_ID, "username": AGENT_NAME, "first_name": "Alice", "is_bot": False}

    mattermost.get(
        f"{SERVER}/api/v4/users/{AGENT_ID}", json=user_while_the_other_router_runs, headers=MM_JSON
    )
    outcomes.append(webhook_call(router, "test", payload(post_id, text="Hello")))
    other_store.close()
    assert sorted((o.http_status, o.outcome, o.reason) for o in outcomes) == [
        (200, "ignored", "duplicate delivery: post already stored"),
        (200, "ok", "agent reply stored"),
    ]
    assert replies(store, conversation) == [("agent", "Alice", "Hello")]


def test_close_on_a_closed_conversation_is_not_a_second_close(
    router, store, mattermost, conversation
):
    first, second = mm_id("close one"), mm_id("close two")
    serve_post(mattermost, first, "!close")
    serve_post(mattermost, second, "!close")
    serve_user(mattermost, first_name="Alice")
    mattermost.post(
        f"{SERVER}/api/v4/posts", status_code=201, json={"id": mm_id("n")}, headers=MM_JSON
    )
    # The second agent's notice (ephemeral, else a DM) may be refused here: it is
    # best effort and logged; what matters is that nothing closes twice.
    mattermost.post(f"{SERVER}/api/v4/posts/ephemeral", status_code=403, json={}, headers=MM_JSON)
    mattermost.post(f"{SERVER}/api/v4/channels/direct", status_code=403, json={}, headers=MM_JSON)
    assert webhook_call(router, "test", payload(first, text="!close")).outcome == "ok"
    outcome = webhook_call(router, "test", payload(second, text="!close"))
    assert (outcome.outcome, outcome.reason) == (
        "ignored",
        "reply to a closed conversation: the agent is told privately",
    )
    assert replies(store, conversation) == [("event", "Alice", "Alice closed the conversation.")]
