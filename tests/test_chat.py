"""The public chat page through the Flask test client (Mattermost mocked)."""

from __future__ import annotations

import contextlib
import sqlite3

import pytest

SERVER = "https://chat.example.com"


@pytest.fixture
def chat(client, store, requests_mock):
    store.update_environment(
        "test",
        server_url=SERVER,
        bot_token="t" * 26,
        bot_user_id="b" * 26,
        bot_username="bridge-bot",
        bot_is_bot=1,
        mirror_channel_id="c" * 26,
        active=1,
    )
    counter = iter(range(10**6))
    requests_mock.post(
        f"{SERVER}/api/v4/posts",
        status_code=201,
        json=lambda request, context: {"id": f"{next(counter):026d}", "channel_id": "c" * 26},
        headers={"Content-Type": "application/json"},
    )
    return client


def start(client, **form):
    return client.post("/chat/test/start", data={"name": "Vera", "email": "", "text": "Hi", **form})


def test_starting_chats_is_rate_limited_per_client_address(chat):
    for _ in range(10):
        assert start(chat).status_code == 302
    refused = start(chat)
    assert refused.status_code == 429
    assert "Too many new chats" in refused.get_data(as_text=True)
    other = chat.post(
        "/chat/test/start",
        data={"name": "B", "text": "Hi"},
        environ_base={"REMOTE_ADDR": "10.0.0.9"},
    )
    assert other.status_code == 302


def test_bad_start_input_is_explained_and_kept(chat, store):
    page = start(chat, name="", text="x" * 4001)
    body = page.get_data(as_text=True)
    assert page.status_code == 400
    assert "Please tell us your name." in body and "at most 4000 characters" in body
    assert "x" * 4001 in body  # the visitor's text is not lost
    assert store.recent_conversations() == []


def test_inactive_environment_says_chat_is_unavailable(client):
    page = client.get("/chat/test").get_data(as_text=True)
    assert "not available right now" in page
    assert "signed in as the admin" not in page and "/env/test/config" not in page


def test_an_admin_trying_an_inactive_chat_page_is_told_why(admin):
    page = admin.get("/chat/test").get_data(as_text=True)
    assert "not available right now" in page
    assert "environment is not active" in page and 'href="/env/test/config"' in page


def test_closed_conversation_replaces_the_composer(chat, store):
    location = start(chat).headers["Location"]
    conversation_id = location.split("c=")[1]
    store.close_conversation(conversation_id)
    response = chat.post(
        f"/chat/test/{conversation_id}/messages",
        data={"text": "hello?"},
        headers={"HX-Request": "true"},
    )
    body = response.get_data(as_text=True)
    assert "has been closed" in body and "<textarea" not in body
    poll = chat.get(f"/chat/test/{conversation_id}/messages?after=0")
    assert poll.status_code == 286  # htmx stops polling


def test_unknown_chat_link_shows_the_chat_page_not_the_admin(chat):
    response = chat.get("/chat/test?c=doesnotexist")
    body = response.get_data(as_text=True)
    assert response.status_code == 404
    assert "Start a new chat" in body and "Log out" not in body and "dashboard" not in body


@pytest.mark.parametrize(
    ("path", "link"),
    [
        ("/chat/test/nope", "/chat/test"),
        ("/chat/production/x/y", "/chat/production"),
        ("/chat/staging", None),
    ],
)
def test_a_mistyped_chat_address_shows_the_chat_page_not_the_admin(chat, path, link):
    response = chat.get(path)
    body = response.get_data(as_text=True)
    assert response.status_code == 404
    assert "Chat with us" in body and "Log out" not in body and "dashboard" not in body
    assert "X-Frame-Options" not in response.headers  # shown in the site's frame like the chat
    if link:
        assert f'href="{link}"' in body
    else:
        assert "Start a new chat" not in body


def test_host_api_conversations_are_not_open_on_the_chat_page(chat, store):
    conversation, _ = store.create_conversation("test", "Hans", "", "", "via API")
    assert chat.get(f"/chat/test?c={conversation['id']}").status_code == 404
    sent = chat.post(f"/chat/test/{conversation['id']}/messages", data={"text": "hijack"})
    assert sent.status_code == 404


def test_inactive_environment_refuses_new_messages_in_an_open_chat(chat, store):
    conversation_id = start(chat).headers["Location"].split("c=")[1]
    store.update_environment("test", active=0)
    response = chat.post(
        f"/chat/test/{conversation_id}/messages",
        data={"text": "still there?"},
        headers={"HX-Request": "true"},
    )
    assert "not available right now" in response.get_data(as_text=True)
    assert [m["text"] for m in store.messages_after(conversation_id)] == ["Hi"]


def test_without_javascript_errors_are_shown_with_the_text_kept(chat):
    conversation_id = start(chat).headers["Location"].split("c=")[1]
    response = chat.post(f"/chat/test/{conversation_id}/messages", data={"text": "y" * 4001})
    body = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "at most 4000 characters" in body and "y" * 4001 in body


def test_messages_are_limited_to_30_per_10_minutes_per_client_address(chat, store):
    conversation_id = start(chat).headers["Location"].split("c=")[1]
    url = f"/chat/test/{conversation_id}/messages"
    for n in range(30):
        assert chat.post(url, data={"text": f"message {n}"}).status_code == 302
    refused = chat.post(url, data={"text": "one too many"}, headers={"HX-Request": "true"})
    assert "sending messages too fast" in refused.get_data(as_text=True)
    texts = [m["text"] for m in store.messages_after(conversation_id)]
    assert len(texts) == 31 and "one too many" not in texts  # the first message and 30
    other = chat.post(
        url, data={"text": "from elsewhere"}, environ_base={"REMOTE_ADDR": "10.0.0.9"}
    )
    assert other.status_code == 302
    # Ten minutes later the window is over. Turned back by hand: tests never sleep.
    with contextlib.closing(sqlite3.connect(store.path)) as conn, conn:
        conn.execute("UPDATE rate_limits SET window_start = window_start - 601")
    assert chat.post(url, data={"text": "later"}).status_code == 302
    assert [m["text"] for m in store.messages_after(conversation_id)][-2:] == [
        "from elsewhere",
        "later",
    ]


EVIL = '<img src=x onerror="alert(1)">'


def test_visitor_page_escapes_agent_names_and_every_text(chat, store):
    conversation_id = (
        start(chat, name=EVIL, text=f"{EVIL} from the visitor").headers["Location"].split("c=")[1]
    )
    # The agent's display name comes from Mattermost, where anyone can set it.
    store.add_inbound_message(
        env="test",
        conversation_id=conversation_id,
        direction="agent",
        author=EVIL,
        text=f"{EVIL} from the agent",
        post_id="p6ta9nz3wqxe8cm4bjk1fyr5ud",
    )
    page = chat.get(f"/chat/test?c={conversation_id}").get_data(as_text=True)
    poll = chat.get(f"/chat/test/{conversation_id}/messages?after=0").get_data(as_text=True)
    for body in (page, poll):
        assert "<img" not in body
        escaped = "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;"
        assert f'<span class="who">{escaped}</span>' in body
        assert f"{escaped} from the agent" in body and f"{escaped} from the visitor" in body
