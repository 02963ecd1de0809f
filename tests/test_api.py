"""bridge/views/api.py: the host API through the Flask test client."""

from __future__ import annotations

import itertools

import pytest
import requests

from tests.ids import mm_id

SERVER = "https://chat.example.com"
TOKEN = "b0tt0ken5ecret0123456789ab"
POSTS = f"{SERVER}/api/v4/posts"
MIRROR = "mirrorchannelid0000000000a"
ORDERS = "orderschannelid00000000000"
JSON = {"Content-Type": "application/json", "X-Version-Id": "9.11.0.9.11.0.abc.false"}


def invoke(runner, *args):
    return runner.invoke(args=list(args))


def new_key(runner, env="test") -> str:
    result = invoke(runner, "api-key", env)
    assert result.exit_code == 0, result.output
    return result.output.strip().splitlines()[-1]


@pytest.fixture
def key(runner):
    return new_key(runner)


@pytest.fixture
def auth(key):
    return {"Authorization": f"Bearer {key}"}


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


_ids = itertools.count(1)


def created(request, context):
    context.status_code = 201
    context.headers.update(JSON)
    return {"id": f"post{next(_ids):022d}", **request.json()}


@pytest.fixture
def mattermost(requests_mock, env):
    """Mattermost answering every post with 201."""
    requests_mock.post(POSTS, json=created)
    return requests_mock


def start(client, auth, **body):
    body = {"visitor": {"name": "Ann", "email": "ann@example.com"}, "text": "Hello", **body}
    return client.post("/api/v1/conversations", json=body, headers=auth)


# -- authentication --------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer not-a-key"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
    ],
)
def test_missing_or_wrong_key_is_401(client, key, headers):
    response = client.get("/api/v1/conversations/abc", headers=headers)
    assert response.status_code == 401
    assert response.json["code"] == "unauthorized"
    assert response.json["error"]


def test_a_key_for_the_other_environment_does_not_open_this_one(runner, client, store):
    production_key = new_key(runner, "production")
    conversation, _ = store.create_conversation("test", "Ann", "", "", "Hi")
    response = client.get(
        f"/api/v1/conversations/{conversation['id']}",
        headers={"Authorization": f"Bearer {production_key}"},
    )
    assert response.status_code == 404


# -- request validation --------------------------------------------------------------------


def test_non_json_body_is_415(client, auth):
    response = client.post(
        "/api/v1/conversations",
        data="name=Ann",
        headers=auth,
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 415
    assert response.json["code"] == "unsupported_media_type"


def test_invalid_json_is_400(client, auth):
    response = client.post(
        "/api/v1/conversations", data="{oops", headers=auth, content_type="application/json"
    )
    assert response.status_code == 400
    assert response.json["code"] == "invalid_json"


@pytest.mark.parametrize("body", ["[1, 2]", '"text"', "42"])
def test_json_that_is_not_an_object_is_400(client, auth, body):
    response = client.post(
        "/api/v1/conversations", data=body, headers=auth, content_type="application/json"
    )
    assert response.status_code == 400
    assert "object" in response.json["error"]


@pytest.mark.parametrize(
    "body, code, names",
    [
        ({"text": "Hi"}, "missing_field", "visitor"),
        ({"visitor": {}, "text": "Hi"}, "missing_field", "visitor.name"),
        ({"visitor": {"name": "Ann"}}, "missing_field", "text"),
        ({"visitor": "Ann", "text": "Hi"}, "invalid_field", "visitor"),
        ({"visitor": {"name": 42}, "text": "Hi"}, "invalid_field", "visitor.name"),
        ({"visitor": {"name": "  "}, "text": "Hi"}, "invalid_field", "visitor.name"),
        (
            {"visitor": {"name": "Ann", "email": ["a@b.c"]}, "text": "Hi"},
            "invalid_field",
            "visitor.email",
        ),
        ({"visitor": {"name": "Ann"}, "text": ["Hi"]}, "invalid_field", "text"),
        (
            {"visitor": {"name": "Ann"}, "text": "Hi", "external_id": 7},
            "invalid_field",
            "external_id",
        ),
        ({"visitor": {"name": "Ann"}, "text": "x" * 100_001}, "invalid_field", "text"),
        ({"visitor": {"name": "A" * 201}, "text": "Hi"}, "invalid_field", "visitor.name"),
        ({"visitor": {"name": "Ann"}, "text": "a\x00b"}, "invalid_field", "text"),
    ],
)
def test_bad_conversation_bodies_are_400_naming_the_field(
    client, auth, requests_mock, body, code, names
):
    response = client.post("/api/v1/conversations", json=body, headers=auth)
    assert response.status_code == 400
    assert response.json["code"] == code
    assert f"'{names}'" in response.json["error"]
    assert requests_mock.call_count == 0


def test_body_over_one_mebibyte_is_413(client, auth):
    response = client.post(
        "/api/v1/conversations",
        data=b"x" * (1024 * 1024 + 1),
        headers=auth,
        content_type="application/json",
    )
    assert response.status_code == 413
    assert response.json["code"] == "too_large"
    assert "1 MiB" in response.json["error"]


def test_body_over_one_mebibyte_is_413_before_authentication(client):
    response = client.post(
        "/api/v1/notifications", data=b"x" * (1024 * 1024 + 1), content_type="application/json"
    )
    assert response.status_code == 413


@pytest.mark.parametrize(
    "method, path, allowed",
    [
        ("TRACE", "/api/v1/conversations", {"POST", "OPTIONS"}),
        ("DELETE", "/api/v1/conversations/abc", {"GET", "HEAD", "OPTIONS"}),
        ("PUT", "/api/v1/conversations/abc/messages", {"GET", "HEAD", "POST", "OPTIONS"}),
        ("GET", "/api/v1/notifications", {"POST", "OPTIONS"}),
    ],
)
def test_method_not_allowed_is_json_405_with_the_allow_header(client, auth, method, path, allowed):
    response = client.open(path, method=method, headers=auth)
    assert response.status_code == 405
    assert response.json["code"] == "method_not_allowed"
    # RFC 9110: a 405 names the methods the resource has.
    assert set(response.headers["Allow"].split(", ")) == allowed


def test_method_not_allowed_page_keeps_the_allow_header_too(client):
    response = client.delete("/login")
    assert response.status_code == 405
    assert "text/html" in response.content_type
    assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS", "POST"}


# -- conversations --------------------------------------------------------------------


def test_new_conversation_is_201_with_the_root_post(client, auth, mattermost):
    response = start(client, auth)
    assert response.status_code == 201
    body = response.json
    assert body["status"] == "sent"
    assert body["channel_id"] == MIRROR
    assert body["root_post_id"].startswith("post")
    assert "error" not in body
    conversation = client.get(f"/api/v1/conversations/{body['id']}", headers=auth).json
    assert conversation["status"] == "open"
    assert conversation["root_post_id"] == body["root_post_id"]
    assert conversation["visitor"] == {"name": "Ann", "email": "ann@example.com"}
    assert conversation["created_at"].endswith("Z")
    assert conversation["closed_at"] is None


def test_next_message_is_201_and_a_reply_in_the_thread(client, auth, mattermost):
    conversation = start(client, auth).json
    response = client.post(
        f"/api/v1/conversations/{conversation['id']}/messages",
        json={"text": "Are you there?"},
        headers=auth,
    )
    assert response.status_code == 201
    assert response.json["status"] == "sent"
    assert response.json["post_id"].startswith("post")
    assert mattermost.request_history[-1].json()["root_id"] == conversation["root_post_id"]


def test_unknown_conversation_is_404(client, auth):
    for response in (
        client.get("/api/v1/conversations/nope", headers=auth),
        client.get("/api/v1/conversations/nope/messages", headers=auth),
        client.post("/api/v1/conversations/nope/messages", json={"text": "x"}, headers=auth),
    ):
        assert response.status_code == 404
        assert response.json["code"] == "not_found"


def test_conversation_of_the_other_environment_is_404(client, auth, store, requests_mock):
    conversation, _ = store.create_conversation("production", "Ann", "", "", "Hi")
    url = f"/api/v1/conversations/{conversation['id']}"
    assert client.get(url, headers=auth).status_code == 404
    assert client.get(f"{url}/messages", headers=auth).status_code == 404
    response = client.post(f"{url}/messages", json={"text": "x"}, headers=auth)
    assert response.status_code == 404
    assert requests_mock.call_count == 0
    assert len(store.messages_after(conversation["id"])) == 1


def test_message_to_a_closed_conversation_is_409(client, auth, store, mattermost):
    conversation = start(client, auth).json
    store.close_conversation(conversation["id"])
    response = client.post(
        f"/api/v1/conversations/{conversation['id']}/messages",
        json={"text": "hello?"},
        headers=auth,
    )
    assert response.status_code == 409
    assert (
        client.get(f"/api/v1/conversations/{conversation['id']}", headers=auth).json["status"]
        == "closed"
    )


def test_mattermost_down_still_accepts_and_keeps_the_message(client, auth, env, requests_mock):
    requests_mock.post(POSTS, exc=requests.exceptions.ConnectionError)
    response = start(client, auth, text="Is anyone there?")
    assert response.status_code == 201
    assert response.json["status"] == "failed"
    assert "cannot reach" in response.json["error"]
    assert response.json["root_post_id"] == ""
    messages = client.get(
        f"/api/v1/conversations/{response.json['id']}/messages", headers=auth
    ).json["messages"]
    assert [(m["text"], m["status"]) for m in messages] == [("Is anyone there?", "failed")]


def test_mattermost_403_is_201_failed_with_the_cause(client, auth, env, requests_mock):
    requests_mock.post(
        POSTS,
        status_code=403,
        headers=JSON,
        json={
            "id": "api.context.permissions.app_error",
            "message": "no",
            "detailed_error": "",
            "request_id": "r",
            "status_code": 403,
        },
    )
    response = start(client, auth)
    assert response.status_code == 201
    assert response.json["status"] == "failed"
    assert "@bridgebot" in response.json["error"]


def test_inactive_environment_is_201_skipped_with_a_reason(client, auth, store, env, requests_mock):
    store.update_environment("test", active=0)
    response = start(client, auth)
    assert response.status_code == 201
    assert response.json["status"] == "skipped"
    assert "inactive" in response.json["reason"]
    assert requests_mock.call_count == 0


# -- paging -------------------------------------------------------------------------


def test_messages_page_with_after_until_empty(client, auth, store):
    conversation, _ = store.create_conversation("test", "Ann", "", "", "m0")
    for i in range(1, 250):
        store.add_visitor_message("test", conversation["id"], "Ann", f"m{i}")
    store.add_inbound_message(
        env="test",
        conversation_id=conversation["id"],
        direction="agent",
        author="Bo",
        text="reply",
        post_id="p1",
    )
    store.add_inbound_message(
        env="test",
        conversation_id=conversation["id"],
        direction="note",
        author="Bo",
        text="internal note",
        post_id="p2",
    )
    url = f"/api/v1/conversations/{conversation['id']}/messages"
    seen, pages, after = [], [], None
    while True:
        response = client.get(url, query_string={"after": after} if after else {}, headers=auth)
        assert response.status_code == 200
        page = response.json["messages"]
        pages.append(len(page))
        if not page:
            break
        seen.extend(page)
        after = page[-1]["id"]
    assert pages == [100, 100, 51, 0]
    ids = [message["id"] for message in seen]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert [m["text"] for m in seen[:3]] == ["m0", "m1", "m2"]
    assert seen[-1] == {**seen[-1], "direction": "agent", "author": "Bo", "text": "reply"}
    assert "internal note" not in [m["text"] for m in seen]
    assert set(seen[0]) == {"id", "direction", "author", "text", "created_at", "status", "files"}


@pytest.mark.parametrize(
    "after",
    ["abc", "-1", "1.5", "²", "99999999999999999999999", str(2**63), "", "1e3"],
    ids=[
        "letters",
        "negative",
        "decimal",
        "superscript-digit",
        "beyond-64-bit",
        "sqlite-max-plus-one",
        "empty",
        "exponent",
    ],
)
def test_after_that_is_not_a_message_id_is_400(client, auth, store, after):
    conversation, _ = store.create_conversation("test", "Ann", "", "", "Hi")
    response = client.get(
        f"/api/v1/conversations/{conversation['id']}/messages",
        query_string={"after": after},
        headers=auth,
    )
    assert response.status_code == 400
    assert "after" in response.json["error"]


@pytest.mark.parametrize("after", [str(2**63 - 1), "0", "000000000000000000000000001"])
def test_after_is_any_whole_number_up_to_the_documented_maximum(client, auth, store, after):
    conversation, _ = store.create_conversation("test", "Ann", "", "", "Hi")
    response = client.get(
        f"/api/v1/conversations/{conversation['id']}/messages",
        query_string={"after": after},
        headers=auth,
    )
    assert response.status_code == 200
    expected = ["Hi"] if int(after) == 0 else []
    assert [message["text"] for message in response.json["messages"]] == expected


# -- notifications -----------------------------------------------------------------------


def test_unmapped_notification_is_201_skipped_with_the_reason(client, auth, env, requests_mock):
    response = client.post(
        "/api/v1/notifications", json={"type": "refund", "text": "x"}, headers=auth
    )
    assert response.status_code == 201
    assert response.json["status"] == "skipped"
    assert "refund" in response.json["reason"]
    assert "post_id" not in response.json
    assert requests_mock.call_count == 0


def test_mapped_notification_is_sent_to_its_channel(client, auth, mattermost):
    response = client.post(
        "/api/v1/notifications", json={"type": "order", "text": "Order #9"}, headers=auth
    )
    assert response.status_code == 201
    assert response.json["status"] == "sent"
    assert response.json["channel_id"] == ORDERS
    assert response.json["post_id"].startswith("post")
    assert mattermost.request_history[-1].json()["channel_id"] == ORDERS


@pytest.mark.parametrize(
    "body, field",
    [
        ({"text": "x"}, "type"),
        ({"type": "order"}, "text"),
        ({"type": 5, "text": "x"}, "type"),
        ({"type": "t" * 65, "text": "x"}, "type"),
    ],
)
def test_bad_notification_bodies_are_400(client, auth, body, field):
    response = client.post("/api/v1/notifications", json=body, headers=auth)
    assert response.status_code == 400
    assert f"'{field}'" in response.json["error"]
