"""Browser test: the authentication screen's switch between a bot token and an
account login, in Chromium against gunicorn and the stand-in.

Screenshots go to ``test-artifacts/screenshots/`` (auth-mode-*.png).
"""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.live import LiveBridge
from tests.test_browser import TIMEOUT, log_in, shot

pytestmark = [pytest.mark.browser, pytest.mark.integration]

PASSWORD = "relay-password-1"
LOGIN_CHOICE = "Account login (username or e-mail + password)"
TOKEN_CHOICE = "Bot account (its access token)"


@pytest.fixture(scope="module")
def bridge(tmp_path_factory):
    with LiveBridge(tmp_path_factory.mktemp("browser-account-login")) as live:
        yield live


def test_the_auth_mode_switch_shows_one_mode_and_warns_about_an_account(page: Page, bridge, mm):
    mm.add_account("relay", PASSWORD)
    log_in(page, bridge, "/env/test/auth")
    expect(page.get_by_role("heading", name="Authentication")).to_be_visible(timeout=TIMEOUT)
    warning = page.get_by_role("note").filter(has_text="Not a bot account.")

    # A bot token by default: the account's fields and the warning are hidden.
    expect(page.get_by_label("Bot token")).to_be_visible()
    expect(page.get_by_role("textbox", name="Username or e-mail")).to_be_hidden()
    expect(page.locator("input#password")).to_be_hidden()
    expect(warning).to_be_hidden()
    shot(page, "auth-mode-1-token")

    # The switch: only the account login's fields, with the warning.
    page.get_by_label(LOGIN_CHOICE).check()
    expect(page.get_by_role("textbox", name="Username or e-mail")).to_be_visible()
    expect(page.locator("input#password")).to_be_visible()
    expect(warning).to_be_visible()
    expect(page.get_by_label("Bot token")).to_be_hidden()

    # Verify with a wrong password: a clear error naming the account, nothing saved.
    page.get_by_label("Server URL").fill(mm.url)
    page.get_by_role("textbox", name="Username or e-mail").fill("relay")
    page.locator("input#password").fill("not-the-password")
    page.get_by_role("button", name="Verify without saving").click()
    result = page.locator(".verify-slot")
    expect(result).to_contain_text(
        "Mattermost refused the login of account 'relay': wrong username/e-mail or password.",
        timeout=TIMEOUT,
    )
    shot(page, "auth-mode-2-wrong-password")

    # The right one, saved: who the account is, and that it is not a bot.
    page.locator("input#password").fill(PASSWORD)
    page.get_by_role("button", name="Save and verify").click()
    expect(result).to_contain_text("Saved and verified.", timeout=TIMEOUT)
    facts = result.locator("dl.facts")
    expect(facts.locator("dt:has-text('Signed in as') + dd")).to_have_text("@relay (account login)")
    expect(facts.locator("dt:has-text('Bot account') + dd")).to_contain_text("no — an ordinary")
    # The swapped-in form keeps the mode; the password is never shown back.
    expect(page.get_by_label(LOGIN_CHOICE)).to_be_checked()
    expect(page.locator("input#password")).to_have_value("")
    expect(page.get_by_role("textbox", name="Username or e-mail")).to_have_value("relay")
    expect(page.locator("p.saved")).to_contain_text("Saved password: ••••••••")
    expect(warning).to_be_visible()
    assert PASSWORD not in page.content()
    shot(page, "auth-mode-3-account-saved")

    # A reload renders the saved mode; switching back shows the token field alone.
    page.reload()
    expect(page.get_by_label(LOGIN_CHOICE)).to_be_checked(timeout=TIMEOUT)
    expect(page.get_by_label("Bot token")).to_be_hidden()
    page.get_by_label(TOKEN_CHOICE).check()
    expect(page.get_by_label("Bot token")).to_be_visible()
    expect(warning).to_be_hidden()

    # The checklist warns too: the account is not a bot.
    page.goto(bridge.url + "/checklist")
    item = page.locator('section[data-env="test"] li[data-item="bot_token"]')
    expect(item.locator(".evidence")).to_contain_text("warning", timeout=TIMEOUT)
    expect(item.locator(".evidence")).to_contain_text("@relay signs in by account login")
    shot(page, "auth-mode-4-checklist")
