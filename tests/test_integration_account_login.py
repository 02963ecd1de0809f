"""Account login end to end: the bridge under gunicorn logs in to the stand-in as an
ordinary account, and a session that expires mid-run costs one re-login, not a post."""

from __future__ import annotations

import pytest

from tests.live import LiveBridge

pytestmark = pytest.mark.integration

PASSWORD = "relay-password-1"
WEBHOOK_TOKEN = "test-webhook-token-0123456"


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    # One worker process: its threads share one session, so what follows an
    # expiry (a 401, one login, the same post again) is the same on every run.
    with LiveBridge(tmp_path_factory.mktemp("live"), workers=1) as bridge:
        yield bridge


@pytest.fixture(scope="module")
def relay(mm):
    return mm.add_account("relay", PASSWORD)


def configure(live, mm, *args, check=True):
    return live.cli("configure", "test", "--server-url", mm.url, *args, check=check)


@pytest.fixture(scope="module")
def key(live, mm, relay):
    result = configure(
        live,
        mm,
        "--login-id",
        "relay@acme.example",
        "--password",
        PASSWORD,
        "--webhook-token",
        WEBHOOK_TOKEN,
        "--channel",
        mm.channels["support"]["id"],
        "--activate",
    )
    assert "Verified @relay, by account login: NOT a bot account" in result.stdout
    assert PASSWORD not in result.stdout + result.stderr
    return live.api_key("test")


def seen_since(mm, mark: int) -> list[str]:
    return [f"{method} {path}" for method, path in mm.requests_seen[mark:]]


def test_a_wrong_password_is_refused_naming_the_account_and_nothing_is_saved(live, mm, relay):
    result = configure(live, mm, "--login-id", "relay", "--password", "not-it", check=False)
    assert result.returncode == 1
    assert (
        "login check failed, nothing saved: Mattermost refused the login of account "
        "'relay': wrong username/e-mail or password." in result.stderr
    )
    assert "not-it" not in result.stdout + result.stderr
    (row,) = live.query("SELECT auth_mode, login_id, password FROM environments WHERE name='test'")
    assert row == {"auth_mode": "token", "login_id": "", "password": ""}


def test_configure_saves_the_account_login(live, mm, relay, key):
    (row,) = live.query(
        "SELECT auth_mode, login_id, password, bot_token, bot_username, bot_is_bot "
        "FROM environments WHERE name = 'test'"
    )
    assert row == {
        "auth_mode": "login",
        "login_id": "relay@acme.example",
        "password": PASSWORD,
        "bot_token": "",
        "bot_username": "relay",
        "bot_is_bot": 0,
    }


def test_an_expired_session_costs_one_login_and_the_post_is_made_once(live, mm, relay, key):
    support = mm.channels["support"]["id"]
    started = live.api(
        "POST",
        "/api/v1/conversations",
        key,
        json={"visitor": {"name": "Vera Visitor"}, "text": "Is the room free on Friday?"},
    )
    assert started.status_code == 201, started.text
    conversation = started.json()
    assert conversation["status"] == "sent"
    assert mm.get_post(conversation["root_post_id"])["user_id"] == relay["id"]
    posts_before = len(mm.posts_in(support))
    logins_before = len(mm.logins)

    mm.expire_sessions(relay)  # mid-run: the worker still holds the old session token
    mark = len(mm.requests_seen)
    reply = live.api(
        "POST",
        f"/api/v1/conversations/{conversation['id']}/messages",
        key,
        json={"text": "Two people, two nights."},
    )
    assert reply.status_code == 201, reply.text
    assert reply.json()["status"] == "sent"
    assert seen_since(mm, mark) == [
        "POST /api/v4/posts",  # 401 session expired
        "POST /api/v4/users/login",
        "POST /api/v4/posts",  # the same post again, with its pending_post_id
    ]
    assert mm.logins[logins_before:] == [("relay@acme.example", True)]
    assert mm.sessions_of(relay) == 1
    new_posts = mm.posts_in(support)[posts_before:]
    assert len(new_posts) == 1
    assert "Two people, two nights." in new_posts[0]["message"]
    assert new_posts[0]["id"] == reply.json()["post_id"]
    assert new_posts[0]["root_id"] == conversation["root_post_id"]
    logged = live.query(
        "SELECT action, outcome, http_status, target FROM log "
        "WHERE env = 'test' AND direction = 'outbound' ORDER BY id DESC LIMIT 2"
    )
    assert logged == [
        {"action": "post", "outcome": "ok", "http_status": 201, "target": support},
        {"action": "login", "outcome": "ok", "http_status": 200, "target": "relay@acme.example"},
    ]
