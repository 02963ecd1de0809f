"""Account login instead of a bot token (issue 11 part 1): the client, against requests-mock."""

from __future__ import annotations

import threading

import pytest

from bridge import mattermost as mm
from tests.ids import mm_id

SERVER = "https://chat.example.com"
VERSION_ID = "9.11.0.9.11.0.abc123.false"
JSON = {"Content-Type": "application/json", "X-Version-Id": VERSION_ID}
LOGIN = f"{SERVER}/api/v4/users/login"
ME = f"{SERVER}/api/v4/users/me"
POSTS = f"{SERVER}/api/v4/posts"
PASSWORD = "correct horse battery staple"
ACCOUNT = mm.AccountLogin("alice@acme.example", PASSWORD)
USER = {"id": mm_id("alice"), "username": "alice"}
CHANNEL, POST = mm_id("ch1"), mm_id("p1")
# The bodies Mattermost sends (api4/context.go SessionRequired; api4/user.go login).
EXPIRED = {
    "id": "api.context.session_expired.app_error",
    "message": "Invalid or expired session, please login again.",
    "detailed_error": "",
    "request_id": "r3qu3st1d",
    "status_code": 401,
}
WRONG_PASSWORD = {
    "id": "api.user.login.invalid_credentials_email_username",
    "message": "Enter a valid email or username and/or password.",
    "detailed_error": "",
    "request_id": "r3qu3st1d",
    "status_code": 401,
}


@pytest.fixture(autouse=True)
def no_sessions():
    mm._sessions.clear()
    yield
    mm._sessions.clear()


def client(session, records=None, login=ACCOUNT):
    on_call = records.append if records is not None else None
    return mm.MattermostClient(SERVER, login=login, session=session, on_call=on_call)


def tokens_handing_out(*tokens):
    """Login answers that hand out ``tokens`` in turn, in the Token header."""
    return [{"json": USER, "headers": {**JSON, "Token": token}} for token in tokens]


def calls(mock, url, method="POST"):
    return [r for r in mock.request_history if r.url == url and r.method == method]


def test_login_sends_the_credentials_and_uses_the_token_header(mock, session, records):
    mock.post(LOGIN, tokens_handing_out("sess1"))
    mock.get(ME, json=USER, headers=JSON)
    user, _ = client(session, records).me()
    assert user["username"] == "alice"
    (login,) = calls(mock, LOGIN)
    assert login.json() == {"login_id": "alice@acme.example", "password": PASSWORD}
    assert "Authorization" not in login.headers
    assert calls(mock, ME, "GET")[0].headers["Authorization"] == "Bearer sess1"
    assert [(r.action, r.target, r.ok) for r in records] == [
        ("login", "alice@acme.example", True),
        ("verify", "users/me", True),
    ]


def test_the_session_is_shared_by_clients_and_threads_of_the_process(mock, session):
    logins = []
    second_login = threading.Event()

    def log_in(request, context):
        logins.append(request)
        if len(logins) > 1:
            second_login.set()
        else:
            # Hold the first login a moment: without the per-account lock the
            # other threads log in meanwhile (and wake this one at once).
            second_login.wait(timeout=0.5)
        context.headers = {**JSON, "Token": f"sess{len(logins)}"}
        return USER

    mock.post(LOGIN, json=log_in)
    mock.get(ME, json=USER, headers=JSON)
    start = threading.Barrier(6)

    def verify():
        start.wait(timeout=5)
        client(session).me()

    threads = [threading.Thread(target=verify) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(logins) == 1
    assert [r.headers["Authorization"] for r in calls(mock, ME, "GET")] == ["Bearer sess1"] * 6


def test_a_changed_password_never_rides_on_the_old_session(mock, session):
    mock.post(LOGIN, tokens_handing_out("sess1", "sess2"))
    mock.get(ME, json=USER, headers=JSON)
    client(session).me()
    client(session, login=mm.AccountLogin("alice@acme.example", "another one")).me()
    assert len(calls(mock, LOGIN)) == 2
    assert calls(mock, LOGIN)[1].json()["password"] == "another one"


def test_an_expired_session_logs_in_again_once_and_resends_the_same_post(mock, session, records):
    mock.post(LOGIN, tokens_handing_out("sess1", "sess2"))
    mock.post(
        POSTS,
        [
            {"status_code": 401, "json": EXPIRED, "headers": JSON},
            {"status_code": 201, "json": {"id": POST}, "headers": JSON},
        ],
    )
    post = client(session, records).create_post(CHANNEL, "hello", pending_post_id="pend:1")
    assert post["id"] == POST
    assert len(calls(mock, LOGIN)) == 2
    first, second = calls(mock, POSTS)
    assert (
        first.json()
        == second.json()
        == {
            "channel_id": CHANNEL,
            "message": "hello",
            "pending_post_id": "pend:1",
        }
    )
    assert [first.headers["Authorization"], second.headers["Authorization"]] == [
        "Bearer sess1",
        "Bearer sess2",
    ]
    assert [(r.action, r.ok) for r in records] == [("login", True), ("login", True), ("post", True)]


def test_a_second_401_is_reported_not_retried_in_a_loop(mock, session):
    mock.post(LOGIN, tokens_handing_out("sess1", "sess2", "sess3"))
    mock.post(POSTS, status_code=401, json=EXPIRED, headers=JSON)
    with pytest.raises(mm.Unauthorized) as caught:
        client(session).create_post(CHANNEL, "hello", pending_post_id="pend:1")
    assert len(calls(mock, LOGIN)) == 2
    assert len(calls(mock, POSTS)) == 2
    assert "alice@acme.example" in str(caught.value)
    assert "even right after logging in again" in str(caught.value)


def test_a_bot_token_client_never_logs_in(mock, session):
    mock.post(POSTS, status_code=401, json=EXPIRED, headers=JSON)
    bot = mm.MattermostClient(SERVER, "bottoken0123456789abcdefgh", session=session)
    with pytest.raises(mm.Unauthorized):
        bot.create_post(CHANNEL, "hello")
    assert len(calls(mock, POSTS)) == 1
    assert not calls(mock, LOGIN)


def test_a_wrong_password_is_a_clear_error_naming_the_account(mock, session, records):
    mock.post(LOGIN, status_code=401, json=WRONG_PASSWORD, headers=JSON)
    with pytest.raises(mm.LoginFailed) as caught:
        client(session, records).me()
    assert str(caught.value) == (
        "Mattermost refused the login of account 'alice@acme.example': "
        "wrong username/e-mail or password."
    )
    assert not calls(mock, ME, "GET")
    assert records[0].action == "login" and records[0].status == 401
    assert PASSWORD not in repr(records) + repr(ACCOUNT)


def test_another_login_refusal_passes_on_what_mattermost_says(mock, session):
    locked = {
        **WRONG_PASSWORD,
        "id": "api.user.check_user_login_attempts.too_many.app_error",
        "message": "Your account is locked because of too many failed password attempts.",
    }
    mock.post(LOGIN, status_code=401, json=locked, headers=JSON)
    with pytest.raises(mm.LoginFailed) as caught:
        client(session).me()
    assert str(caught.value) == (
        "Mattermost refused the login of account 'alice@acme.example': "
        "Your account is locked because of too many failed password attempts."
    )


def test_the_login_rate_limit_is_respected_without_a_retry_loop(mock, session):
    # The rate limiter's reply (app/ratelimit.go): plain text, Retry-After.
    mock.post(
        LOGIN,
        status_code=429,
        text="limit exceeded\n",
        headers={"Retry-After": "30", "Content-Type": "text/plain; charset=utf-8"},
    )
    with pytest.raises(mm.RateLimited) as caught:
        client(session).me()
    assert caught.value.retry_after == pytest.approx(30, abs=1)
    assert "alice@acme.example" in str(caught.value)
    with pytest.raises(mm.RateLimited) as again:
        client(session).create_post(CHANNEL, "hello")
    assert len(calls(mock, LOGIN)) == 1  # no second try before Retry-After
    assert not calls(mock, POSTS)
    assert 0 < again.value.retry_after <= 30


def test_a_login_answer_without_a_token_header_is_not_mattermost(mock, session):
    mock.post(LOGIN, json=USER, headers=JSON)
    with pytest.raises(mm.NotMattermost, match="no Token header"):
        client(session).me()
