"""What the README promises about HTTP: proxy headers, cookie flags, nosniff, the 1 MiB limit."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

from bridge import create_app
from bridge.store import Store, close_shared_connection
from bridge.uploads import MAX_UPLOAD_BODY

PASSWORD = "password123"
SERVER = "https://chat.example.com"
ONE_MIB = 1024 * 1024
FORM = "application/x-www-form-urlencoded"
# What nginx sends with the README's snippet; the visitor's own address is the last hop.
NGINX = {
    "X-Forwarded-For": "203.0.113.7",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "chat.example.com",
    "X-Forwarded-Prefix": "/bridge",
}


@pytest.fixture
def bridge_app(tmp_path, monkeypatch):
    """An app built under the given ``BRIDGE_BEHIND_PROXY`` value (None: unset)."""
    made = []

    def make(behind_proxy: str | None):
        monkeypatch.delenv("BRIDGE_PUBLIC_URL", raising=False)
        if behind_proxy is None:
            monkeypatch.delenv("BRIDGE_BEHIND_PROXY", raising=False)
        else:
            monkeypatch.setenv("BRIDGE_BEHIND_PROXY", behind_proxy)
        app = create_app(
            {
                "TESTING": True,
                "SECRET_KEY": "k",
                "DATABASE": str(tmp_path / f"b{len(made)}.db"),
                "WTF_CSRF_ENABLED": False,
                "ADMIN_PASSWORD": PASSWORD,
            }
        )
        store = Store(app.config["DATABASE"])
        store.migrate()
        store.update_environment(
            "test", server_url=SERVER, bot_token="t" * 26, mirror_channel_id="c" * 26, active=1
        )
        store.close()
        made.append(app.config["DATABASE"])
        return app

    yield make
    for path in made:
        close_shared_connection(path)


@pytest.fixture
def posts(requests_mock):
    """Mattermost accepts every post (the chat page mirrors each new chat)."""
    counter = iter(range(10**6))
    requests_mock.post(
        f"{SERVER}/api/v4/posts",
        status_code=201,
        json=lambda request, context: {"id": f"{next(counter):026d}", "channel_id": "c" * 26},
        headers={"Content-Type": "application/json"},
    )
    return requests_mock


def start_chat(client, headers):
    return client.post(
        "/chat/test/start", data={"name": "Vera", "text": "Hi"}, headers=headers
    ).status_code


# -- BRIDGE_BEHIND_PROXY --------------------------------------------------------------------


@pytest.mark.parametrize("value", ["1", "true", "yes", "TRUE"])
def test_behind_a_proxy_the_forwarded_host_scheme_and_prefix_are_honoured(bridge_app, value):
    client = bridge_app(value).test_client()
    anonymous = client.get("/env/test/auth", headers=NGINX)
    assert anonymous.headers["Location"].startswith("/bridge/login?next=")
    # The browser's side of nginx: https and the /bridge prefix, where the session
    # cookie (Secure, path /bridge) is sent back.
    browser = {"headers": NGINX, "base_url": "https://localhost/bridge"}
    client.post("/login", data={"name": "Ada", "password": PASSWORD}, **browser)
    page = client.get("/env/test/auth", **browser).get_data(as_text=True)
    assert "https://chat.example.com/bridge/hooks/mattermost/test" in page
    assert 'href="/bridge/checklist"' in page
    assert "loopback address" not in page


@pytest.mark.parametrize("value", [None, "", "0", "no"])
def test_without_the_setting_forwarded_headers_are_ignored(bridge_app, value):
    client = bridge_app(value).test_client()
    anonymous = client.get("/env/test/auth", headers=NGINX)
    assert anonymous.headers["Location"].startswith("/login?next=")
    client.post("/login", data={"name": "Ada", "password": PASSWORD}, headers=NGINX)
    page = client.get("/env/test/auth", headers=NGINX).get_data(as_text=True)
    assert "http://localhost/hooks/mattermost/test" in page
    assert "chat.example.com/bridge" not in page and 'href="/checklist"' in page


def test_behind_a_proxy_chat_limits_count_the_address_nginx_saw(bridge_app, posts):
    client = bridge_app("1").test_client()
    for n in range(10):
        # A visitor's own X-Forwarded-For is only a first hop: nginx appends the real address.
        spoofed = {**NGINX, "X-Forwarded-For": f"10.9.9.{n}, 203.0.113.7"}
        assert start_chat(client, spoofed) == 302
    assert start_chat(client, NGINX) == 429
    assert start_chat(client, {**NGINX, "X-Forwarded-For": "198.51.100.4"}) == 302


def test_without_the_setting_every_visitor_shares_the_proxys_address(bridge_app, posts):
    client = bridge_app(None).test_client()
    for n in range(10):
        assert start_chat(client, {**NGINX, "X-Forwarded-For": f"198.51.100.{n}"}) == 302
    assert start_chat(client, {**NGINX, "X-Forwarded-For": "198.51.100.99"}) == 429


# -- cookies and headers ---------------------------------------------------------------------


def test_the_session_cookie_is_http_only_and_same_site_lax(bridge_app):
    client = bridge_app(None).test_client()
    response = client.post("/login", data={"name": "Ada", "password": PASSWORD})
    (cookie,) = [c for c in response.headers.getlist("Set-Cookie") if c.startswith("session=")]
    flags = [part.strip() for part in cookie.split(";")]
    assert "HttpOnly" in flags and "SameSite=Lax" in flags


def test_every_kind_of_response_says_nosniff(bridge_app):
    client = bridge_app(None).test_client()
    client.post("/login", data={"name": "Ada", "password": PASSWORD})
    responses = {
        "admin page": client.get("/"),
        "admin fragment": client.get("/log", headers={"HX-Request": "true"}),
        "login page": client.get("/login"),
        "chat page": client.get("/chat/test"),
        "chat 404": client.get("/chat/test?c=nosuchconversation"),
        "API error": client.get("/api/v1/conversations/x"),
        "API document": client.get("/api/v1/openapi.json"),
        "webhook error": client.post("/hooks/mattermost/test", data={"token": "x"}),
        "static file": client.get("/static/bridge.css"),
        "unknown path": client.get("/no/such/page"),
    }
    for kind, response in responses.items():
        assert response.headers.get("X-Content-Type-Options") == "nosniff", kind
        response.close()


# -- the 1 MiB body limit --------------------------------------------------------------------


def form_body(size: int, **fields: str) -> bytes:
    """A form-encoded body of exactly ``size`` bytes, the padding in ``text``."""
    head = urlencode({**fields, "text": ""}).encode()
    return head + b"x" * (size - len(head))


def test_webhook_bodies_over_1_mib_get_413(bridge_app):
    app = bridge_app(None)
    client = app.test_client()
    fields = {"token": "w" * 26, "post_id": "p" * 26, "user_id": "u" * 26, "channel_id": "c" * 26}
    too_big = client.post(
        "/hooks/mattermost/test", data=form_body(ONE_MIB + 1, **fields), content_type=FORM
    )
    assert too_big.status_code == 413
    assert too_big.json == {"error": "request body is larger than 1 MiB", "code": "too_large"}
    # At the limit the body is read: it is refused for what it says, not for its size.
    at_limit = client.post(
        "/hooks/mattermost/test", data=form_body(ONE_MIB, **fields), content_type=FORM
    )
    assert at_limit.status_code == 400
    assert "longer than any Mattermost post" in at_limit.json["error"]


def test_chat_bodies_over_1_mib_get_413_and_nothing_is_stored(bridge_app, posts):
    app = bridge_app(None)
    client = app.test_client()
    conversation_id = (
        client.post("/chat/test/start", data={"name": "Vera", "text": "Hi"})
        .headers["Location"]
        .split("c=")[1]
    )
    # The messages route takes a file too: its limit is a 10 MB file and its form.
    for path, fields, limit, says in (
        ("/chat/test/start", {"name": "Mallory"}, ONE_MIB, "larger than 1 MiB"),
        (f"/chat/test/{conversation_id}/messages", {}, MAX_UPLOAD_BODY, "a 10 MB file"),
    ):
        too_big = client.post(path, data=form_body(limit + 1, **fields), content_type=FORM)
        assert too_big.status_code == 413, path
        assert says in too_big.get_data(as_text=True)
        at_limit = client.post(path, data=form_body(limit, **fields), content_type=FORM)
        assert at_limit.status_code == 400, path
        assert "at most 4000 characters" in at_limit.get_data(as_text=True)
    store = Store(app.config["DATABASE"])
    try:
        assert [c["visitor_name"] for c in store.recent_conversations()] == ["Vera"]
        assert [m["text"] for m in store.messages_after(conversation_id)] == ["Hi"]
    finally:
        store.close()
