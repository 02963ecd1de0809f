"""Buttons and the /bridge command without a server: signing, parsing, answers (issue 10)."""

from __future__ import annotations

import json

import pytest

from bridge.buttons import Buttons, root_update, signature, signature_matches, state_note
from bridge.clicks import ClickHandler
from bridge.commands import HELP, CommandHandler
from tests.ids import mm_id

SECRET = "test-secret-key"
BUTTONS = Buttons(SECRET, "https://bridge.example")
TOKEN = "commandtoken00000000000000"
ROOT = mm_id("root1")
AGENT = mm_id("alice")


@pytest.fixture
def conversation(store):
    store.update_environment(
        "test", active=1, command_token=TOKEN, server_url="https://chat.example"
    )
    conversation, _ = store.create_conversation("test", "Vera", "", "", "Hello there")
    store.set_conversation_root(conversation["id"], ROOT, mm_id("support"))
    return store.conversation(conversation["id"])


def directions(store, conversation_id):
    rows = store.db.query(
        "SELECT direction FROM messages WHERE conversation_id = ? ORDER BY id", [conversation_id]
    )
    return [row["direction"] for row in rows]


def click_body(conversation_id, action, *, post_id=ROOT, sig=None):
    return json.dumps(
        {
            "user_id": AGENT,
            "user_name": "alice",
            "channel_id": mm_id("support"),
            "team_id": mm_id("team"),
            "post_id": post_id,
            "type": "button",
            "context": {
                "conversation_id": conversation_id,
                "action": action,
                "signature": sig if sig is not None else signature(SECRET, conversation_id, action),
            },
        }
    ).encode()


def test_signature_binds_conversation_action_and_secret():
    good = signature(SECRET, "c1", "close")
    assert signature_matches(SECRET, "c1", "close", good)
    assert not signature_matches(SECRET, "c2", "close", good)
    assert not signature_matches(SECRET, "c1", "reopen", good)
    assert not signature_matches("another-secret", "c1", "close", good)
    assert not signature_matches(SECRET, "c1", "close", "é" * 64)  # no crash on non-ASCII


def test_root_update_always_carries_the_message_and_only_the_fitting_buttons(store, conversation):
    first = store.first_message(conversation["id"])
    update = root_update(first, "x" * 50, conversation, BUTTONS, state_note(conversation), 20)
    assert update["message"] == "x" * 20  # the first part: Mattermost empties a post without
    (attachment,) = update["props"]["attachments"]
    assert [a["id"] for a in attachment["actions"]] == ["claim", "close"]
    assert update["props"]["bridge_key"] == first["pending_key"]
    closed = {**conversation, "status": "closed"}
    (attachment,) = root_update(first, "x", closed, BUTTONS, "*closed*", 20)["props"]["attachments"]
    assert [a["id"] for a in attachment["actions"]] == ["reopen"]
    assert attachment["actions"][0]["integration"]["url"] == (
        "https://bridge.example/hooks/mattermost/test/action"
    )


def test_claim_sets_the_assignee_and_answers_the_rewritten_root(store, conversation):
    result = ClickHandler(store, BUTTONS).handle("test", click_body(conversation["id"], "claim"))
    assert store.conversation(conversation["id"])["assignee"] == "@alice"
    assert result.body["update"]["message"] == "**Vera** started a web chat:\nHello there"
    assert result.body["update"]["props"]["attachments"][0]["text"] == "*claimed by @alice*"


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"not json", "not a call from the bridge's buttons (the body is not JSON)"),
        (b"[]", "not a call from the bridge's buttons (the body has no action context)"),
        ("bad-sig", "its signature does not match"),
        ("other-post", "the post is not that conversation's root post"),
        (
            "bad-id",
            "not a call from the bridge's buttons (user_id or post_id is not a Mattermost id)",
        ),
    ],
)
def test_forged_clicks_change_nothing_and_say_why(store, conversation, body, why):
    if body == "bad-sig":
        body = click_body(conversation["id"], "close", sig="0" * 64)
    elif body == "other-post":
        body = click_body(conversation["id"], "close", post_id=mm_id("elsewhere"))
    elif body == "bad-id":
        body = click_body(conversation["id"], "close", post_id="../../etc")
    result = ClickHandler(store, BUTTONS).handle("test", body)
    assert result.body == {"ephemeral_text": f"This button's call was refused: {why}."}
    assert store.conversation(conversation["id"])["status"] == "open"
    assert directions(store, conversation["id"]) == ["visitor"]


def test_a_stale_close_changes_nothing_and_shows_the_state(store, conversation):
    store.close_conversation(conversation["id"])
    result = ClickHandler(store, BUTTONS).handle("test", click_body(conversation["id"], "close"))
    assert result.body["ephemeral_text"] == "Nothing done: the conversation is already closed."
    assert result.closed_message_id is None
    assert directions(store, conversation["id"]) == ["visitor"]


def test_a_click_in_another_environment_is_refused(store, conversation):
    result = ClickHandler(store, BUTTONS).handle(
        "production", click_body(conversation["id"], "claim")
    )
    assert "not in this environment" in result.body["ephemeral_text"]
    assert store.conversation(conversation["id"])["assignee"] == ""


def command(store, text, *, token=TOKEN, header=None, now=None):
    form = {"token": token, "user_id": AGENT, "user_name": "alice", "text": text}
    authorization = header if header is not None else f"Token {token}"
    return CommandHandler(store, now=now).handle("test", form, authorization)


def test_list_is_newest_first_with_ref_assignee_age_and_permalink(store, conversation):
    store.set_assignee(conversation["id"], "@alice")
    result = command(store, "list", now=conversation["created_at"] + 7200)
    ref = conversation["id"][:8]
    assert result.status == 200
    assert result.body == {
        "response_type": "ephemeral",
        "text": "Open conversations in **test**, newest first:\n"
        f"- `{ref}` · **Vera** · @alice · 2 h · "
        f"[thread](https://chat.example/_redirect/pl/{ROOT})",
    }


def test_help_unknown_and_wrong_refs_answer_the_help_text(store, conversation):
    assert command(store, "").body["text"] == HELP
    assert command(store, "help").body["text"] == HELP
    assert command(store, "dance").body["text"] == "Unknown subcommand `dance`.\n\n" + HELP
    for ref in ("abc", "zzzzzzzz", "'; DROP"):
        text = command(store, f"close {ref}").body["text"]
        assert text.endswith(HELP) and "matches no conversation" in text
    assert store.conversation(conversation["id"])["status"] == "open"


def test_close_and_reopen_by_ref(store, conversation):
    ref = conversation["id"][:6]
    closed = command(store, f"close {ref}")
    assert closed.body["text"] == f"Closed `{conversation['id'][:8]}` (Vera)."
    assert closed.closed_message_id is not None
    assert store.conversation(conversation["id"])["status"] == "closed"
    again = command(store, f"close {ref}")
    assert again.body["text"] == f"`{conversation['id'][:8]}` is already closed."
    command(store, f"reopen {ref}")
    assert store.conversation(conversation["id"])["status"] == "open"


def test_token_is_checked_first_header_or_field(store, conversation):
    assert command(store, "list", token="wrong").status == 403
    # Mattermost sends both; the header wins over the field.
    assert command(store, "list", header=f"Token {'w' * 26}").status == 403
    assert command(store, "list", header="").status == 200
    store.update_environment("test", command_token="")
    assert command(store, "list").status == 403
    rows = store.db.query(
        "SELECT error, count FROM log WHERE action = 'command' AND outcome = 'rejected' ORDER BY id"
    )
    assert [(r["error"], r["count"]) for r in rows] == [
        ("token mismatch", 2),
        ("token mismatch: no command token is saved yet", 1),
    ]


def test_status_reports_activity_failures_and_checklist(store, conversation):
    text = command(store, "status").body["text"]
    assert text.splitlines() == [
        "**test** is active.",
        "- last send: never",
        "- failed messages waiting: 0",
        "- checklist: 0 of 10 items hold",
    ]


def test_configure_saves_the_command_token_without_a_server(runner, store):
    result = runner.invoke(args=["configure", "test", "--command-token", TOKEN])
    assert result.exit_code == 0, result.output
    assert store.environment("test")["command_token"] == TOKEN


def test_refused_commands_and_clicks_leave_the_webhook_item_alone(store, conversation):
    from bridge.checklist import checklist

    store.update_environment("test", webhook_token="w" * 26)
    store.log(env="test", direction="inbound", action="webhook", outcome="ok")
    command(store, "list", token="wrong")
    ClickHandler(store, BUTTONS).handle("test", b"not json")
    states = {state.item.key: state.evidence for state in checklist(store, "test").items}
    assert states["webhook"].state == "ok"
    assert states["slash_command"].state == "failing"
    assert states["buttons"].state == "failing"
    result = command(store, "status")
    # The route writes this row once its answer is sent (see the last test here).
    store.log_agent_call(**result.log)
    states = {state.item.key: state.evidence for state in checklist(store, "test").items}
    assert states["slash_command"].state == "ok"


def test_an_inactive_environment_refuses_clicks_and_changes(store, conversation):
    store.update_environment("test", active=0)
    result = ClickHandler(store, BUTTONS).handle("test", click_body(conversation["id"], "close"))
    assert result.body == {
        "ephemeral_text": "This button's call was refused: "
        "the bridge is inactive in this environment."
    }
    answer = command(store, f"close {conversation['id'][:8]}")
    assert answer.body["text"] == "**test** is inactive: nothing changed."
    assert store.conversation(conversation["id"])["status"] == "open"
    assert command(store, "status").body["text"].startswith("**test** is inactive.")


def test_conversations_pages_show_the_assignee(admin, store, conversation):
    assert "unclaimed" in admin.get("/conversations").get_data(as_text=True)
    store.set_assignee(conversation["id"], "@alice")
    listing = admin.get("/conversations").get_data(as_text=True)
    assert "<td>@alice</td>" in listing
    page = admin.get(f"/conversations/{conversation['id']}").get_data(as_text=True)
    assert "claimed by @alice" in page


def test_buttons_point_only_at_the_public_url_never_at_a_requests_host(app, client, store):
    from bridge.buttons import buttons_from_config

    assert buttons_from_config({"SECRET_KEY": SECRET, "PUBLIC_URL": ""}) is None
    made = buttons_from_config({"SECRET_KEY": SECRET, "PUBLIC_URL": "https://bridge.example"})
    assert made.base_url == "https://bridge.example"
    # Without BRIDGE_PUBLIC_URL a click (on a button posted while it was set) is
    # answered without touching anything, whatever Host the call names.
    conversation, _ = store.create_conversation("test", "Vera", "", "", "Hello")
    store.update_environment("test", active=1)
    answer = client.post(
        "/hooks/mattermost/test/action",
        data=click_body(conversation["id"], "claim"),
        content_type="application/json",
        headers={"Host": "evil.example"},
    )
    assert answer.status_code == 200
    assert "BRIDGE_PUBLIC_URL" in answer.json["ephemeral_text"]
    assert store.conversation(conversation["id"])["assignee"] == ""


def test_a_valid_call_is_logged_once_its_answer_is_sent(app, client, store, conversation):
    """The change is in the answer's transaction; its log row follows the answer."""
    app.config["PUBLIC_URL"] = "https://bridge.example"
    sig = signature(app.config["SECRET_KEY"], conversation["id"], "claim")

    def logged():
        rows = store.db.query(
            "SELECT action, outcome, error FROM log WHERE action IN ('button', 'command')"
        )
        return [tuple(row.values()) for row in rows]

    answer = client.post(
        "/hooks/mattermost/test/action",
        data=click_body(conversation["id"], "claim", sig=sig),
        content_type="application/json",
    )
    assert answer.status_code == 200 and "update" in answer.json
    assert store.conversation(conversation["id"])["assignee"] == "@alice"
    assert logged() == []  # Mattermost does not wait for the log
    answer.close()
    assert logged() == [("button", "ok", "claim by @alice")]
    reply = client.post(
        "/hooks/mattermost/test/command",
        data={"token": TOKEN, "user_id": AGENT, "user_name": "alice", "text": "list"},
    )
    assert reply.status_code == 200 and "@alice" in reply.json["text"]
    reply.close()
    assert logged()[-1] == ("command", "ok", "/bridge list")
