"""The authentication screen with an account login: the Flask test client, Mattermost
mocked with requests-mock (users/login hands out a session in the Token header)."""

from __future__ import annotations

import pytest

from bridge import mattermost as mm_client

SERVER = "https://chat.example.com"
ELSEWHERE = "https://mattermost.elsewhere.example"
PASSWORD = "relay-password-1"
RELAY = {"id": "r" * 26, "username": "relay"}
BOT_TOKEN = "goodtokengoodtokengoodtok1"
JSON = {"X-Version-Id": "9.11.0.9.11.0.x.false", "Content-Type": "application/json"}
WRONG = {
    "id": "api.user.login.invalid_credentials_email_username",
    "message": "Enter a valid email or username and/or password.",
    "status_code": 401,
}


@pytest.fixture(autouse=True)
def no_sessions():
    mm_client._sessions.clear()
    yield
    mm_client._sessions.clear()


def mock_server(requests_mock, base):
    def login(request, context):
        body = request.json()
        if body != {"login_id": "relay", "password": PASSWORD}:
            context.status_code = 401
            return WRONG
        context.headers["Token"] = "session-token-" + base[-7:]
        return RELAY

    def me(request, context):
        if request.headers.get("Authorization") not in (
            f"Bearer session-token-{base[-7:]}",
            f"Bearer {BOT_TOKEN}",
        ):
            context.status_code = 401
            return {"id": "api.context.session_expired.app_error", "status_code": 401}
        bearer = request.headers["Authorization"]
        return {"id": "b" * 26, "username": "bot", "is_bot": True} if BOT_TOKEN in bearer else RELAY

    requests_mock.post(f"{base}/api/v4/users/login", json=login, headers=JSON)
    requests_mock.get(f"{base}/api/v4/users/me", json=me, headers=JSON)
    requests_mock.get(f"{base}/api/v4/config/client", json={}, headers=JSON)


@pytest.fixture
def mm(requests_mock):
    mock_server(requests_mock, SERVER)
    mock_server(requests_mock, ELSEWHERE)
    return requests_mock


def save_auth(admin, **form):
    data = {"server_url": SERVER, "auth_mode": "login", "webhook_token": "", **form}
    return admin.post("/env/test/auth", data=data, headers={"HX-Request": "true"})


def logins_to(mock, base):
    return [r for r in mock.request_history if r.url == f"{base}/api/v4/users/login"]


def test_an_account_login_is_verified_saved_and_its_password_never_shown(admin, store, mm):
    page = save_auth(admin, login_id="relay", password=PASSWORD).get_data(as_text=True)
    assert "Saved and verified." in page
    assert "@relay (account login)" in page
    assert "Not a bot account." in page
    assert "no — an ordinary user account" in page
    assert "Saved password: <code>••••••••</code>" in page
    assert PASSWORD not in page
    settings = store.environment("test")
    assert (settings["auth_mode"], settings["login_id"], settings["password"]) == (
        "login",
        "relay",
        PASSWORD,
    )
    assert (settings["bot_username"], settings["bot_is_bot"]) == ("relay", False)
    logged = store.db.execute("SELECT action, target, error FROM log").fetchall()
    assert ("login", "relay", "") in logged
    assert PASSWORD not in repr(logged)


def test_a_wrong_password_saves_nothing_and_names_the_account(admin, store, mm):
    page = save_auth(admin, login_id="relay", password="nope").get_data(as_text=True)
    assert (
        "Nothing saved: Mattermost refused the login of account &#39;relay&#39;: "
        "wrong username/e-mail or password." in page
    )
    settings = store.environment("test")
    assert (settings["auth_mode"], settings["login_id"], settings["password"]) == ("token", "", "")


def test_the_saved_password_goes_only_to_the_saved_server(admin, store, mm):
    save_auth(admin, login_id="relay", password=PASSWORD)
    page = save_auth(admin, server_url=ELSEWHERE, login_id="relay", password="")
    assert "The server URL changed: type the password again." in page.get_data(as_text=True)
    verify = admin.post(
        "/env/test/auth/verify",
        data={"server_url": ELSEWHERE, "auth_mode": "login", "login_id": "relay"},
    )
    assert "type the password again" in verify.get_data(as_text=True)
    assert logins_to(mm, ELSEWHERE) == []
    assert store.environment("test")["server_url"] == SERVER


def test_the_saved_password_goes_only_for_the_saved_account(admin, store, mm):
    save_auth(admin, login_id="relay", password=PASSWORD)
    page = save_auth(admin, login_id="someone-else", password="").get_data(as_text=True)
    assert "The account changed: type its password." in page
    assert len(logins_to(mm, SERVER)) == 1  # the first save's only
    assert store.environment("test")["login_id"] == "relay"


def test_saving_again_without_typing_uses_the_saved_password(admin, store, mm):
    save_auth(admin, login_id="relay", password=PASSWORD)
    mm_client._sessions.clear()  # a fresh process: it has to log in again
    page = save_auth(admin, login_id="relay", password="").get_data(as_text=True)
    assert "Saved. Verified @relay." in page
    assert logins_to(mm, SERVER)[-1].json() == {"login_id": "relay", "password": PASSWORD}


def test_verify_without_saving_tries_the_typed_login(admin, store, mm):
    page = admin.post(
        "/env/test/auth/verify",
        data={
            "server_url": SERVER,
            "auth_mode": "login",
            "login_id": "relay",
            "password": PASSWORD,
        },
    ).get_data(as_text=True)
    assert "These values work but are not saved yet" in page
    assert "@relay (account login)" in page
    assert store.environment("test")["auth_mode"] == "token"


def test_switching_back_to_a_bot_token_forgets_the_password(admin, store, mm):
    save_auth(admin, login_id="relay", password=PASSWORD)
    page = save_auth(admin, auth_mode="token", bot_token=BOT_TOKEN).get_data(as_text=True)
    assert "Saved and verified." in page
    settings = store.environment("test")
    assert (settings["auth_mode"], settings["bot_token"]) == ("token", BOT_TOKEN)
    assert (settings["login_id"], settings["password"]) == ("", "")


def test_an_unknown_auth_mode_is_refused(admin, store, mm):
    response = save_auth(admin, auth_mode="cookie", login_id="relay", password=PASSWORD)
    assert "choose bot token or account login" in response.get_data(as_text=True)
    assert logins_to(mm, SERVER) == []


def test_the_checklist_warns_that_an_account_login_is_not_a_bot(admin, store, mm):
    save_auth(admin, login_id="relay", password=PASSWORD)
    page = admin.get("/checklist").get_data(as_text=True)
    item = page[page.index('data-item="bot_token"') :][:1500]
    assert '<span class="badge warn">warning</span>' in item
    assert "@relay signs in by account login: a regular user account, not a bot account" in item


# -- configure --login-id ID --password P ------------------------------------------------


def test_configure_saves_a_verified_account_login(runner, store, mm):
    result = runner.invoke(
        args=["configure", "test", "--server-url", SERVER, "--login-id", "relay"]
        + ["--password", PASSWORD]
    )
    assert result.exit_code == 0, result.output
    assert "Verified @relay, by account login: NOT a bot account" in result.output
    assert PASSWORD not in result.output
    settings = store.environment("test")
    assert (settings["auth_mode"], settings["login_id"], settings["password"]) == (
        "login",
        "relay",
        PASSWORD,
    )


def test_configure_refuses_a_token_and_a_login_together(runner, store, mm):
    result = runner.invoke(
        args=["configure", "test", "--server-url", SERVER, "--bot-token", BOT_TOKEN]
        + ["--login-id", "relay", "--password", PASSWORD]
    )
    assert result.exit_code == 2
    assert "give --bot-token, or --login-id and --password, not both" in result.output
    assert mm.call_count == 0


def test_configure_sends_the_saved_password_to_no_new_server(runner, store, mm):
    args = ["configure", "test", "--server-url", SERVER, "--login-id", "relay"]
    assert runner.invoke(args=args + ["--password", PASSWORD]).exit_code == 0
    result = runner.invoke(args=["configure", "test", "--server-url", ELSEWHERE])
    assert result.exit_code == 1
    assert "The server URL changed: type the password again." in result.output
    assert "(--password); nothing saved" in result.output
    assert logins_to(mm, ELSEWHERE) == []
    assert store.environment("test")["server_url"] == SERVER
