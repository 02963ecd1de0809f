"""bridge/cli.py: init, configure, api-key, retry, prune-log."""

from __future__ import annotations

import re
import time

import pytest
import requests

from bridge.store import MIGRATIONS
from tests.ids import VALID_ID, mm_id

SERVER = "https://chat.example.com"
GOOD_TOKEN = "g00dt0ken000000000000000ab"
BAD_TOKEN = "badt0ken0000000000000000ab"
ME = f"{SERVER}/api/v4/users/me"
JSON = {"Content-Type": "application/json", "X-Version-Id": "9.11.0.9.11.0.abc123.false"}
BOT = {"id": mm_id("botuserid"), "username": "bridgebot", "is_bot": True}
HOOK_TOKEN = mm_id("hooktoken")
CH1, CH2, CH3 = mm_id("ch1"), mm_id("ch2"), mm_id("ch3")
SUPPORT, ORDERS, PRIVATE = mm_id("supportch"), mm_id("ordersch"), mm_id("priv")
FIRST, SECOND, ROOT_POST = mm_id("first"), mm_id("second"), mm_id("rootpost")
CHANNEL = re.compile(r"/api/v4/channels/(?P<id>[^/]+)$")
MEMBER = re.compile(r"/api/v4/channels/(?P<id>[^/]+)/members/[^/]+$")
THREAD = re.compile(r"/api/v4/posts/(?P<id>[^/]+)/thread$")


def invoke(runner, *args):
    return runner.invoke(args=list(args))


def app_error(status, message="error"):
    return {
        "id": f"x.{status}",
        "message": message,
        "detailed_error": "",
        "request_id": "r",
        "status_code": status,
    }


@pytest.fixture
def mattermost(requests_mock):
    """A server where the good token is the bot and every channel is public with the bot in it."""

    def me(request, context):
        context.headers.update(JSON)
        if request.headers.get("Authorization") == f"Bearer {GOOD_TOKEN}":
            return BOT
        context.status_code = 401
        return app_error(401, "Invalid or expired session, please login again.")

    def invalid_id(context, name):
        """What api4 answers for an id that is not 26 letters and digits."""
        context.status_code = 400
        return {
            **app_error(400, f"Invalid or missing {name} parameter in request URL."),
            "id": "api.context.invalid_url_param.app_error",
        }

    def channel(request, context):
        context.headers.update(JSON)
        channel_id = CHANNEL.search(request.path).group("id")
        if not VALID_ID.fullmatch(channel_id):
            return invalid_id(context, "channel_id")
        return {
            "id": channel_id,
            "name": channel_id,
            "display_name": f"Channel {channel_id}",
            "type": "O",
        }

    def member(request, context):
        context.headers.update(JSON)
        if not VALID_ID.fullmatch(MEMBER.search(request.path).group("id")):
            return invalid_id(context, "channel_id")
        return {"user_id": BOT["id"]}

    def thread(request, context):
        """GET /posts/{id}/thread: the thread always holds its root (here: alone)."""
        context.headers.update(JSON)
        root_id = THREAD.search(request.path).group("id")
        if not VALID_ID.fullmatch(root_id):
            return invalid_id(context, "post_id")
        root = {"id": root_id, "root_id": "", "message": "the root", "props": {}}
        return {"order": [root_id], "posts": {root_id: root}}

    requests_mock.get(ME, json=me)
    requests_mock.get(f"{SERVER}/api/v4/config/client", json={"MaxPostSize": "16383"}, headers=JSON)
    # A retry first asks whether Mattermost already has the post: here it never has.
    requests_mock.get(THREAD, json=thread)
    requests_mock.get(
        re.compile(r".*/api/v4/channels/[^/]+/posts"), json={"order": [], "posts": {}}, headers=JSON
    )
    requests_mock.get(CHANNEL, json=channel)
    requests_mock.get(MEMBER, json=member)
    return requests_mock


def configure(runner, *args):
    return invoke(
        runner, "configure", "test", "--server-url", SERVER, "--bot-token", GOOD_TOKEN, *args
    )


# -- running the commands ---------------------------------------------------------------


def test_commands_run_from_the_flask_test_runner(runner):
    # app.test_cli_runner().invoke(args=[...]) is how Flask documents testing
    # commands (and conftest's admin fixture uses it for set-password).
    result = runner.invoke(args=["api-key", "test"])
    assert result.exit_code == 0, result.output or repr(result.exception)
    assert result.stdout.strip().splitlines()[-1].startswith("mmb_test_")


def test_init_twice_is_fine(app, runner, tmp_path, monkeypatch, store):
    monkeypatch.delenv("BRIDGE_SECRET_KEY", raising=False)
    app.instance_path = str(tmp_path / "instance")
    first = invoke(runner, "init")
    assert first.exit_code == 0, first.output
    key = (tmp_path / "instance" / "secret_key").read_text()
    second = invoke(runner, "init")
    assert second.exit_code == 0, second.output
    assert f"schema version {len(MIGRATIONS)}" in second.output
    assert (tmp_path / "instance" / "secret_key").read_text() == key
    assert store.schema_version() == len(MIGRATIONS)


def test_set_password_refuses_a_short_password(runner, store):
    result = invoke(runner, "set-password", "--password", "short")
    assert result.exit_code != 0
    assert "8 characters" in result.output
    assert store.get_meta("admin_password_hash") is None


# -- configure ---------------------------------------------------------------------------


def test_configure_with_a_wrong_token_fails_and_saves_nothing(runner, store, mattermost):
    result = invoke(
        runner,
        "configure",
        "test",
        "--server-url",
        SERVER,
        "--bot-token",
        BAD_TOKEN,
        "--webhook-token",
        HOOK_TOKEN,
        "--channel",
        CH1,
    )
    assert result.exit_code != 0
    assert "token" in result.output and "invalid" in result.output
    assert "nothing saved" in result.output
    assert BAD_TOKEN not in result.output
    settings = store.environment("test")
    assert (
        settings["server_url"],
        settings["bot_token"],
        settings["webhook_token"],
        settings["mirror_channel_id"],
        settings["bot_user_id"],
    ) == ("", "", "", "", "")


def test_configure_with_an_unreachable_server_fails_and_saves_nothing(runner, store, requests_mock):
    requests_mock.get(ME, exc=requests.exceptions.ConnectionError)
    result = configure(runner)
    assert result.exit_code != 0
    assert "cannot reach" in result.output
    assert store.environment("test")["bot_token"] == ""


def test_configure_needs_a_server_and_token_the_first_time(runner, store, requests_mock):
    result = invoke(runner, "configure", "test", "--webhook-token", HOOK_TOKEN)
    assert result.exit_code != 0
    assert "--server-url" in result.output and "--bot-token" in result.output
    assert requests_mock.call_count == 0
    assert store.environment("test")["webhook_token"] == ""


def test_a_new_server_url_without_bot_token_is_refused_and_sends_the_token_nowhere(
    runner, store, mattermost
):
    assert configure(runner).exit_code == 0
    elsewhere = "https://mattermost.elsewhere.example"
    mattermost.get(f"{elsewhere}/api/v4/users/me", json=BOT, headers=JSON)
    result = invoke(runner, "configure", "test", "--server-url", elsewhere)
    assert result.exit_code == 1
    assert "a new --server-url needs --bot-token too" in result.output
    assert [r.url for r in mattermost.request_history if r.url.startswith(elsewhere)] == []
    assert store.environment("test")["server_url"] == SERVER


def test_configure_with_a_good_token_stores_the_bot(runner, store, mattermost):
    result = invoke(
        runner,
        "configure",
        "test",
        "--server-url",
        "chat.example.com/api/v4",
        "--bot-token",
        GOOD_TOKEN,
        "--webhook-token",
        HOOK_TOKEN,
    )
    assert result.exit_code == 0, result.output
    assert "@bridgebot" in result.output and "9.11.0" in result.output
    settings = store.environment("test")
    assert settings["server_url"] == SERVER
    assert settings["bot_token"] == GOOD_TOKEN
    assert settings["bot_user_id"] == BOT["id"]
    assert settings["bot_username"] == "bridgebot"
    assert settings["bot_is_bot"] is True
    assert settings["server_version"] == "9.11.0"
    assert settings["webhook_token"] == HOOK_TOKEN
    assert settings["active"] is False
    assert GOOD_TOKEN not in result.output
    assert all(GOOD_TOKEN not in repr(row) for row in store.log_page())


def test_options_not_given_keep_their_saved_values(runner, store, mattermost):
    configure(
        runner,
        "--webhook-token",
        HOOK_TOKEN,
        "--channel",
        CH1,
        "--callback-url",
        "https://host.example.com/cb",
        "--callback-secret",
        "s",
    )
    result = invoke(runner, "configure", "test", "--callback-url", "")
    assert result.exit_code == 0, result.output
    settings = store.environment("test")
    assert settings["webhook_token"] == HOOK_TOKEN
    assert settings["mirror_channel_id"] == CH1
    assert settings["callback_secret"] == "s"
    assert settings["callback_url"] == ""


def test_notify_replaces_the_whole_map(runner, store, mattermost):
    first = configure(runner, "--notify", f"order={CH1}", "--notify", f"refund={CH2}")
    assert first.exit_code == 0, first.output
    assert store.environment("test")["notify_map"] == {"order": CH1, "refund": CH2}

    second = configure(runner, "--notify", f"signup={CH3}")
    assert second.exit_code == 0, second.output
    assert store.environment("test")["notify_map"] == {"signup": CH3}

    third = configure(runner, "--webhook-token", HOOK_TOKEN)
    assert third.exit_code == 0, third.output
    assert store.environment("test")["notify_map"] == {"signup": CH3}


def test_notify_with_an_empty_channel_drops_the_type(runner, store, mattermost):
    configure(runner, "--notify", f"order={CH1}", "--notify", "refund=")
    assert store.environment("test")["notify_map"] == {"order": CH1}


def test_notify_that_is_not_type_equals_channel_is_a_usage_error(runner, store, mattermost):
    result = configure(runner, "--notify", "order")
    assert result.exit_code == 2
    assert "TYPE=CHANNEL_ID" in result.output
    assert store.environment("test")["bot_token"] == ""


def test_bad_server_url_is_a_usage_error(runner, requests_mock):
    result = invoke(
        runner, "configure", "test", "--server-url", "ftp://x", "--bot-token", GOOD_TOKEN
    )
    assert result.exit_code == 2
    assert "--server-url" in result.output
    assert requests_mock.call_count == 0


def test_channel_the_bot_is_not_a_member_of_is_saved_with_a_warning(runner, store, mattermost):
    mattermost.get(
        MEMBER,
        status_code=404,
        headers=JSON,
        json=app_error(404, "No channel member found for that user ID and channel ID."),
    )
    result = configure(runner, "--channel", SUPPORT)
    assert result.exit_code == 0, result.output
    assert "not a member" in result.stderr
    assert f"Channel {SUPPORT}" in result.stderr
    settings = store.environment("test")
    assert settings["mirror_channel_id"] == SUPPORT
    assert settings["mirror_channel_name"] == f"Channel {SUPPORT}"


def test_private_mirror_channel_is_saved_with_a_webhook_warning(runner, store, mattermost):
    mattermost.get(
        CHANNEL,
        headers=JSON,
        json={"id": PRIVATE, "name": PRIVATE, "display_name": "Private", "type": "P"},
    )
    result = configure(runner, "--channel", PRIVATE)
    assert result.exit_code == 0, result.output
    assert "not a public channel" in result.stderr
    assert store.environment("test")["mirror_channel_id"] == PRIVATE


def test_notification_channel_without_the_bot_is_warned_about(runner, store, mattermost):
    mattermost.get(MEMBER, status_code=404, headers=JSON, json=app_error(404))
    result = configure(runner, "--notify", f"order={ORDERS}")
    assert result.exit_code == 0, result.output
    assert ORDERS in result.stderr and "not a member" in result.stderr
    assert store.environment("test")["notify_map"] == {"order": ORDERS}


def test_new_mirror_channel_that_cannot_be_read_does_not_keep_the_old_name(
    runner, store, mattermost
):
    configure(runner, "--channel", FIRST)
    assert store.environment("test")["mirror_channel_name"] == f"Channel {FIRST}"
    mattermost.get(
        f"{SERVER}/api/v4/channels/{SECOND}",
        status_code=403,
        headers=JSON,
        json=app_error(403, "You do not have the appropriate permissions."),
    )
    result = configure(runner, "--channel", SECOND)
    assert result.exit_code == 0, result.output
    assert "Warning" in result.stderr
    settings = store.environment("test")
    assert settings["mirror_channel_id"] == SECOND
    assert settings["mirror_channel_name"] != f"Channel {FIRST}"


def test_activate_needs_a_verified_bot_and_a_channel(runner, store, requests_mock):
    result = invoke(runner, "configure", "test", "--activate")
    assert result.exit_code != 0
    assert "cannot activate" in result.output
    assert store.environment("test")["active"] is False
    assert requests_mock.call_count == 0


def test_activate_and_deactivate_a_configured_environment(runner, store, mattermost):
    configure(runner, "--channel", CH1)
    calls = mattermost.call_count
    result = invoke(runner, "configure", "test", "--activate")
    assert result.exit_code == 0, result.output
    assert "(active)" in result.output
    assert store.environment("test")["active"] is True
    assert mattermost.call_count == calls  # switching needs no server
    result = invoke(runner, "configure", "test", "--deactivate")
    assert "(inactive)" in result.output
    assert store.environment("test")["active"] is False


# -- api-key ------------------------------------------------------------------------------


def test_api_key_prints_the_key_alone_on_the_last_line_and_replaces_the_old_one(runner, client):
    first = invoke(runner, "api-key", "test")
    assert first.exit_code == 0, first.output
    old_key = first.stdout.rstrip("\n").splitlines()[-1]
    assert re.fullmatch(r"mmb_test_[A-Za-z0-9_\-]{40,}", old_key)

    second = invoke(runner, "api-key", "test")
    new_key = second.stdout.rstrip("\n").splitlines()[-1]
    assert new_key != old_key

    url = "/api/v1/conversations/unknown"
    assert client.get(url, headers={"Authorization": f"Bearer {old_key}"}).status_code == 401
    assert client.get(url, headers={"Authorization": f"Bearer {new_key}"}).status_code == 404


def test_api_keys_of_the_two_environments_are_independent(runner, store):
    test_key = invoke(runner, "api-key", "test").stdout.splitlines()[-1]
    prod_key = invoke(runner, "api-key", "production").stdout.splitlines()[-1]
    assert store.environment_for_api_key(test_key)["name"] == "test"
    assert store.environment_for_api_key(prod_key)["name"] == "production"


def test_api_key_for_an_unknown_environment_is_a_usage_error(runner):
    result = invoke(runner, "api-key", "staging")
    assert result.exit_code == 2


# -- retry ------------------------------------------------------------------------------


def test_retry_sends_failed_messages_and_exits_non_zero_while_some_still_fail(
    runner, store, requests_mock
):
    store.update_environment(
        "test",
        server_url=SERVER,
        bot_token=GOOD_TOKEN,
        bot_user_id=BOT["id"],
        mirror_channel_id=CH1,
        active=1,
    )
    conversation, message = store.create_conversation("test", "Ann", "", "", "Hello")
    store.finish_message(message["id"], "failed", error="earlier failure")
    posts = f"{SERVER}/api/v4/posts"
    requests_mock.get(
        f"{SERVER}/api/v4/channels/{CH1}/posts", headers=JSON, json={"order": [], "posts": {}}
    )  # not posted by an earlier attempt

    requests_mock.post(posts, status_code=403, headers=JSON, json=app_error(403))
    result = invoke(runner, "retry", "test")
    assert result.exit_code == 1
    assert "1 still failed" in result.output

    requests_mock.post(posts, status_code=201, headers=JSON, json={"id": ROOT_POST})
    result = invoke(runner, "retry")
    assert result.exit_code == 0, result.output
    assert "1 sent" in result.output
    assert store.message(message["id"])["status"] == "sent"
    assert store.conversation(conversation["id"])["root_post_id"] == ROOT_POST


# -- prune-log ------------------------------------------------------------------------------


def test_prune_log_deletes_rows_older_than_days(runner, store):
    old = store.log(env="test", direction="outbound", action="post", outcome="ok")
    fresh = store.log(env="test", direction="outbound", action="post", outcome="ok")
    store.db.execute("UPDATE log SET ts = ? WHERE id = ?", [time.time() - 10 * 86400, old])
    result = invoke(runner, "prune-log", "--days", "7")
    assert result.exit_code == 0, result.output
    assert "Deleted 1 log rows older than 7 days" in result.output
    assert [row["id"] for row in store.log_page()] == [fresh]


def test_prune_log_requires_a_non_negative_days(runner):
    assert invoke(runner, "prune-log").exit_code == 2
    assert invoke(runner, "prune-log", "--days", "-1").exit_code == 2


def test_notify_type_with_a_space_is_refused_like_on_the_web_screen(runner, store, mattermost):
    result = configure(runner, "--notify", f"booking created={CH1}")
    assert result.exit_code != 0
    assert "letters, digits" in result.output
    assert store.environment("test")["notify_map"] == {}


def test_a_callback_url_without_a_secret_is_refused(runner, store, mattermost):
    result = configure(runner, "--callback-url", "https://host.example.com/cb")
    assert result.exit_code != 0 and "--callback-secret" in result.output
    assert store.environment("test")["callback_url"] == ""
