"""Sign in with Mattermost (OAuth 2.0), against a Mattermost mocked with requests-mock.

The state check, who may sign in, each failure's page, the session it opens
(and that logout or a new password ends it), throttling, the password
fallback switch, the settings screen and the ``oauth`` command.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from bridge import mattermost as mm
from bridge import oauth
from bridge.views.auth import LOGIN_TRIES_PER_ADDRESS
from tests.conftest import ADMIN_PASSWORD

SERVER = "https://chat.example.com"
CLIENT_ID = "c1ient1d0000000000000000aa"
CLIENT_SECRET = "s3cretva1ue00000000000000z"
ACCESS_TOKEN = "acce55t0ken000000000000000"
TOKEN_URL = f"{SERVER}/oauth/access_token"
ME_URL = f"{SERVER}/api/v4/users/me"
TEAMS_URL = f"{SERVER}/api/v4/users/me/teams"
CALLBACK = "http://localhost/login/mattermost/callback"
JSON = {"Content-Type": "application/json", "X-Version-Id": "9.11.0.9.11.0.abc.false"}
ADMIN_USER = {"id": "a" * 26, "username": "root-rita", "roles": "system_user system_admin"}
PLAIN_USER = {"id": "p" * 26, "username": "plain-paul", "roles": "system_user"}
ACME = {"id": "t" * 26, "name": "acme", "display_name": "Acme", "delete_at": 0}


# -- pure functions ---------------------------------------------------------------


def test_the_state_must_be_this_sessions_fresh_state():
    state = oauth.new_state()
    oauth.check_state(state, 1000.0, state, now=1000.0 + oauth.STATE_TTL_SECONDS)
    for expected, issued_at, given, now in (
        (None, 1000.0, state, 1000.0),  # not started in this browser, or used already
        (state, 1000.0, None, 1000.0),  # no state came back
        (state, 1000.0, state[:-1] + "x", 1000.0),  # another state
        (state, 1000.0, state, 1000.0 + oauth.STATE_TTL_SECONDS + 1),  # too old
        (state, None, state, 1000.0),
    ):
        with pytest.raises(oauth.SignInError) as refused:
            oauth.check_state(expected, issued_at, given, now)
        assert refused.value.status == 400


def test_system_admin_is_a_whole_role_and_teams_match_by_name_or_id():
    assert oauth.is_system_admin({"roles": "system_user system_admin"})
    assert not oauth.is_system_admin({"roles": "system_user"})
    assert not oauth.is_system_admin({"roles": "system_user custom_system_admin_x"})
    assert not oauth.is_system_admin({})
    assert oauth.in_team([ACME], "ACME")
    assert oauth.in_team([ACME], "t" * 26)
    assert not oauth.in_team([ACME], "acme-ops")
    assert not oauth.in_team([{**ACME, "delete_at": 5}], "acme")  # an archived team


def test_the_authorize_url_carries_code_client_redirect_and_state():
    settings = oauth.OAuthSettings(SERVER + "/", CLIENT_ID, CLIENT_SECRET)
    url = urlsplit(oauth.authorize_url(settings, CALLBACK, "st4te"))
    assert (url.scheme, url.netloc, url.path) == ("https", "chat.example.com", "/oauth/authorize")
    assert parse_qs(url.query) == {
        "response_type": ["code"],
        "client_id": [CLIENT_ID],
        "redirect_uri": [CALLBACK],
        "state": ["st4te"],
    }


# -- the flow against a mocked Mattermost --------------------------------------------


@pytest.fixture
def configured(store, runner):
    if not store.get_meta("admin_password_hash"):  # the admin fixture may have set it
        runner.invoke(args=["set-password", "--password", ADMIN_PASSWORD])
    store.save_oauth_settings(
        server_url=SERVER, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, team=""
    )
    return store


def mattermost(requests_mock, user=ADMIN_USER, teams=()):
    requests_mock.post(
        TOKEN_URL,
        json={
            "access_token": ACCESS_TOKEN,
            "token_type": "bearer",
            "expires_in": 2592000,
            "scope": "user",
            "refresh_token": "r" * 26,
        },
        headers=JSON,
    )
    requests_mock.get(ME_URL, json=user, headers=JSON)
    requests_mock.get(TEAMS_URL, json=list(teams), headers=JSON)


def start(client) -> str:
    """Press *Sign in with Mattermost*; the state sent to Mattermost."""
    response = client.get("/login/mattermost")
    assert response.status_code == 302
    location = urlsplit(response.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == SERVER + "/oauth/authorize"
    query = parse_qs(location.query)
    assert query["redirect_uri"] == [CALLBACK] and query["client_id"] == [CLIENT_ID]
    return query["state"][0]


def callback(client, state: str, code: str = "c0de" * 13, address: str = "127.0.0.1"):
    return client.get(
        "/login/mattermost/callback",
        query_string={"code": code, "state": state},
        environ_overrides={"REMOTE_ADDR": address},
    )


def is_signed_in(client) -> bool:
    return client.get("/").status_code == 200


def test_a_system_admin_signs_in_and_acts_under_the_mattermost_username(
    client, configured, requests_mock
):
    mattermost(requests_mock)
    login = client.get("/login").get_data(as_text=True)
    assert "Sign in with Mattermost" in login and 'name="password"' in login
    response = callback(client, start(client), code="the-code-from-mattermost")
    assert response.status_code == 302 and response.headers["Location"] == "/"
    page = client.get("/").get_data(as_text=True)
    assert "Log out root-rita" in page
    with client.session_transaction() as session:
        assert session["admin_name"] == "root-rita"
    exchange, me = requests_mock.request_history
    assert parse_qs(exchange.text) == {
        "grant_type": ["authorization_code"],
        "code": ["the-code-from-mattermost"],
        "redirect_uri": [CALLBACK],
        "client_id": [CLIENT_ID],
        "client_secret": [CLIENT_SECRET],
    }
    assert me.headers["Authorization"] == f"Bearer {ACCESS_TOKEN}"
    assert exchange.timeout == me.timeout == mm.DEFAULT_TIMEOUT
    assert configured.last_oauth_sign_in()["username"] == "root-rita"
    # A checklist tick is made under that name.
    client.post("/checklist/test/auth_filled/toggle")
    assert configured.ticks("test")["auth_filled"]["ticked_by"] == "root-rita"


def test_a_replayed_state_is_refused_even_with_the_old_cookie(client, configured, requests_mock):
    mattermost(requests_mock)
    state = start(client)
    cookie = client.get_cookie("session").value
    assert callback(client, state).status_code == 302
    client.post("/logout")
    # Same browser: the state was taken out of its session.
    replay = callback(client, state)
    assert replay.status_code == 400 and "Start again" in replay.get_data(as_text=True)
    # An old copy of the cookie still holds the state: the server remembers it was used.
    client.set_cookie("session", cookie)
    replay = callback(client, state)
    assert replay.status_code == 400
    assert "was used already" in replay.get_data(as_text=True)
    assert not is_signed_in(client)
    assert [r.url for r in requests_mock.request_history].count(TOKEN_URL) == 1


def test_a_wrong_state_is_refused_before_asking_mattermost(client, configured, requests_mock):
    mattermost(requests_mock)
    state = start(client)
    response = callback(client, state[:-2] + "zz")
    assert response.status_code == 400
    assert "wrong state" in response.get_data(as_text=True)
    assert requests_mock.request_history == []
    assert not is_signed_in(client)
    # Not started in this browser at all.
    assert callback(client, state).status_code == 400  # and the real one is spent too


def test_a_plain_user_gets_a_refusal_page_and_no_session(client, configured, requests_mock):
    mattermost(requests_mock, user=PLAIN_USER)
    response = callback(client, start(client))
    assert response.status_code == 403
    page = response.get_data(as_text=True)
    assert "@plain-paul signed in to Mattermost, but only system admins may" in page
    assert not is_signed_in(client)
    assert configured.last_oauth_sign_in() is None
    assert TEAMS_URL not in [r.url for r in requests_mock.request_history]  # no team named


def test_members_of_the_named_team_may_sign_in_others_not(client, configured, requests_mock):
    configured.save_oauth_settings(team="acme")
    mattermost(requests_mock, user=PLAIN_USER, teams=[ACME])
    assert callback(client, start(client)).status_code == 302
    assert "Log out plain-paul" in client.get("/").get_data(as_text=True)
    assert requests_mock.request_history[-1].headers["Authorization"] == f"Bearer {ACCESS_TOKEN}"
    client.post("/logout")
    mattermost(requests_mock, user=PLAIN_USER, teams=[{**ACME, "name": "other", "id": "o" * 26}])
    response = callback(client, start(client))
    assert response.status_code == 403
    assert "but only system admins and members of the team acme may" in response.get_data(
        as_text=True
    )
    assert not is_signed_in(client)


def test_a_code_exchange_failure_is_a_readable_page(client, configured, requests_mock):
    requests_mock.post(
        TOKEN_URL,
        status_code=400,
        headers=JSON,
        json={
            "id": "api.oauth.get_access_token.expired_code.app_error",
            "message": "invalid_grant: Invalid or expired authorization code.",
            "status_code": 400,
        },
    )
    response = callback(client, start(client))
    assert response.status_code == 502
    page = response.get_data(as_text=True)
    assert "refused to exchange the sign-in code (HTTP 400)" in page
    assert "invalid_grant: Invalid or expired authorization code." in page
    assert "Nobody was signed in." in page
    assert CLIENT_SECRET not in page
    assert not is_signed_in(client)


@pytest.mark.parametrize(
    ("failure", "said"),
    [
        (requests.exceptions.ConnectionError, "cannot reach chat.example.com"),
        (requests.exceptions.ConnectTimeout, "did not answer in time"),
    ],
)
def test_an_unreachable_server_is_a_readable_page(client, configured, requests_mock, failure, said):
    requests_mock.post(TOKEN_URL, exc=failure)
    response = callback(client, start(client))
    assert response.status_code == 502
    assert said in response.get_data(as_text=True)
    assert not is_signed_in(client)


def test_users_me_failing_lets_nobody_in(client, configured, requests_mock):
    mattermost(requests_mock)
    requests_mock.get(ME_URL, exc=requests.exceptions.ReadTimeout)
    response = callback(client, start(client))
    assert response.status_code == 502
    assert "Mattermost did not say who signed in" in response.get_data(as_text=True)
    assert ACCESS_TOKEN not in response.get_data(as_text=True)
    assert not is_signed_in(client)


def test_mattermost_saying_access_denied_lets_nobody_in(client, configured, requests_mock):
    state = start(client)
    response = client.get(
        "/login/mattermost/callback", query_string={"error": "access_denied", "state": state}
    )
    assert response.status_code == 403
    assert "Mattermost did not sign you in (access_denied)" in response.get_data(as_text=True)
    assert requests_mock.request_history == []
    assert not is_signed_in(client)


def test_not_set_up_is_a_readable_page(client, runner):
    runner.invoke(args=["set-password", "--password", ADMIN_PASSWORD])
    assert "Sign in with Mattermost" not in client.get("/login").get_data(as_text=True)
    response = client.get("/login/mattermost")
    assert response.status_code == 404
    assert "not set up on this bridge" in response.get_data(as_text=True)


def test_bad_states_count_as_failed_logins(client, configured, requests_mock):
    for _ in range(LOGIN_TRIES_PER_ADDRESS):
        assert callback(client, "forged", address="203.0.113.9").status_code == 400
    mattermost(requests_mock)
    throttled = callback(client, start(client), address="203.0.113.9")
    assert throttled.status_code == 429
    wait = int(throttled.headers["Retry-After"])
    assert f"Too many login attempts. Wait {wait} second" in throttled.get_data(as_text=True)
    assert requests_mock.request_history == []
    # A good sign-in from elsewhere takes its own try back.
    assert callback(client, start(client), address="198.51.100.4").status_code == 302


def test_logout_and_a_new_password_end_a_mattermost_session(
    app, client, configured, requests_mock, runner
):
    mattermost(requests_mock)
    callback(client, start(client))
    other = app.test_client()
    callback(other, start(other))
    assert is_signed_in(client) and is_signed_in(other)
    client.post("/logout")
    assert not is_signed_in(other)  # logout ends every session
    callback(other, start(other))
    assert is_signed_in(other)
    runner.invoke(args=["set-password", "--password", "another password 123"])
    assert not is_signed_in(other)


# -- the password fallback ---------------------------------------------------------------


def test_password_login_turned_off_leaves_only_the_button(client, configured):
    configured.save_oauth_settings(password_disabled=True)
    page = client.get("/login").get_data(as_text=True)
    assert "Sign in with Mattermost" in page and 'name="password"' not in page
    response = client.post("/login", data={"name": "Ada", "password": ADMIN_PASSWORD})
    assert response.status_code == 403
    assert "Password login is turned off" in response.get_data(as_text=True)
    assert not is_signed_in(client)


def test_the_screen_turns_the_password_off_only_after_a_sign_in(admin, configured, requests_mock):
    form = {
        "server_url": SERVER,
        "client_id": CLIENT_ID,
        "client_secret": "",  # blank: keep the saved one
        "team": "acme",
        "password_disabled": "1",
    }
    refused = admin.post("/settings/sign-in", data=form)
    assert refused.status_code == 400
    assert "only after a sign-in with Mattermost has succeeded" in refused.get_data(as_text=True)
    assert configured.oauth_settings()["password_disabled"] is False
    assert configured.oauth_settings()["team"] == ""  # nothing saved

    admin.post("/logout")
    mattermost(requests_mock)
    callback(admin, start(admin))
    saved = admin.post("/settings/sign-in", data=form)
    assert saved.status_code == 302
    assert configured.oauth_settings() == {
        "server_url": SERVER,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "team": "acme",
        "password_disabled": True,
    }
    page = admin.get("/settings/sign-in").get_data(as_text=True)
    assert CLIENT_SECRET not in page and "••••••" + CLIENT_SECRET[-4:] in page
    assert "Last sign-in with Mattermost: @root-rita" in page
    assert 'href="/settings/sign-in"' in admin.get("/").get_data(as_text=True)

    # Another OAuth app: its sign-in is not proven yet, so the password cannot stay off.
    other = {**form, "client_id": "an0therc1ient0000000000000", "client_secret": "x" * 26}
    assert admin.post("/settings/sign-in", data=other).status_code == 400


def test_the_screen_refuses_bad_settings_and_loses_nothing(admin, configured):
    response = admin.post(
        "/settings/sign-in",
        data={"server_url": "ftp://x", "client_id": "no spaces", "client_secret": "", "team": ""},
    )
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert "Server URL:" in page and "Client ID:" in page
    assert configured.oauth_settings()["server_url"] == SERVER


# -- the command ---------------------------------------------------------------------------


def oauth_cli(runner, *extra):
    return runner.invoke(
        args=[
            "oauth",
            "--server-url",
            "chat.example.com/",
            "--client-id",
            CLIENT_ID,
            "--client-secret",
            CLIENT_SECRET,
            *extra,
        ]
    )


def test_the_command_sets_everything_and_masks_the_secret(runner, store):
    result = oauth_cli(runner, "--team", "acme")
    assert result.exit_code == 0, result.output
    assert CLIENT_SECRET not in result.output
    assert "allowed: system admins and members of team acme. Password login on." in result.output
    assert store.oauth_settings() == {
        "server_url": SERVER,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "team": "acme",
        "password_disabled": False,
    }
    bad = runner.invoke(
        args=["oauth", "--server-url", "x", "--client-id", "a b", "--client-secret", "s"]
    )
    assert bad.exit_code != 0 and "Client ID:" in bad.output


def test_the_command_turns_the_password_off_only_after_a_sign_in(runner, store):
    refused = oauth_cli(runner, "--disable-password")
    assert refused.exit_code != 0
    assert "only after a sign-in with Mattermost has succeeded" in refused.output
    assert store.oauth_settings()["client_id"] == ""  # nothing was changed
    store.record_oauth_sign_in("root-rita", SERVER, CLIENT_ID)
    result = oauth_cli(runner, "--disable-password")
    assert result.exit_code == 0 and "Password login off." in result.output
    assert store.oauth_settings()["password_disabled"] is True
    # Run again without the flag: the password login is back (the way in when OAuth breaks).
    assert oauth_cli(runner).exit_code == 0
    assert store.oauth_settings()["password_disabled"] is False


# -- the log of admin actions ----------------------------------------------------------------


def test_admin_actions_are_logged_under_the_mattermost_username(
    app, client, configured, requests_mock
):
    mattermost(requests_mock, user=PLAIN_USER)
    callback(client, start(client))  # refused
    mattermost(requests_mock)
    callback(client, start(client))
    client.post("/checklist/test/auth_filled/toggle")
    client.post("/checklist/test/no-such-item/toggle")  # 404: nothing was done
    client.post("/logout")
    password = app.test_client()
    password.post("/login", data={"name": "Ada", "password": ADMIN_PASSWORD})
    rows = [(r["actor"], r["action"], r["detail"]) for r in configured.admin_actions()][::-1]
    assert rows == [
        ("plain-paul", "sign-in refused", "Mattermost: Not allowed"),
        ("root-rita", "sign-in", "Mattermost"),
        ("root-rita", "checklist.toggle", "POST /checklist/test/auth_filled/toggle → 200"),
        ("root-rita", "logout", "every admin session ended"),
        ("Ada", "sign-in", "password"),
    ]
    page = password.get("/admin-log").get_data(as_text=True)
    assert page.count("<tr><td>") == 5
    assert "<td>root-rita</td><td>checklist.toggle</td>" in page
    assert 'href="/admin-log"' in password.get("/").get_data(as_text=True)


def test_pruning_the_log_drops_old_admin_actions_too(store):
    store.log_admin_action("old-olga", "sign-in", "password")
    store.db.execute("UPDATE admin_log SET ts = ts - 31 * 86400")
    store.log_admin_action("new-nina", "sign-in", "Mattermost")
    store.prune_log(30)
    assert [row["actor"] for row in store.admin_actions()] == ["new-nina"]


def test_the_saved_client_secret_is_not_kept_for_another_server(admin, configured):
    form = {
        "server_url": "https://elsewhere.example.com",
        "client_id": CLIENT_ID,
        "client_secret": "",  # blank would keep the saved secret for the saved server only
        "team": "",
    }
    refused = admin.post("/settings/sign-in", data=form)
    assert refused.status_code == 400
    assert "type it again for the new server URL" in refused.get_data(as_text=True)
    assert configured.oauth_settings()["server_url"] == SERVER  # nothing saved
    typed = admin.post("/settings/sign-in", data={**form, "client_secret": "n" * 26})
    assert typed.status_code == 302
    assert configured.oauth_settings()["client_secret"] == "n" * 26
