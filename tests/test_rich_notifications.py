"""Rich notifications: attachments on POST /api/v1/notifications, a colour and title per type."""

from __future__ import annotations

import pytest

from bridge.attachments import AttachmentError, validate_attachments
from tests.mocked import JSON, MIRROR, POSTS, SERVER, configure, created, posted

ORDERS = "orderschannelid00000000000"
BOT_ID = "b" * 26


@pytest.fixture
def env(store):
    return configure(store, notify_map={"order": ORDERS, "payment.failed": ORDERS})


@pytest.fixture
def mattermost(requests_mock, env):
    requests_mock.post(POSTS, json=created)
    return requests_mock


@pytest.fixture
def auth(runner):
    key = runner.invoke(args=["api-key", "test"]).output.strip().splitlines()[-1]
    return {"Authorization": f"Bearer {key}"}


ATTACHMENT = {
    "fallback": "Order #42 paid",
    "color": "#36a64f",
    "pretext": "A new order",
    "author_name": "Shop",
    "author_link": "https://shop.example.com",
    "author_icon": "https://shop.example.com/icon.png",
    "title": "Order #42",
    "title_link": "https://shop.example.com/orders/42",
    "text": "2 × family room, 3 nights",
    "fields": [
        {"title": "Total", "value": "€ 540.00", "short": True},
        {"title": "Nights", "value": 3, "short": True},
        {"title": "Note", "value": "late arrival"},
    ],
    "image_url": "https://shop.example.com/room.jpg",
    "thumb_url": "https://shop.example.com/room-small.jpg",
    "footer": "shop.example.com",
    "footer_icon": "https://shop.example.com/favicon.png",
    "ts": 1710408000,
}


# -- validation ------------------------------------------------------------------------------


def test_every_message_attachment_field_is_accepted_and_numbers_become_strings():
    [checked] = validate_attachments([ATTACHMENT])
    assert checked["fields"] == [
        {"title": "Total", "value": "€ 540.00", "short": True},
        {"title": "Nights", "value": "3", "short": True},
        {"title": "Note", "value": "late arrival", "short": False},
    ]
    assert {key: value for key, value in checked.items() if key != "fields"} == {
        key: value for key, value in ATTACHMENT.items() if key != "fields"
    }


@pytest.mark.parametrize(
    "attachments, field, why",
    [
        ({"color": "good"}, "attachments", "must be a list"),
        (["text"], "attachments[0]", "must be an object"),
        ([{"color": "red"}], "attachments[0].color", "good, warning, danger or a hex colour"),
        ([{"color": "#36a64"}], "attachments[0].color", "hex colour"),
        ([{}, {"colour": "good"}], "attachments[1].colour", "not a message attachment field"),
        ([{"text": 42}], "attachments[0].text", "must be a string"),
        ([{"text": "x" * 8001}], "attachments[0].text", "longer than 8000"),
        ([{"title": "a\x00b"}], "attachments[0].title", "NUL"),
        ([{"image_url": "javascript:alert(1)"}], "attachments[0].image_url", "http:// or https://"),
        ([{"thumb_url": "ftp://x.example/a.png"}], "attachments[0].thumb_url", "http"),
        ([{"ts": True}], "attachments[0].ts", "string or a number"),
        ([{"ts": [1]}], "attachments[0].ts", "string or a number"),
        ([{"fields": {"a": 1}}], "attachments[0].fields", "must be a list"),
        ([{"fields": [{"title": "a", "value": 1.5}]}], "attachments[0].fields[0].value", "whole"),
        ([{"fields": [{"title": "a", "value": True}]}], "attachments[0].fields[0].value", "whole"),
        ([{"fields": [{"title": "a", "short": "yes"}]}], "attachments[0].fields[0].short", "true"),
        ([{"fields": [{"name": "a"}]}], "attachments[0].fields[0].name", "not a field key"),
        ([{"fields": [{}] * 51}], "attachments[0].fields", "at most 50"),
        ([{"actions": [{"name": "Ack"}]}], "attachments[0].actions", "not supported"),
        ([{}] * 21, "attachments", "at most 20"),
        ([{"text": "x" * 8000, "pretext": "y" * 8000}] * 20, "attachments", "200000 characters"),
    ],
)
def test_a_bad_attachment_is_refused_naming_the_field(attachments, field, why):
    with pytest.raises(AttachmentError) as error:
        validate_attachments(attachments)
    assert error.value.field == field
    assert why in str(error.value)
    assert str(error.value).startswith(f"'{field}' ")


def test_slack_only_keys_are_dropped_for_a_pass_through_but_refused_from_the_host():
    slack = [
        {"text": "hi", "mrkdwn_in": ["text"], "fields": [{"title": "a", "value": "b", "extra": 1}]}
    ]
    assert validate_attachments(slack, strict=False) == [
        {"text": "hi", "fields": [{"title": "a", "value": "b", "short": False}]}
    ]
    with pytest.raises(AttachmentError, match="mrkdwn_in"):
        validate_attachments(slack)


# -- the host API ------------------------------------------------------------------------------


def test_a_notification_with_attachments_posts_them_in_props(client, auth, mattermost):
    response = client.post(
        "/api/v1/notifications",
        json={"type": "order", "text": "New order", "attachments": [ATTACHMENT]},
        headers=auth,
    )
    assert response.status_code == 201, response.json
    assert response.json["status"] == "sent"
    [post] = posted(mattermost)
    assert post["message"] == "New order"
    assert post["channel_id"] == ORDERS
    assert post["props"]["attachments"] == validate_attachments([ATTACHMENT])
    assert post["props"]["bridge_key"]  # the bridge's own props are still there


@pytest.mark.parametrize(
    "attachments, field",
    [
        ([{"color": "purple"}], "attachments[0].color"),
        ("text", "attachments"),
        ([{"fields": [{"title": "x", "value": {"a": 1}}]}], "attachments[0].fields[0].value"),
    ],
)
def test_bad_attachments_are_400_naming_the_field_and_nothing_is_kept(
    client, auth, store, mattermost, attachments, field
):
    response = client.post(
        "/api/v1/notifications",
        json={"type": "order", "text": "New order", "attachments": attachments},
        headers=auth,
    )
    assert response.status_code == 400
    assert response.json["code"] == "invalid_field"
    assert response.json["error"].startswith(f"'{field}' ")
    assert mattermost.call_count == 0
    assert store.db.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 0


def test_a_failed_notification_keeps_its_attachments_for_the_retry(
    client, auth, store, requests_mock, env, runner
):
    requests_mock.post(POSTS, status_code=503, text="")
    response = client.post(
        "/api/v1/notifications",
        json={"type": "order", "text": "New order", "attachments": [{"color": "good"}]},
        headers=auth,
    )
    assert response.json["status"] == "failed"
    requests_mock.post(POSTS, json=created)
    requests_mock.get(
        f"{SERVER}/api/v4/channels/{ORDERS}/posts", json={"order": [], "posts": {}}, headers=JSON
    )
    runner.invoke(args=["retry", "test"])
    post = [p for p in posted(requests_mock) if p.get("message") == "New order"][-1]
    assert post["props"]["attachments"] == [{"color": "good"}]


def test_attachments_go_with_the_last_part_of_a_split_notification(client, auth, store, mattermost):
    store.update_environment("test", max_post_size=4000)
    text = "word " * 2000  # 10,000 characters: three parts
    client.post(
        "/api/v1/notifications",
        json={"type": "order", "text": text, "attachments": [{"text": "summary"}]},
        headers=auth,
    )
    sent = posted(mattermost)
    assert len(sent) == 3
    assert [("attachments" in p["props"]) for p in sent] == [False, False, True]


# -- a colour and a title per type -------------------------------------------------------------


def test_a_type_with_a_colour_and_title_is_posted_as_an_attachment(client, auth, store, mattermost):
    store.update_environment(
        "test", notify_styles={"payment.failed": {"color": "danger", "title": "Payment failed"}}
    )
    response = client.post(
        "/api/v1/notifications",
        json={
            "type": "payment.failed",
            "text": "Card declined for order #42",
            "attachments": [{"text": "retry link sent"}],
        },
        headers=auth,
    )
    assert response.json["status"] == "sent"
    [post] = posted(mattermost)
    assert post["message"] == ""
    assert post["props"]["attachments"] == [
        {
            "fallback": "Payment failed: Card declined for order #42",
            "text": "Card declined for order #42",
            "color": "danger",
            "title": "Payment failed",
        },
        {"text": "retry link sent"},
    ]
    # Other types stay plain text.
    client.post("/api/v1/notifications", json={"type": "order", "text": "plain"}, headers=auth)
    assert posted(mattermost)[-1]["message"] == "plain"
    assert "attachments" not in posted(mattermost)[-1]["props"]


@pytest.fixture
def channels(requests_mock, env):
    """The bot's channel list, for the configuration screen."""
    headers = {"X-Version-Id": "9.11.0", "Content-Type": "application/json"}
    requests_mock.get(
        f"{SERVER}/api/v4/users/me/teams",
        json=[{"id": "t" * 26, "name": "acme", "display_name": "Acme"}],
        headers=headers,
    )
    requests_mock.get(
        f"{SERVER}/api/v4/users/{BOT_ID}/teams/{'t' * 26}/channels",
        json=[
            {"id": MIRROR, "name": "support", "display_name": "Support", "type": "O"},
            {"id": ORDERS, "name": "orders", "display_name": "Orders", "type": "O"},
        ],
        headers=headers,
    )
    return requests_mock


def save_config(admin, colors, titles):
    return admin.post(
        "/env/test/config",
        data={
            "mirror_channel_id": MIRROR,
            "notify_type": ["order", "payment.failed"],
            "notify_channel": [ORDERS, ORDERS],
            "notify_color": colors,
            "notify_title": titles,
        },
    )


def test_the_configuration_screen_saves_a_colour_and_title_per_type(admin, store, channels):
    response = save_config(admin, ["", "#d24b4e"], ["", "Payment failed"])
    assert response.status_code == 302
    assert store.environment("test")["notify_styles"] == {
        "payment.failed": {"color": "#d24b4e", "title": "Payment failed"}
    }
    page = admin.get("/env/test/config").get_data(as_text=True)
    assert 'name="notify_color" value="#d24b4e"' in page
    assert 'name="notify_title" value="Payment failed"' in page


def test_the_configuration_screen_refuses_a_colour_mattermost_would_not_take(
    admin, store, channels
):
    page = save_config(admin, ["purple", ""], ["", ""]).get_data(as_text=True)
    assert "The colour for &#39;order&#39;: good, warning, danger or a hex colour" in page
    assert 'name="notify_color" value="purple"' in page  # the typed rows stay
    assert store.environment("test")["notify_styles"] == {}
