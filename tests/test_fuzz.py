"""Property-based bad input over the host API and the inbound route.

Whatever arrives: never a 500, nothing stored from a rejected request, and no
secret in any response or log row.
"""

from __future__ import annotations

import itertools
import json

import pytest
import requests_mock
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.store import Store

SERVER = "http://mm.example.test"
BOT_TOKEN = "bottokenbottokenbottoken26"
WEBHOOK_TOKEN = "hooktokenhooktokenhooktok1"
CALLBACK_SECRET = "callback-secret-do-not-show"
FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=12,
)
# Bodies shaped like ours, with any field replaced by anything.
conversation_bodies = st.fixed_dictionaries(
    {},
    optional={
        "visitor": json_values
        | st.fixed_dictionaries(
            {}, optional={"name": json_values | st.text(max_size=30), "email": json_values}
        ),
        "text": json_values | st.text(max_size=60),
        "external_id": json_values,
    },
)
content_types = st.sampled_from(
    [
        "application/json",
        "application/x-www-form-urlencoded",
        "text/plain",
        "multipart/form-data; boundary=zz",
        "",
        "application/json; charset=latin-1",
    ]
)


@pytest.fixture
def fuzz_app(app, store):
    store.update_environment(
        "test",
        server_url=SERVER,
        bot_token=BOT_TOKEN,
        bot_user_id="b" * 26,
        bot_username="bridge-bot",
        bot_is_bot=1,
        webhook_token=WEBHOOK_TOKEN,
        mirror_channel_id="c" * 26,
        mirror_channel_name="Acme / Support",
        active=1,
        callback_secret=CALLBACK_SECRET,
        notify_map={"booking.created": "s" * 26},
    )
    key = app.test_cli_runner().invoke(args=["api-key", "test"]).output.strip().splitlines()[-1]
    with requests_mock.Mocker() as mocker:
        post_ids = itertools.count()
        mocker.post(
            f"{SERVER}/api/v4/posts",
            status_code=201,
            # A new id per post, as Mattermost gives: each conversation gets its own root.
            json=lambda request, context: {"id": f"{next(post_ids):026d}", "channel_id": "c" * 26},
            headers={"X-Version-Id": "9.11.0", "Content-Type": "application/json"},
        )
        mocker.get(
            requests_mock.ANY,
            status_code=404,
            headers={"X-Version-Id": "9.11.0"},
            json={"id": "app.post.get.app_error", "message": "not found", "status_code": 404},
        )
        yield app.test_client(), key, Store(app.config["DATABASE"])


def counts(store: Store) -> tuple[int, int]:
    conversations = next(store.db.query("SELECT COUNT(*) AS n FROM conversations"))["n"]
    messages = next(store.db.query("SELECT COUNT(*) AS n FROM messages"))["n"]
    return conversations, messages


def assert_no_secret(text: str, key: str) -> None:
    for secret in (BOT_TOKEN, WEBHOOK_TOKEN, CALLBACK_SECRET, key):
        assert secret not in text


@FUZZ
@given(body=conversation_bodies)
def test_any_conversation_body_is_201_or_a_clear_4xx(fuzz_app, body):
    client, key, store = fuzz_app
    before = counts(store)
    response = client.post(
        "/api/v1/conversations", json=body, headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code in (201, 400), response.data
    assert_no_secret(response.get_data(as_text=True), key)
    if response.status_code == 201:
        assert response.json["status"] == "sent"
    else:
        assert set(response.json) == {"error", "code"}
        assert counts(store) == before


@FUZZ
@given(
    raw=st.binary(max_size=200),
    content_type=content_types,
    path=st.sampled_from(
        ["/api/v1/conversations", "/api/v1/notifications", "/api/v1/conversations/nope/messages"]
    ),
)
def test_raw_bytes_never_break_the_api(fuzz_app, raw, content_type, path):
    client, key, store = fuzz_app
    before = counts(store)
    response = client.post(
        path, data=raw, headers={"Authorization": f"Bearer {key}", "Content-Type": content_type}
    )
    assert 400 <= response.status_code < 500 or response.status_code == 201
    if response.status_code != 201:
        assert counts(store) == before
    assert_no_secret(response.get_data(as_text=True), key)


@FUZZ
@given(
    fields=st.dictionaries(
        st.sampled_from(
            [
                "token",
                "post_id",
                "user_id",
                "channel_id",
                "text",
                "timestamp",
                "user_name",
                "team_id",
                "file_ids",
            ]
        ),
        st.text(max_size=30) | st.sampled_from([WEBHOOK_TOKEN, "c" * 26, "b" * 26]),
        max_size=9,
    ),
    as_json=st.booleans(),
)
def test_any_webhook_payload_is_answered_without_500_or_noise(fuzz_app, fields, as_json):
    client, key, store = fuzz_app
    before = counts(store)
    if as_json:
        response = client.post(
            "/hooks/mattermost/test", data=json.dumps(fields), content_type="application/json"
        )
    else:
        response = client.post("/hooks/mattermost/test", data=fields)
    assert response.status_code in (200, 400, 403)
    if response.status_code == 200:
        assert response.data == b""  # never makes Mattermost post anything
    else:
        assert counts(store) == before
    assert_no_secret(response.get_data(as_text=True), key)


def test_no_secret_in_any_log_row_after_fuzzing(fuzz_app):
    client, key, store = fuzz_app
    client.post(
        "/hooks/mattermost/test",
        data={"token": WEBHOOK_TOKEN[:-1] + "x", "post_id": "p", "user_id": "u", "channel_id": "c"},
    )
    client.post(
        "/api/v1/conversations",
        json={"visitor": {"name": "A"}, "text": "hi"},
        headers={"Authorization": f"Bearer {key}"},
    )
    rows = list(store.db.query("SELECT * FROM log"))
    assert rows
    assert_no_secret(json.dumps(rows), key)
