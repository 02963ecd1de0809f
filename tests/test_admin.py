"""The admin screens through the Flask test client, Mattermost mocked with requests-mock."""

from __future__ import annotations

import re

import pytest

from bridge import create_app
from bridge.store import Store, close_shared_connection

SERVER = "https://chat.example.com"
GOOD = "goodtokengoodtokengoodtok1"
OTHER = "othertokenothertokenother1"
BOT = {"id": "b" * 26, "username": "bridge-bot", "is_bot": True}
HOOK_TOKEN = "a" * 26


@pytest.fixture
def mm(requests_mock):
    def me(request, context):
        token = request.headers["Authorization"].split()[-1]
        if token not in (GOOD, OTHER):
            context.status_code = 401
            return {
                "id": "api.context.session_expired.app_error",
                "message": "Invalid or expired session, please login again.",
                "status_code": 401,
            }
        return {**BOT, "username": "bridge-bot" if token == GOOD else "other-bot"}

    requests_mock.get(
        f"{SERVER}/api/v4/users/me",
        json=me,
        headers={"X-Version-Id": "9.11.0.9.11.0.x.false", "Content-Type": "application/json"},
    )
    requests_mock.get(
        f"{SERVER}/api/v4/config/client",
        json={"MaxPostSize": "4000"},
        headers={"Content-Type": "application/json"},
    )
    return requests_mock


def save_auth(admin, **form):
    data = {"server_url": SERVER, "bot_token": "", "webhook_token": "", **form}
    return admin.post("/env/test/auth", data=data, headers={"HX-Request": "true"})


def test_save_and_verify_keeps_a_working_token(admin, store, mm):
    response = save_auth(admin, bot_token=GOOD, webhook_token=HOOK_TOKEN)
    assert "Saved and verified." in response.get_data(as_text=True)
    settings = store.environment("test")
    assert (settings["bot_token"], settings["bot_username"]) == (GOOD, "bridge-bot")
    assert settings["webhook_token"] == HOOK_TOKEN
    assert settings["max_post_size"] == 4000  # learned from the server's client config
    assert GOOD not in response.get_data(as_text=True)


def test_a_token_that_fails_verification_saves_nothing(admin, store, mm):
    save_auth(admin, bot_token=GOOD)
    page = save_auth(admin, bot_token="wrongtokenwrongtokenwrong1").get_data(as_text=True)
    assert "Nothing saved" in page and "401" in page
    assert "The saved settings are unchanged; type the new token again" in page
    settings = store.environment("test")
    assert settings["bot_token"] == GOOD and settings["bot_user_id"] == BOT["id"]


def test_a_mistyped_server_url_saves_nothing(admin, store, mm):
    save_auth(admin, bot_token=GOOD)
    mm.get("https://chat.exmple.com/api/v4/users/me", exc=__import__("requests").ConnectionError)
    page = save_auth(admin, server_url="https://chat.exmple.com", bot_token=GOOD)
    page = page.get_data(as_text=True)
    assert "Nothing saved" in page and "cannot reach" in page
    assert store.environment("test")["server_url"] == SERVER


def test_url_without_token_is_saved_and_asks_for_the_token(admin, store, mm):
    page = save_auth(admin).get_data(as_text=True)
    assert "Enter the bot token" in page and "401" not in page
    assert store.environment("test")["server_url"] == SERVER
    assert mm.call_count == 0


def test_verify_checks_what_is_typed_and_saves_nothing(admin, store, mm):
    save_auth(admin, bot_token=GOOD)
    typed = admin.post(
        "/env/test/auth/verify",
        data={"server_url": SERVER, "bot_token": "wrongtokenwrongtokenwrong1"},
    )
    assert "Not verified" in typed.get_data(as_text=True)
    other = admin.post("/env/test/auth/verify", data={"server_url": SERVER, "bot_token": OTHER})
    page = other.get_data(as_text=True)
    assert "@other-bot" in page and "not saved yet" in page
    settings = store.environment("test")
    assert (settings["bot_token"], settings["bot_username"]) == (GOOD, "bridge-bot")
    saved = admin.post("/env/test/auth/verify", data={"server_url": "", "bot_token": ""})
    assert "@bridge-bot" in saved.get_data(as_text=True)


# -- the saved token goes only to the saved server -----------------------------------------

ELSEWHERE = "https://mattermost.elsewhere.example"


@pytest.fixture
def elsewhere(mm):
    """Another server that would happily answer as a bot to any token it is sent."""
    mm.get(
        f"{ELSEWHERE}/api/v4/users/me",
        json=BOT,
        headers={"X-Version-Id": "9.11.0", "Content-Type": "application/json"},
    )
    mm.get(
        f"{ELSEWHERE}/api/v4/config/client", json={}, headers={"Content-Type": "application/json"}
    )
    return mm


def calls_to(mock, base: str) -> list:
    return [r for r in mock.request_history if r.url.startswith(base + "/")]


def test_save_with_a_new_server_url_and_an_empty_token_sends_the_saved_token_nowhere(
    admin, store, elsewhere
):
    save_auth(admin, bot_token=GOOD)
    page = save_auth(admin, server_url=ELSEWHERE, webhook_token=HOOK_TOKEN)
    text = page.get_data(as_text=True)
    assert "The server URL changed: type the bot token again." in text
    assert f"only sent to the saved server ({SERVER})" in text
    assert calls_to(elsewhere, ELSEWHERE) == []
    settings = store.environment("test")
    assert (settings["server_url"], settings["webhook_token"]) == (SERVER, "")


def test_verify_with_a_new_server_url_and_an_empty_token_sends_the_saved_token_nowhere(
    admin, store, elsewhere
):
    save_auth(admin, bot_token=GOOD)
    page = admin.post("/env/test/auth/verify", data={"server_url": ELSEWHERE, "bot_token": ""})
    assert "type the bot token again" in page.get_data(as_text=True)
    assert calls_to(elsewhere, ELSEWHERE) == []


def test_a_new_server_url_with_the_token_typed_again_is_verified_there(admin, store, elsewhere):
    save_auth(admin, bot_token=GOOD)
    page = save_auth(admin, server_url=ELSEWHERE, bot_token=OTHER).get_data(as_text=True)
    assert "Saved and verified." in page
    (me, *_) = calls_to(elsewhere, ELSEWHERE)
    assert me.headers["Authorization"] == f"Bearer {OTHER}"
    assert store.environment("test")["server_url"] == ELSEWHERE


def test_a_webhook_token_that_is_not_mattermost_shaped_is_refused(admin, store, mm):
    page = save_auth(admin, bot_token=GOOD, webhook_token="abc").get_data(as_text=True)
    assert "26 letters and digits" in page
    assert store.environment("test")["webhook_token"] == ""


def test_loopback_inbound_url_warns_that_mattermost_cannot_reach_it(admin):
    page = admin.get("/env/test/auth").get_data(as_text=True)
    assert "http://localhost/hooks/mattermost/test" in page
    assert "loopback address" in page


@pytest.fixture
def public_admin(tmp_path):
    """An admin client of an app that knows its public address."""

    def make(public_url: str):
        app = create_app(
            {
                "TESTING": True,
                "SECRET_KEY": "k",
                "DATABASE": str(tmp_path / "b.db"),
                "WTF_CSRF_ENABLED": False,
                "PUBLIC_URL": public_url,
                "ADMIN_PASSWORD": "password123",
            }
        )
        Store(app.config["DATABASE"]).migrate()
        client = app.test_client()
        client.post("/login", data={"name": "Ada", "password": "password123"})
        made.append(app.config["DATABASE"])
        return client

    made: list[str] = []
    yield make
    for path in made:
        close_shared_connection(path)


def test_public_url_sets_the_inbound_url(public_admin):
    client = public_admin("https://bridge.example.com")
    page = client.get("/env/production/auth").get_data(as_text=True)
    assert "https://bridge.example.com/hooks/mattermost/production" in page
    assert "loopback address" not in page


def test_every_admin_page_needs_login_and_login_redirects_back(client, runner, store):
    runner.invoke(args=["set-password", "--password", "password123"])
    pages = (
        "/",
        "/env/test/auth",
        "/env/production/config",
        "/checklist",
        "/log",
        "/conversations",
        "/checklist.md",
    )

    def assert_logged_out():
        for path in pages:
            response = client.get(path)
            assert response.status_code == 302 and "/login" in response.headers["Location"]
            assert not response.headers["Location"].endswith("?")
        # A form posted without a session is sent to the login page and saves nothing,
        # and an HTMX request is told to reload into it.
        for headers in ({}, {"HX-Request": "true"}):
            response = client.post(
                "/env/test/auth", data={"server_url": SERVER, "bot_token": ""}, headers=headers
            )
            if headers:
                assert response.status_code == 200 and response.data == b""
                assert response.headers["HX-Redirect"].startswith("/login")
            else:
                assert response.status_code == 302
                assert response.headers["Location"].startswith("/login")
        assert store.environment("test")["server_url"] == ""

    assert_logged_out()
    wrong = client.post("/login?next=/checklist", data={"name": "Ada", "password": "password12"})
    assert wrong.status_code == 200 and "Wrong password." in wrong.get_data(as_text=True)
    assert_logged_out()

    login = client.post("/login?next=/checklist", data={"name": "Ada", "password": "password123"})
    assert login.status_code == 302 and login.headers["Location"] == "/checklist"
    for path in pages:
        assert client.get(path).status_code == 200, path
    assert client.get("/login").headers["Location"] == "/"  # already logged in
    client.post("/logout")
    assert_logged_out()


def test_login_next_never_leaves_the_site(client, runner):
    runner.invoke(args=["set-password", "--password", "password123"])
    for target in ("//evil.example", "/\\evil.example", "https://evil.example"):
        response = client.post(
            f"/login?next={target}", data={"name": "Ada", "password": "password123"}
        )
        assert response.headers["Location"] == "/"
        client.post("/logout")


def csrf_token_in(page: str) -> str:
    """The token a browser would send: the form field (the same one is in hx-headers)."""
    return re.search(r'name="csrf_token" (?:type="hidden" )?value="([^"]+)"', page).group(1)


def test_csrf_is_required_on_admin_forms(tmp_path):
    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "k",
            "DATABASE": str(tmp_path / "b.db"),
            "ADMIN_PASSWORD": "password123",
        }
    )
    store = Store(app.config["DATABASE"])
    store.migrate()
    client = app.test_client()
    try:
        login = {"name": "A", "password": "password123"}
        assert client.post("/login", data=login).status_code == 400
        token = csrf_token_in(client.get("/login").get_data(as_text=True))
        assert client.post("/login", data={**login, "csrf_token": token}).status_code == 302

        page = client.get("/env/test/auth").get_data(as_text=True)
        token = csrf_token_in(page)
        assert f'"X-CSRFToken": "{token}"' in page  # what HTMX requests send
        form = {"server_url": SERVER, "bot_token": "", "webhook_token": ""}
        refused = (
            client.post("/env/test/auth", data=form),
            client.post("/env/test/auth", data={**form, "csrf_token": "forged"}),
            client.post(
                "/env/test/auth", data=form, headers={"HX-Request": "true", "X-CSRFToken": "x"}
            ),
        )
        assert [response.status_code for response in refused] == [400, 400, 400]
        assert store.environment("test")["server_url"] == ""

        saved = client.post(
            "/env/test/auth", data=form, headers={"HX-Request": "true", "X-CSRFToken": token}
        )
        assert saved.status_code == 200 and "Enter the bot token" in saved.get_data(as_text=True)
        assert store.environment("test")["server_url"] == SERVER
        assert client.post("/logout").status_code == 400  # logging out needs the token too
        assert client.get("/").status_code == 200
    finally:
        store.close()
        close_shared_connection(app.config["DATABASE"])


def test_admin_pages_cannot_be_framed_but_the_chat_can(admin):
    assert admin.get("/").headers["X-Frame-Options"] == "DENY"
    assert "X-Frame-Options" not in admin.get("/chat/test").headers


def test_config_save_rejects_a_bad_notification_type_and_keeps_the_rows(admin, store, mm):
    save_auth(admin, bot_token=GOOD)
    mm.get(
        f"{SERVER}/api/v4/users/me/teams",
        json=[{"id": "t" * 26, "name": "acme", "display_name": "Acme"}],
        headers={"X-Version-Id": "9.11.0", "Content-Type": "application/json"},
    )
    mm.get(
        f"{SERVER}/api/v4/users/{BOT['id']}/teams/{'t' * 26}/channels",
        json=[{"id": "c" * 26, "name": "support", "display_name": "Support", "type": "O"}],
        headers={"X-Version-Id": "9.11.0", "Content-Type": "application/json"},
    )
    page = admin.post(
        "/env/test/config",
        data={
            "mirror_channel_id": "c" * 26,
            "notify_type": ["booking created"],
            "notify_channel": ["c" * 26],
        },
    ).get_data(as_text=True)
    assert "booking created" in page and "letters, digits" in page
    assert store.environment("test")["mirror_channel_id"] == ""


def test_host_api_and_webhook_errors_are_json_even_before_routing(client):
    for method, path, status in (
        ("GET", "/api/v1/notifications", 405),
        ("GET", "/api/v1/nope", 404),
        ("POST", "/hooks/mattermost/staging", 404),
    ):
        response = client.open(path, method=method)
        assert response.status_code == status
        assert set(response.json) == {"error", "code"}


def test_login_next_with_control_characters_stays_on_the_site(client, runner):
    runner.invoke(args=["set-password", "--password", "password123"])
    response = client.post(
        "/login?next=/%09/evil.example", data={"name": "Ada", "password": "password123"}
    )
    assert response.headers["Location"] == "/"


def test_uninitialised_database_says_to_run_init(tmp_path):
    app = create_app({"TESTING": True, "SECRET_KEY": "k", "DATABASE": str(tmp_path / "b.db")})
    response = app.test_client().get("/login")
    assert response.status_code == 500
    assert "flask --app app init" in response.get_data(as_text=True)
    close_shared_connection(app.config["DATABASE"])


def test_embed_snippet_uses_the_public_url(public_admin):
    client = public_admin("https://chat.example.com/bridge")
    page = client.get("/env/test/config").get_data(as_text=True)
    assert 'src="https://chat.example.com/bridge/chat/test"' in page.replace("&#34;", '"')


def test_conversations_page_through_all_of_them(admin, store):
    for n in range(55):
        store.create_conversation("test", f"Visitor {n:02d}", "", "", "hi")
    first = admin.get("/conversations").get_data(as_text=True)
    assert "Visitor 54" in first and "Visitor 04" not in first
    older = re.search(r'href="(/conversations\?before=\d+)"', first).group(1)
    second = admin.get(older).get_data(as_text=True)
    assert "Visitor 04" in second and "Visitor 54" not in second and "Visitor 00" in second


def test_checklist_ticks_carry_the_name_given_at_login(admin, store):
    from bridge import checklist as readiness

    item = readiness.ITEMS["test"][0].key
    admin.post(f"/checklist/test/{item}/toggle")
    assert store.ticks("test")[item]["ticked_by"] == "Ada"


@pytest.mark.parametrize("configured", [True, False], ids=["BRIDGE_ADMIN_PASSWORD", "setup page"])
def test_only_the_right_password_logs_in(tmp_path, configured):
    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "k",
            "DATABASE": str(tmp_path / "b.db"),
            "WTF_CSRF_ENABLED": False,
            "ADMIN_PASSWORD": "password123" if configured else "",
        }
    )
    Store(app.config["DATABASE"]).migrate()
    client = app.test_client()
    if not configured:
        assert client.get("/login").headers["Location"] == "/setup"
        client.post("/setup", data={"password": "password123", "confirm": "password123"})
    for wrong in ("password12", "password1234", "PASSWORD123", ""):
        response = client.post("/login", data={"name": "Ada", "password": wrong})
        assert response.status_code == 200, wrong
        assert client.get("/").status_code == 302, wrong  # still not logged in
    assert "Wrong password." in client.post(
        "/login", data={"name": "Ada", "password": "password12"}
    ).get_data(as_text=True)
    # Once a password exists, the setup page cannot replace it.
    hijack = client.post("/setup", data={"password": "hijacked1", "confirm": "hijacked1"})
    assert hijack.headers["Location"] == "/login"
    client.post("/login", data={"name": "Eve", "password": "hijacked1"})
    assert client.get("/").status_code == 302
    # Six wrong tries from this address have used up its login limit (5 a minute):
    # the admin's right password comes from another one.
    elsewhere = {"REMOTE_ADDR": "198.51.100.7"}
    login = client.post(
        "/login", data={"name": "Ada", "password": "password123"}, environ_base=elsewhere
    )
    assert login.status_code == 302
    assert client.get("/").status_code == 200
    close_shared_connection(app.config["DATABASE"])


def test_a_failed_verify_of_unsaved_settings_is_not_a_failing_integration(store):
    from bridge import checklist

    def bot_item():
        (state,) = [
            s for s in checklist.checklist(store, "test").items if s.item.key == "bot_token"
        ]
        return state.evidence

    store.log(
        env="test",
        direction="outbound",
        action="verify",
        outcome="error",
        error="cannot reach chat.example: connection refused",
    )
    unsaved = bot_item()
    assert unsaved.state == checklist.NOT_YET
    assert "last try, not saved: cannot reach chat.example" in unsaved.detail
    # Once settings are saved, the same failure is the integration failing.
    store.update_environment("test", server_url="https://chat.example", bot_token="t" * 26)
    assert bot_item().state == checklist.FAILING
