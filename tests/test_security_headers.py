"""Content-Security-Policy on every page; only the chat page may be framed, by listed origins."""

from __future__ import annotations

import re

import pytest

from bridge import create_app
from bridge.headers import parse_chat_origins
from bridge.store import Store, close_shared_connection

ROOT_TEMPLATES = "templates"


def directives(response) -> dict[str, str]:
    policy = response.headers["Content-Security-Policy"]
    parts = (part.strip().split(None, 1) for part in policy.split(";") if part.strip())
    return {name: value for name, value in ((p[0], p[1] if len(p) > 1 else "") for p in parts)}


@pytest.mark.parametrize(
    "path",
    ["/login", "/", "/env/test/auth", "/log", "/checklist", "/static/bridge.js", "/no-such-page"],
)
def test_admin_pages_allow_only_their_own_files_and_no_framing(admin, path):
    response = admin.get(path)
    response.close()  # a static file answer holds the file open
    policy = directives(response)
    assert policy["default-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'"
    assert policy["object-src"] == "'none'" and policy["base-uri"] == "'none'"
    assert "unsafe-inline" not in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY"


def test_api_and_webhook_answers_carry_the_policy_too(client):
    for response in (client.get("/api/v1/conversations/x"), client.post("/hooks/mattermost/test")):
        assert directives(response)["frame-ancestors"] == "'none'"


def test_chat_page_may_be_framed_by_any_site_by_default(client):
    for response in (client.get("/chat/test"), client.get("/chat/test?c=" + "a" * 26)):
        policy = directives(response)
        assert policy["default-src"] == "'self'"
        assert policy["frame-ancestors"] == "*"
        assert "X-Frame-Options" not in response.headers


@pytest.fixture
def chat_origins_app(tmp_path, monkeypatch):
    monkeypatch.setenv(
        "BRIDGE_CHAT_ORIGINS", "https://www.example.com, https://*.shop.example:8443/"
    )
    app = create_app({"TESTING": True, "SECRET_KEY": "k", "DATABASE": str(tmp_path / "b.db")})
    Store(app.config["DATABASE"]).migrate()
    yield app
    close_shared_connection(app.config["DATABASE"])


def test_chat_page_may_be_framed_only_by_the_listed_origins(chat_origins_app):
    client = chat_origins_app.test_client()
    assert (
        directives(client.get("/chat/test"))["frame-ancestors"]
        == "https://www.example.com https://*.shop.example:8443"
    )
    assert directives(client.get("/login"))["frame-ancestors"] == "'none'"


@pytest.mark.parametrize(
    "value",
    [
        "https://ok.example; script-src *",
        "www.example.com",
        "https://example.com/path",
        "javascript:alert(1)",
        "*",
    ],
)
def test_a_chat_origin_that_is_not_an_origin_stops_the_app_with_its_name(value):
    with pytest.raises(ValueError, match="BRIDGE_CHAT_ORIGINS"):
        parse_chat_origins(value)


def test_chat_origins_accept_spaces_commas_and_self():
    assert parse_chat_origins(" 'self' ,http://localhost:3000  https://a.example ") == (
        "'self' http://localhost:3000 https://a.example"
    )
    assert parse_chat_origins(" , ") == "*"


def test_templates_have_no_inline_script_style_or_handlers():
    """What CSP would block: inline <script>/<style>, style= and on*= attributes, hx-on."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    offenders = []
    for template in sorted((root / ROOT_TEMPLATES).rglob("*.html")):
        text = re.sub(r"\{#.*?#\}", "", template.read_text(), flags=re.DOTALL)  # Jinja comments
        for pattern in (
            r"<script(?![^>]*\bsrc=)",
            r"<style",
            r"\sstyle=\"",
            r"\son[a-z]+=",
            r"hx-on",
            r"javascript:",
            r"\"data:",
        ):
            if re.search(pattern, text):
                offenders.append(f"{template.relative_to(root)}: {pattern}")
    assert offenders == []
