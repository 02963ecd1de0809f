"""Every admin route, found in the app's URL map: login, CSRF and secrets hold on all of them.

The routes come from ``app.url_map``, so a new admin route is covered without
editing this file. A public route is left out only when it is named in
PUBLIC_ENDPOINTS or PUBLIC_BLUEPRINTS; a route with an argument nobody gave a
sample value for fails loudly instead of being skipped.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest

from bridge import checklist as readiness
from bridge import create_app
from bridge.integration import new_api_key
from bridge.store import Store, close_shared_connection
from tests.snapshot import dump_tables as dump

# Reachable without logging in, each for its own reason (see the README's security review).
PUBLIC_ENDPOINTS = {"static", "auth.login", "auth.setup"}
PUBLIC_BLUEPRINTS = {"api", "hooks", "agent_hooks", "source_hooks", "chat", "oauth_login"}
# Admin routes the enumeration must find: guards against a filter that finds nothing.
KNOWN_ADMIN = {
    "admin.dashboard",
    "admin.env_config",
    "admin.deactivate",
    "admin.api_key",
    "checklist.toggle",
    "log.page",
    "auth.logout",
    "oauth_settings.settings_page",
    "admin_log.page",
}
HX = {"HX-Request": "true"}
PASSWORD = "correct horse battery"
SERVER = "https://chat.example.com"
MM_JSON = {"X-Version-Id": "9.11.0.9.11.0.abc.false", "Content-Type": "application/json"}
TEAM = "k3m9dqz4xpgbfrj8yte5ua7wcn"
MIRROR = "h1oy6b5w8fgzqk3tn4ecx7pjra"
BOT_ID = "qz8mw3nd5tf9xhg1ocbe6kr4ya"
SOURCE = "alerts"
SOURCE_SECRET = "sourcesecret-n4v8q2x6m1z9"
OAUTH_SECRET = "oauthsecret7w2k9q4x1m8z5r"


def admin_rules(app):
    """The URL rules of every route that only an admin may use."""
    for rule in app.url_map.iter_rules():
        blueprint = rule.endpoint.rpartition(".")[0]
        if rule.endpoint not in PUBLIC_ENDPOINTS and blueprint not in PUBLIC_BLUEPRINTS:
            yield rule


def admin_requests(app, methods: set[str], conversation_id: str):
    """``(endpoint, method, path)`` for every admin route, once per environment."""
    urls = app.url_map.bind("localhost")
    for rule in admin_rules(app):
        for env in ("test", "production") if "env" in rule.arguments else (None,):
            samples = {
                "env": env,
                "item": readiness.ITEMS[env][0].key if env else None,
                "conversation_id": conversation_id,
                "name": SOURCE,
                "payload_id": 1,
            }
            missing = rule.arguments - {name for name, value in samples.items() if value}
            assert not missing, f"{rule.rule}: give {sorted(missing)} a sample value here"
            path = urls.build(rule.endpoint, {name: samples[name] for name in rule.arguments})
            for method in sorted(rule.methods & methods):
                yield rule.endpoint, method, path


def seed(store: Store) -> str:
    """An active, configured test environment with a conversation, a tick and a log row.

    State that each admin POST would change if it ran: deactivate, toggle,
    api-key, the config and auth forms all leave a trace in the dump.
    """
    store.update_environment(
        "test",
        server_url=SERVER,
        bot_token="tok" + "x" * 23,
        bot_user_id=BOT_ID,
        bot_username="bridge-bot",
        bot_is_bot=1,
        webhook_token="w" * 26,
        mirror_channel_id=MIRROR,
        active=1,
    )
    conversation, _ = store.create_conversation("test", "Vera", "", "", "Hello")
    for env in ("test", "production"):
        store.add_source(
            env, SOURCE, notification_type="alert", template="{{ payload.a }}", secret="s" * 26
        )
    store.set_tick("test", readiness.ITEMS["test"][1].key, True, "Ada")
    store.log(env="test", direction="outbound", action="post", outcome="ok")
    return conversation["id"]


def form_for_every_route() -> dict[str, str]:
    """A body that would change something on any admin form that accepted it."""
    return {
        "server_url": "https://changed.example.com",
        "bot_token": "",
        "webhook_token": "c" * 26,
        "mirror_channel_id": "",
        "callback_url": "",
        "callback_secret": "changed-secret",
    }


def redirect_target(response) -> str | None:
    """Where the response sends the browser: a 302, or htmx's HX-Redirect."""
    location = response.headers.get("HX-Redirect")
    if location is None and response.status_code in (301, 302, 303, 307, 308):
        location = response.headers["Location"]
    return urlsplit(location).path if location is not None else None


# -- login --------------------------------------------------------------------------


@pytest.mark.parametrize("first_run", [False, True], ids=["password set", "first run"])
def test_anonymous_requests_to_every_admin_route_are_sent_to_login_and_change_nothing(
    app, client, store, requests_mock, first_run
):
    if not first_run:
        store.set_meta("admin_password_hash", "pbkdf2:sha256:1$salt$hash")
    conversation_id = seed(store)
    expected = "/setup" if first_run else "/login"
    before = dump(app.config["DATABASE"])
    seen = set()
    for endpoint, method, path in admin_requests(app, {"GET", "POST"}, conversation_id):
        seen.add(endpoint)
        for headers in ({}, HX):
            response = client.open(
                path, method=method, headers=headers, data=form_for_every_route()
            )
            where = f"anonymous {method} {path} {headers}"
            # Logging out (not behind the guard) always lands on the login page.
            allowed = {expected, "/login"} if endpoint == "auth.logout" else {expected}
            assert redirect_target(response) in allowed, where
            if headers and endpoint != "auth.logout":
                # A fragment request cannot show the login page: htmx must reload into it.
                assert response.status_code == 200 and "HX-Redirect" in response.headers, where
            assert dump(app.config["DATABASE"]) == before, where
    assert KNOWN_ADMIN <= seen
    assert requests_mock.call_count == 0  # no admin view ever ran to call Mattermost


# -- CSRF ---------------------------------------------------------------------------


@pytest.fixture
def csrf_app(tmp_path):
    """The app as it runs for real: CSRF on (the shared ``app`` fixture turns it off)."""
    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "csrf-test-key",
            "DATABASE": str(tmp_path / "csrf.db"),
            "ADMIN_PASSWORD": PASSWORD,
        }
    )
    assert app.config.get("WTF_CSRF_ENABLED", True)
    Store(app.config["DATABASE"]).migrate()
    yield app
    close_shared_connection(app.config["DATABASE"])


def csrf_token(page: str) -> str:
    return re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)


def logged_in(app):
    """A client logged in through the real form, and the session's CSRF token."""
    client = app.test_client()
    token = csrf_token(client.get("/login").get_data(as_text=True))
    response = client.post(
        "/login", data={"name": "Ada", "password": PASSWORD, "csrf_token": token}
    )
    assert response.status_code == 302 and redirect_target(response) == "/"
    # Logging in starts a new session, and with it a new token: the one pages now carry.
    return client, csrf_token(client.get("/").get_data(as_text=True))


def test_every_admin_post_without_a_csrf_token_is_refused_and_changes_nothing(csrf_app):
    store = Store(csrf_app.config["DATABASE"])
    conversation, _ = store.create_conversation("test", "Vera", "", "", "Hello")
    store.close()
    client, token = logged_in(csrf_app)
    posts = sorted(
        admin_requests(csrf_app, {"POST"}, conversation["id"]),
        key=lambda request: request[0] == "auth.logout",  # logging out last
    )
    assert {"admin.env_config", "admin.api_key", "checklist.toggle", "auth.logout"} <= {
        endpoint for endpoint, _, _ in posts
    }
    before = dump(csrf_app.config["DATABASE"])
    for _, _, path in posts:
        for headers in ({}, HX, {**HX, "X-CSRFToken": "forged-" + token[7:]}):
            response = client.post(path, data=form_for_every_route(), headers=headers)
            where = f"POST {path} {headers}"
            assert response.status_code == 400, where
            assert "The CSRF" in response.get_data(as_text=True), where
            assert dump(csrf_app.config["DATABASE"]) == before, where
    # The same requests with the session's token get past the check: the 400s were CSRF's.
    for _, _, path in posts:
        for extra in ({}, HX):
            headers = {**extra, "X-CSRFToken": token}
            response = client.post(path, data=form_for_every_route(), headers=headers)
            # A form may still refuse the junk body with its own 400, but not CSRF's.
            # (Flask-WTF's reasons all begin "The CSRF ..."; every page has "X-CSRFToken".)
            refused_by_csrf = response.status_code == 400 and "The CSRF" in response.get_data(
                as_text=True
            )
            assert not refused_by_csrf, f"POST {path} {headers} with the token"
            if path == "/logout":
                client, token = logged_in(csrf_app)


# -- secrets ------------------------------------------------------------------------

SECRETS = {
    "test": {
        "bot_token": "x7kq2m9vbd4nf8hw3tjc6pzr1e",
        "webhook_token": "s5ug8yd2oh4bn7qw1mzk9fxc3e",
        "callback_secret": "cb-secret-Tq83LmZp0vW2kR7s",
    },
    "production": {
        "bot_token": "p4w9zt1ncx7rk2hbm8qd5vyg3a",
        "webhook_token": "f2ja6re9mu3xk8vq5tsn1ydw4g",
        "callback_secret": "cb-secret-Ha51QnXe8bY3uJ6d",
    },
}


@pytest.fixture
def secrets_saved(admin, store, requests_mock):
    """Both environments with every secret saved, a conversation and a host API key."""
    for env, secrets in SECRETS.items():
        store.update_environment(
            env,
            server_url=SERVER,
            bot_user_id=BOT_ID if env == "test" else BOT_ID[::-1],
            bot_username=f"bridge-bot-{env}",
            bot_is_bot=1,
            mirror_channel_id=MIRROR,
            mirror_channel_name="Acme / Support",
            callback_url="https://host.example.com/replies",
            **secrets,
        )
    for env in SECRETS:
        store.add_source(
            env, SOURCE, notification_type="alert", template="{{ payload.a }}", secret=SOURCE_SECRET
        )
    store.save_oauth_settings(server_url=SERVER, client_id=BOT_ID, client_secret=OAUTH_SECRET)
    api_keys = [new_api_key(store, env) for env in SECRETS]  # shown once, when made
    conversation, _ = store.create_conversation("test", "Vera", "", "", "Hello")
    requests_mock.get(
        f"{SERVER}/api/v4/users/me/teams",
        json=[{"id": TEAM, "name": "acme", "display_name": "Acme"}],
        headers=MM_JSON,
    )
    requests_mock.get(
        re.compile(rf"{SERVER}/api/v4/users/\w+/teams/{TEAM}/channels"),
        json=[{"id": MIRROR, "name": "support", "display_name": "Support", "type": "O"}],
        headers=MM_JSON,
    )
    every_secret = [s for secrets in SECRETS.values() for s in secrets.values()]
    return conversation["id"], every_secret + api_keys + [PASSWORD, SOURCE_SECRET, OAUTH_SECRET]


def pieces(secret: str, size: int = 8) -> set[str]:
    """Every run of ``size`` characters of a secret: a masked one shows only 4."""
    return {secret[i : i + size] for i in range(len(secret) - size + 1)}


def test_no_admin_page_shows_any_saved_secret(app, admin, secrets_saved):
    conversation_id, secrets = secrets_saved
    pages = list(admin_requests(app, {"GET"}, conversation_id))
    assert {"admin.env_auth", "admin.env_config", "log.page"} <= {e for e, _, _ in pages}
    # Twice: the second time the log holds the rows the first pass's Mattermost calls wrote.
    for _ in range(2):
        for _, _, path in pages:
            for headers in ({}, HX):
                response = admin.get(path, headers=headers)
                assert response.status_code == 200, f"GET {path} {headers}"
                html = response.get_data(as_text=True)
                for secret in secrets:
                    leaked = [piece for piece in pieces(secret) if piece in html]
                    assert not leaked, f"GET {path} {headers} shows {leaked[0]!r} of a secret"
    # The pages did show the masked form: the check above looked at real content.
    config = admin.get("/env/test/config").get_data(as_text=True)
    assert "••••••" + SECRETS["test"]["callback_secret"][-4:] in config
