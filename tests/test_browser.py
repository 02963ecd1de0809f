"""Browser tests: Chromium (headless, via Playwright) against the bridge under gunicorn.

Two bridges share one Mattermost stand-in:

- ``admin_bridge`` (this module's own, fresh) is set up the way an admin does
  it, by clicking through the admin screens (issue "foundation");
- ``live`` (conftest) is configured by the CLI (``configure_env``) and drives
  the visitor's web chat with agents' replies coming back (issue "inbound").

The tests run in file order and build on each other within a bridge: the log,
dashboard and admin-conversation tests read what the tests before them did.

Every screen visited is saved as a full-page screenshot under
``test-artifacts/screenshots/`` for a human look.
"""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import configure_env
from tests.live import ADMIN_PASSWORD, ROOT, LiveBridge

pytestmark = [pytest.mark.browser, pytest.mark.integration]

SHOTS = ROOT / "test-artifacts" / "screenshots"
WEBHOOK_TOKEN = "test-webhook-token-0123456"  # what configure_env sets for "test"
ADMIN_WEBHOOK_TOKEN = "admin-typed-webhook-tok-78"  # 26 characters, like Mattermost's
TIMEOUT = 10_000  # ms, for every expect


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def log_in(page: Page, bridge: LiveBridge, path: str = "/") -> None:
    page.goto(bridge.url + path)
    expect(page).to_have_url(re.compile(r"/login"), timeout=TIMEOUT)
    page.get_by_label("Your name").fill("Ada")
    page.get_by_label("Admin password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("link", name="Integration log")).to_be_visible(timeout=TIMEOUT)


@pytest.fixture(scope="module")
def admin_bridge(tmp_path_factory):
    """A fresh, unconfigured bridge: the admin flow sets it up through the browser."""
    with LiveBridge(tmp_path_factory.mktemp("browser-admin")) as bridge:
        yield bridge


@pytest.fixture(scope="module")
def chat_env(live, mm):
    """The test environment configured by the CLI, with the support channel's hook."""
    key = configure_env(live, mm)
    mm.add_outgoing_webhook(
        mm.channels["support"]["id"], f"{live.url}/hooks/mattermost/test", token=WEBHOOK_TOKEN
    )
    return key


# -- 1. admin flow (foundation) ----------------------------------------------------------


def test_admin_sets_up_the_test_environment_in_the_browser(page: Page, admin_bridge, mm):
    bridge = admin_bridge
    support = mm.channels["support"]["id"]
    sales = mm.channels["sales"]["id"]

    # Login: the root redirects there.
    page.goto(bridge.url + "/")
    expect(page).to_have_url(re.compile(r"/login"), timeout=TIMEOUT)
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    shot(page, "01-login")
    page.get_by_label("Your name").fill("Ada")
    page.get_by_label("Admin password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Log in").click()

    # Dashboard -> the test environment's authentication screen, by links.
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible(timeout=TIMEOUT)
    expect(page).to_have_url(bridge.url + "/", timeout=TIMEOUT)
    shot(page, "02-dashboard")
    test_card = page.locator('section[data-env="test"]')
    expect(test_card).to_contain_text("not verified")
    test_card.get_by_role("link", name="authentication").click()
    expect(page).to_have_url(bridge.url + "/env/test/auth", timeout=TIMEOUT)
    expect(page.get_by_role("heading", name="Authentication")).to_be_visible()
    expect(page.get_by_label("Inbound webhook URL")).to_have_value(
        f"{bridge.url}/hooks/mattermost/test"
    )
    shot(page, "03-auth-empty")

    # Fill and "Save and verify" (HTMX swaps the card).
    page.get_by_label("Server URL").fill(mm.url)
    page.get_by_label("Bot token").fill(mm.bot["token"])
    page.get_by_label("Outgoing webhook token").fill(ADMIN_WEBHOOK_TOKEN)
    page.get_by_role("button", name="Save and verify").click()
    result = page.locator(".verify-slot")
    expect(result).to_contain_text("Saved and verified.", timeout=TIMEOUT)
    expect(result).to_contain_text("@bridge-bot")
    facts = result.locator("dl.facts")
    expect(facts.locator("dt:has-text('Bot account') + dd")).to_have_text("yes")
    expect(facts.locator("dt:has-text('Server version') + dd")).to_contain_text("9.11.0")
    # The token is never shown back: the field is empty, only a masked form is on the page.
    expect(page.get_by_label("Bot token")).to_have_value("")
    expect(page.get_by_label("Outgoing webhook token")).to_have_value("")
    expect(page.locator("p.saved").first).to_contain_text("Saved bot token: ••••••")
    expect(page.locator("p.saved").first).to_contain_text(mm.bot["token"][-4:])
    content = page.content()
    assert mm.bot["token"] not in content
    assert ADMIN_WEBHOOK_TOKEN not in content
    expect(page.get_by_label("Server URL")).to_have_value(mm.url)
    shot(page, "04-auth-verified")

    # -> Configuration: the mirror channel dropdown.
    result.get_by_role("link", name="Next: configuration").click()
    expect(page).to_have_url(bridge.url + "/env/test/config", timeout=TIMEOUT)
    mirror = page.locator('select[name="mirror_channel_id"]')
    expect(mirror.locator('optgroup[label="Acme"]')).to_have_count(1)
    acme_options = mirror.locator('optgroup[label="Acme"] option')
    labels = acme_options.all_text_contents()
    assert any(label.startswith("Support") for label in labels), labels
    values = mirror.locator("option").evaluate_all("els => els.map(e => e.value)")
    assert support in values
    assert mm.dm_channel["id"] not in values
    assert mm.channels["archived"]["id"] not in values
    assert mm.channels["not-joined"]["id"] not in values
    assert not any("Archived" in label or "__" in label for label in labels), labels
    shot(page, "05-config-empty")

    # Choose Support, add a notification row (HTMX), Save.
    mirror.select_option(support)
    rows = page.locator("#notify-rows-test tr")
    before = rows.count()
    page.get_by_role("button", name="Add a type").click()
    expect(rows).to_have_count(before + 1, timeout=TIMEOUT)
    new_row = rows.last
    new_row.get_by_label("Notification type").fill("booking.created")
    new_row.get_by_label("Channel for this type").select_option(sales)
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator(".flash.ok")).to_contain_text("Configuration saved.", timeout=TIMEOUT)

    # Kept after a reload.
    page.reload()
    expect(mirror).to_have_value(support, timeout=TIMEOUT)
    expect(rows).to_have_count(1)
    expect(rows.first.get_by_label("Notification type")).to_have_value("booking.created")
    expect(rows.first.get_by_label("Channel for this type")).to_have_value(sales)
    shot(page, "06-config-saved")

    # Activate, then "Send test message" (HTMX).
    page.get_by_role("button", name="Activate").click()
    expect(page.locator(".flash.ok")).to_contain_text("integration is active", timeout=TIMEOUT)
    expect(page.get_by_role("button", name="Deactivate")).to_be_visible()
    posts_before = len(mm.posts_in(support))
    page.get_by_role("button", name="Send test message").click()
    link = page.get_by_role("link", name="Open the post in Mattermost")
    expect(link).to_be_visible(timeout=TIMEOUT)
    new_posts = mm.posts_in(support)[posts_before:]
    assert len(new_posts) == 1
    post = new_posts[0]
    assert post["user_id"] == mm.bot["id"] and "test message" in post["message"]
    expect(link).to_have_attribute("href", f"{mm.url}/_redirect/pl/{post['id']}")
    shot(page, "07-test-message-ok")

    # Failure: the bot left Support -> the page names the 403 cause.
    mm.remove_member(support, mm.bot["id"])
    try:
        page.get_by_role("button", name="Send test message").click()
        failure = page.locator(".test-slot")
        expect(failure).to_contain_text("Not posted", timeout=TIMEOUT)
        expect(failure).to_contain_text("403")
        expect(failure).to_contain_text("not a member")
        expect(failure).to_contain_text("add it")
        expect(failure).to_contain_text("Support")
        assert len(mm.posts_in(support)) == posts_before + 1
        shot(page, "08-test-message-403")

        # The saved channel stays selected, marked as the bot not being a member.
        page.reload()
        expect(mirror).to_have_value(support, timeout=TIMEOUT)
        selected = mirror.locator("option:checked")
        expect(selected).to_contain_text("Support")
        expect(selected).to_contain_text("not a member")
        assert mm.bot["token"] not in page.content()
        shot(page, "09-config-bot-left")
    finally:
        mm.add_member(support, mm.bot["id"])


# -- 2. integration log ---------------------------------------------------------------------


def test_integration_log_filters_by_outcome(page: Page, admin_bridge, mm):
    log_in(page, admin_bridge)
    page.get_by_role("link", name="Integration log").click()
    expect(page.get_by_role("heading", name="Integration log")).to_be_visible(timeout=TIMEOUT)
    table = page.locator("#log-table tbody")
    data_rows = table.locator("tr:not(.poller)")
    expect(table.locator("tr.outcome-ok").filter(has_text="verify").first).to_be_visible()
    expect(table.locator("tr.outcome-ok").filter(has_text="test_message")).to_have_count(1)
    expect(table.locator("tr.outcome-error").filter(has_text="test_message")).to_have_count(1)
    expect(table.locator("tr.outcome-error")).to_contain_text("403")
    content = page.content()
    assert mm.bot["token"] not in content and ADMIN_WEBHOOK_TOKEN not in content
    assert data_rows.count() > 2
    shot(page, "10-log-all")

    page.get_by_label("Outcome").select_option("error")
    expect(page).to_have_url(re.compile(r"/log\?.*outcome=error"), timeout=TIMEOUT)
    expect(table.locator("tr.outcome-ok")).to_have_count(0, timeout=TIMEOUT)
    expect(data_rows).not_to_have_count(0)
    for cls in data_rows.evaluate_all("rows => rows.map(r => r.className)"):
        assert cls == "outcome-error"
    content = page.content()
    assert mm.bot["token"] not in content and ADMIN_WEBHOOK_TOKEN not in content
    shot(page, "11-log-errors")

    # The pushed URL is a real page: reloading it keeps the filter.
    page.reload()
    expect(page.get_by_label("Outcome")).to_have_value("error", timeout=TIMEOUT)
    expect(table.locator("tr.outcome-ok")).to_have_count(0)


def test_dashboard_and_checklist_after_setup(page: Page, admin_bridge, mm):
    log_in(page, admin_bridge)
    card = page.locator('section[data-env="test"]')
    expect(card).to_contain_text("@bridge-bot (bot account)", timeout=TIMEOUT)
    expect(card).to_contain_text("Support")
    expect(card).to_contain_text("1 type mapped")
    expect(card.locator(".badge")).to_have_text("active")
    shot(page, "19-dashboard-configured")
    page.get_by_role("link", name="Checklist", exact=True).click()
    expect(page.get_by_role("heading", name="Readiness checklist")).to_be_visible(timeout=TIMEOUT)
    assert mm.bot["token"] not in page.content()
    shot(page, "20-checklist")


# -- 3. visitor chat (inbound) -------------------------------------------------------------


def root_post_for(mm, text: str) -> dict:
    """The newest root post by the bot in Support whose message contains ``text``."""
    support = mm.channels["support"]["id"]
    found = [
        p
        for p in mm.posts_in(support)
        if p["user_id"] == mm.bot["id"] and not p["root_id"] and text in p["message"]
    ]
    assert found, f"no root post with {text!r}"
    return found[-1]


def start_chat(page: Page, live, name: str, text: str) -> str:
    page.goto(f"{live.url}/chat/test")
    expect(page.get_by_role("heading", name="Chat with us")).to_be_visible(timeout=TIMEOUT)
    page.get_by_label("Your name").fill(name)
    page.get_by_label("Message").fill(text)
    page.get_by_role("button", name="Start chat").click()
    expect(page).to_have_url(re.compile(r"/chat/test\?c=[a-z0-9]{26}$"), timeout=TIMEOUT)
    return re.search(r"c=([a-z0-9]{26})", page.url).group(1)


def test_visitor_chat_round_trip_with_an_agent(page: Page, live, mm, chat_env):
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(f"{live.url}/chat/test")
    expect(page.get_by_role("button", name="Start chat")).to_be_visible(timeout=TIMEOUT)
    shot(page, "12-chat-start")

    text = f"Is breakfast included? ({time.monotonic_ns()})"
    start_chat(page, live, "Vera", text)
    messages = page.locator("ol.messages")
    expect(messages.locator("li.message.visitor")).to_contain_text(text, timeout=TIMEOUT)
    root = root_post_for(mm, text)

    # The agent answers in the thread; the visitor's page shows it (HTMX polling).
    mm.user_post(mm.agent, mm.channels["support"]["id"], "Yes, from 7 to 10.", root_id=root["id"])
    agent = messages.locator("li.message.agent")
    expect(agent).to_contain_text("Yes, from 7 to 10.", timeout=10_000)
    expect(agent).to_contain_text("Alice Agent")
    shot(page, "13-chat-agent-reply")

    # A follow-up from the composer: shown once, and a threaded reply in Mattermost.
    page.get_by_label("Your message").fill("Great, and parking?")
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_label("Your message")).to_have_value("", timeout=TIMEOUT)
    visitor = messages.locator("li.message.visitor")
    expect(visitor.filter(has_text="Great, and parking?")).to_have_count(1, timeout=TIMEOUT)
    replies = [p for p in mm.posts if p["root_id"] == root["id"] and "parking" in p["message"]]
    assert len(replies) == 1 and replies[0]["user_id"] == mm.bot["id"]
    # The next poll (every 2 s) does not bring any message a second time.
    with page.expect_response(
        lambda r: re.search(r"/messages\?after=\d+", r.url) and r.request.method == "GET",
        timeout=TIMEOUT,
    ):
        pass
    expect(visitor.filter(has_text="Great, and parking?")).to_have_count(1)
    expect(agent).to_have_count(1)
    shot(page, "14-chat-follow-up")
    assert dialogs == []


def test_visitor_markup_is_shown_as_text(page: Page, live, mm, chat_env):
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    evil = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    start_chat(page, live, "<b>Mallory</b>", f"hi {evil}")
    messages = page.locator("ol.messages")
    expect(messages.locator("li.message.visitor")).to_contain_text(evil, timeout=TIMEOUT)
    # The follow-up arrives through the HTMX composer and poller: escaped there too.
    page.get_by_label("Your message").fill(f"again {evil}")
    page.get_by_role("button", name="Send").click()
    expect(messages.locator("li.message.visitor").filter(has_text="again")).to_contain_text(
        evil, timeout=TIMEOUT
    )
    assert messages.locator("script, img").count() == 0
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.content()
    assert dialogs == []
    shot(page, "15-chat-escaped")


def test_admin_sees_the_conversations_and_a_thread(page: Page, live, mm, chat_env):
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    log_in(page, live)
    page.get_by_role("link", name="Conversations").click()
    expect(page.get_by_role("heading", name="Conversations")).to_be_visible(timeout=TIMEOUT)
    rows = page.locator("table.rows tbody tr")
    expect(rows.filter(has_text="Vera")).to_have_count(1)
    expect(rows.filter(has_text="<b>Mallory</b>")).to_have_count(1)
    shot(page, "16-admin-conversations")

    rows.filter(has_text="Vera").get_by_role("link", name="Vera").click()
    expect(page.get_by_role("heading", name="Vera")).to_be_visible(timeout=TIMEOUT)
    thread = page.locator("ol.thread")
    expect(thread.locator("li.msg.visitor")).to_have_count(2)
    expect(thread.locator("li.msg.agent")).to_contain_text("Yes, from 7 to 10.")
    expect(thread.locator("li.msg.agent")).to_contain_text("Alice Agent")
    shot(page, "17-admin-conversation-thread")

    page.get_by_role("link", name="← Conversations").click()
    rows.filter(has_text="<b>Mallory</b>").get_by_role("link").click()
    expect(page.locator("ol.thread li.msg.visitor").first).to_contain_text(
        "<script>alert(1)</script>"
    )
    assert page.locator("ol.thread script, ol.thread img").count() == 0
    assert dialogs == []
    shot(page, "18-admin-conversation-escaped")
