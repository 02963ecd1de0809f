"""Chromium under the bridge's Content-Security-Policy: the admin pages still work.

Every console error is collected while logging in and using the HTMX
controls; Chromium reports each CSP violation there ("Refused to ..."). The
chat page loads inside another site's iframe; an admin page does not.
"""

from __future__ import annotations

import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from playwright.sync_api import ConsoleMessage, Page, expect

from tests.live import ADMIN_PASSWORD, ROOT, LiveBridge, free_port

pytestmark = [pytest.mark.browser, pytest.mark.integration]

SHOTS = ROOT / "test-artifacts" / "screenshots"
TIMEOUT = 10_000


@pytest.fixture(scope="module")
def bridge(tmp_path_factory):
    with LiveBridge(tmp_path_factory.mktemp("csp")) as live:
        yield live


@pytest.fixture
def console_errors(page: Page) -> list[str]:
    errors: list[str] = []

    def keep(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    page.on("console", keep)
    page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
    return errors


def test_admin_pages_work_under_the_policy_without_a_violation(page: Page, bridge, console_errors):
    page.goto(bridge.url + "/")
    expect(page).to_have_url(re.compile(r"/login"), timeout=TIMEOUT)
    policy = page.request.get(bridge.url + "/login").headers["content-security-policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    page.get_by_label("Your name").fill("Ada")
    page.get_by_label("Admin password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible(timeout=TIMEOUT)

    # bridge.js: add a notification row from the <template>, then remove it again.
    page.goto(bridge.url + "/env/test/config")
    rows = page.locator("#notify-rows-test tr")
    expect(rows).to_have_count(0, timeout=TIMEOUT)
    page.get_by_role("button", name="Add a type").click()
    expect(rows).to_have_count(1, timeout=TIMEOUT)
    rows.first.get_by_role("button", name="Remove").click()
    expect(rows).to_have_count(0, timeout=TIMEOUT)

    # An HTMX control (hx-post with the CSRF header from <body hx-headers>).
    page.get_by_role("button", name="Create an API key").click()
    expect(page.get_by_label("API key")).to_have_value(re.compile(r"^mmb_test_"), timeout=TIMEOUT)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "csp-config-api-key.png"), full_page=True)

    # Another: the log filters swap the table in place (hx-get, hx-push-url).
    page.goto(bridge.url + "/log")
    page.get_by_label("Outcome").select_option("error")
    expect(page).to_have_url(re.compile(r"outcome=error"), timeout=TIMEOUT)
    expect(page.locator("#log-table")).to_contain_text("No log rows match", timeout=TIMEOUT)

    assert console_errors == []


@pytest.fixture
def embedder(bridge):
    """Another site (another origin: its own port) whose page frames the chat and the login."""
    body = (
        f'<iframe name="chat" src="{bridge.url}/chat/test"></iframe>'
        f'<iframe name="admin" src="{bridge.url}/login"></iframe>'
    ).encode()

    class Page(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_chat_page_loads_in_another_sites_frame_but_admin_pages_do_not(
    page: Page, embedder, console_errors
):
    page.goto(embedder)
    chat = page.frame_locator('iframe[name="chat"]')
    expect(chat.get_by_role("heading", name="Chat with us")).to_be_visible(timeout=TIMEOUT)
    # Chromium names the refusal in the console: the admin page's frame-ancestors 'none'.
    deadline = time.monotonic() + TIMEOUT / 1000
    while not any("frame-ancestors" in error for error in console_errors):
        assert time.monotonic() < deadline, console_errors
        page.wait_for_timeout(50)
    assert len(console_errors) == 1 and "\"frame-ancestors 'none'\"" in console_errors[0]
    admin = page.frame_locator('iframe[name="admin"]')
    expect(admin.get_by_role("heading", name="Log in")).to_have_count(0)
