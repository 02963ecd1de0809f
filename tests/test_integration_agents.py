"""Agents work from Mattermost, end to end under gunicorn: buttons and /bridge (issue 10).

The stand-in does what Mattermost does (tests/standin.py click_action,
run_slash_command): the bridge's answers are applied to its posts as the
server applies them.
"""

from __future__ import annotations

import re

import pytest
import requests

from bridge.actions import CLOSE_CONFIRMATION
from tests.conftest import configure_env
from tests.live import wait_until

pytestmark = pytest.mark.integration
WEBHOOK_TOKEN = "test-webhook-token-0123456"


@pytest.fixture(scope="module")
def key(live, mm):
    command_token = mm.add_slash_command("bridge", f"{live.url}/hooks/mattermost/test/command")
    key = configure_env(live, mm, extra=("--command-token", command_token))
    mm.add_outgoing_webhook(
        mm.channels["support"]["id"], f"{live.url}/hooks/mattermost/test", token=WEBHOOK_TOKEN
    )
    return key


def start_chat(live, key, name="Vera", text="Is breakfast included?"):
    response = live.api(
        "POST", "/api/v1/conversations", key, json={"visitor": {"name": name}, "text": text}
    )
    assert response.status_code == 201, response.text
    return response.json()


def conversation(live, key, conversation_id):
    return live.api("GET", f"/api/v1/conversations/{conversation_id}", key).json()


def buttons_of(post):
    """(state note, action ids) of the bridge's attachment on a post."""
    (attachment,) = [a for a in post["props"].get("attachments", []) if a.get("actions")]
    return attachment["text"], [action["id"] for action in attachment["actions"]]


def stored(live, sql, params=()):
    return live.query(sql, params)


def test_new_root_post_has_claim_and_close_and_clients_never_see_the_integration(live, mm, key):
    started = start_chat(live, key)
    post = mm.get_post(started["root_post_id"])
    assert buttons_of(post) == ("*open, not claimed yet*", ["claim", "close"])
    action = post["props"]["attachments"][-1]["actions"][0]
    assert action["integration"]["url"] == f"{live.url}/hooks/mattermost/test/action"
    assert action["integration"]["context"]["conversation_id"] == started["id"]
    # What a Mattermost client reads: the URL and the context are stripped.
    seen = requests.get(
        f"{mm.url}/api/v4/posts/{started['root_post_id']}",
        headers={"Authorization": f"Bearer {mm.agent['token']}"},
        timeout=10,
    ).json()
    for action in seen["props"]["attachments"][-1]["actions"]:
        assert "integration" not in action


def test_agent_claims_then_closes_by_button_and_the_visitor_sees_it_closed(live, mm, key):
    session = requests.Session()
    page = session.post(
        f"{live.url}/chat/test/start",
        data={"name": "Vera", "email": "", "text": "Can I bring a dog?"},
        timeout=30,
    )
    conversation_id = re.search(r"[?&]c=([a-z0-9]{26})", page.url).group(1)
    root_id = conversation(live, key, conversation_id)["root_post_id"]
    root_message = mm.get_post(root_id)["message"]

    answer = mm.click_action(mm.agent, root_id, "claim")
    assert answer["update"]["message"] == root_message
    post = mm.get_post(root_id)
    assert post["message"] == root_message  # the update kept the text
    assert buttons_of(post) == ("*claimed by @alice*", ["claim", "close"])
    assert conversation(live, key, conversation_id)["assignee"] == "@alice"

    mm.click_action(mm.agent, root_id, "close")
    post = mm.get_post(root_id)
    assert post["message"] == root_message
    assert buttons_of(post) == ("*closed by @alice*", ["reopen"])
    assert conversation(live, key, conversation_id)["status"] == "closed"
    # The same close as !close: the event, the confirmation in the thread.
    events = stored(
        live,
        "SELECT author, text FROM messages WHERE conversation_id = ? AND direction = 'event'",
        [conversation_id],
    )
    assert events == [{"author": "alice", "text": "alice closed the conversation."}]
    wait_until(
        lambda: [
            p
            for p in mm.posts_in(mm.channels["support"]["id"])
            if p["root_id"] == root_id and p["message"] == CLOSE_CONFIRMATION
        ],
        what="the close confirmation in the thread",
    )
    visitor_page = session.get(page.url, timeout=10).text
    assert "This conversation has been closed by our team." in visitor_page
    session.close()


def test_reopen_button_opens_it_again(live, mm, key):
    started = start_chat(live, key, name="Rita")
    mm.click_action(mm.agent, started["root_post_id"], "close")
    mm.click_action(mm.agent, started["root_post_id"], "reopen")
    assert conversation(live, key, started["id"])["status"] == "open"
    assert buttons_of(mm.get_post(started["root_post_id"]))[1] == ["claim", "close"]


def test_bridge_list_shows_the_conversation_with_its_assignee(live, mm, key):
    started = start_chat(live, key, name="Lena")
    mm.click_action(mm.agent, started["root_post_id"], "claim")
    answer = mm.run_slash_command(mm.agent, mm.channels["support"]["id"], "/bridge list")
    assert answer["response_type"] == "ephemeral"
    line = next(
        line for line in answer["text"].splitlines() if line.startswith(f"- `{started['id'][:8]}`")
    )
    permalink = f"{mm.url}/_redirect/pl/{started['root_post_id']}"
    assert re.fullmatch(
        rf"- `{started['id'][:8]}` · \*\*Lena\*\* · @alice · [^·]+ · \[thread\]\({re.escape(permalink)}\)",
        line,
    ), line
    # Ephemeral: only alice saw it, nothing was posted in the channel.
    assert mm.ephemeral_posts[-1]["message"] == answer["text"]
    assert not [
        p
        for p in mm.posts_in(mm.channels["support"]["id"])
        if "Lena" in p["message"] and p["user_id"] == mm.agent["id"]
    ]


def test_bridge_close_is_the_same_close_and_rewrites_the_root(live, mm, key):
    started = start_chat(live, key, name="Otto")
    answer = mm.run_slash_command(
        mm.agent, mm.channels["support"]["id"], f"/bridge close {started['id'][:8]}"
    )
    assert answer["text"] == f"Closed `{started['id'][:8]}` (Otto)."
    assert conversation(live, key, started["id"])["status"] == "closed"
    root_id = started["root_post_id"]
    wait_until(
        lambda: buttons_of(mm.get_post(root_id)) == ("*closed by @alice*", ["reopen"]),
        what="the root post rewritten after /bridge close",
    )
    assert mm.get_post(root_id)["message"].startswith("**Otto** started a web chat:")
    events = stored(
        live,
        "SELECT text FROM messages WHERE conversation_id = ? AND direction = 'event'",
        [started["id"]],
    )
    assert events == [{"text": "alice closed the conversation."}]


def test_bang_close_in_the_thread_is_the_same_close(live, mm, key):
    started = start_chat(live, key, name="Paula")
    root_id = started["root_post_id"]
    mm.user_post(mm.agent, mm.channels["support"]["id"], "!close", root_id=root_id)
    mm.wait_for_webhooks()
    live.wait_routed()
    assert conversation(live, key, started["id"])["status"] == "closed"
    wait_until(
        lambda: buttons_of(mm.get_post(root_id)) == ("*closed by @alice*", ["reopen"]),
        what="the root post rewritten after !close",
    )


def test_forged_clicks_are_refused_and_change_nothing(live, mm, key):
    target = start_chat(live, key, name="Target")
    other = start_chat(live, key, name="Other")
    stored_post = mm.get_post(target["root_post_id"])  # the server's copy holds the context
    close = next(
        a for a in stored_post["props"]["attachments"][-1]["actions"] if a["id"] == "close"
    )
    context = dict(close["integration"]["context"])
    url = f"{live.url}/hooks/mattermost/test/action"
    before = stored(live, "SELECT COUNT(*) AS n FROM messages")[0]["n"]

    def click(post_id, context):
        body = {
            "user_id": mm.agent["id"],
            "user_name": "alice",
            "channel_id": mm.channels["support"]["id"],
            "team_id": mm.team["id"],
            "post_id": post_id,
            "type": "button",
            "context": context,
        }
        response = requests.post(url, json=body, timeout=10)
        assert response.status_code == 200
        return response.json()

    wrong_hmac = click(target["root_post_id"], {**context, "signature": "0" * 64})
    assert wrong_hmac == {
        "ephemeral_text": "This button's call was refused: its signature does not match."
    }
    other_post = click(other["root_post_id"], context)
    assert other_post == {
        "ephemeral_text": "This button's call was refused: "
        "the post is not that conversation's root post."
    }
    garbage = requests.post(url, data=b"{not json", timeout=10)
    assert garbage.status_code == 200 and "refused" in garbage.json()["ephemeral_text"]
    for started in (target, other):
        assert conversation(live, key, started["id"])["status"] == "open"
    assert stored(live, "SELECT COUNT(*) AS n FROM messages")[0]["n"] == before
    rejected = stored(
        live,
        "SELECT error, count FROM log WHERE action = 'button' AND outcome = 'rejected' ORDER BY id",
    )
    assert [row["error"] for row in rejected] == [
        "its signature does not match",
        "the post is not that conversation's root post",
        "not a call from the bridge's buttons (the body is not JSON)",
    ]


def test_wrong_command_token_gets_403_and_is_counted(live, mm, key):
    form = {
        "token": "x" * 26,
        "team_id": mm.team["id"],
        "channel_id": mm.channels["support"]["id"],
        "user_id": mm.agent["id"],
        "user_name": "alice",
        "command": "/bridge",
        "text": "close whatever",
    }
    wrong = requests.post(f"{live.url}/hooks/mattermost/test/command", data=form, timeout=10)
    assert wrong.status_code == 403
    assert "x" * 26 not in wrong.text
    # The test environment's real token, sent to production: 403 as well.
    real = mm.commands[0]["token"]
    other_env = requests.post(
        f"{live.url}/hooks/mattermost/production/command",
        data={**form, "token": real},
        headers={"Authorization": f"Token {real}"},
        timeout=10,
    )
    assert other_env.status_code == 403
    rows = stored(
        live,
        "SELECT env, error, count, http_status FROM log WHERE action = 'command'"
        " AND outcome = 'rejected' ORDER BY id",
    )
    assert rows == [
        {"env": "test", "error": "token mismatch", "count": 1, "http_status": 403},
        {
            "env": "production",
            "error": "token mismatch: no command token is saved yet",
            "count": 1,
            "http_status": 403,
        },
    ]


def test_unknown_subcommand_and_wrong_ref_get_help(live, mm, key):
    channel = mm.channels["support"]["id"]
    unknown = mm.run_slash_command(mm.agent, channel, "/bridge frobnicate")
    assert unknown["text"].startswith("Unknown subcommand `frobnicate`.\n\n**/bridge**")
    wrong_ref = mm.run_slash_command(mm.agent, channel, "/bridge close zzzzzzzz")
    assert wrong_ref["text"].startswith("`zzzzzzzz` matches no conversation in **test**.")
    assert "/bridge reopen REF" in wrong_ref["text"]
    status = mm.run_slash_command(mm.agent, channel, "/bridge status")
    assert status["text"].splitlines()[0] == "**test** is active."
    assert status["text"].splitlines()[2] == "- failed messages waiting: 0"
