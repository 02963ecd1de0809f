"""Browser test: Sign in with Mattermost in Chromium, against gunicorn and the stand-in.

The admin clicks *Sign in with Mattermost* on the login page; Chromium follows
the redirects to the stand-in's /oauth/authorize and back (the bridge's CSP has
``form-action 'self'``, which is why the button is a link, not a form) and
lands on the dashboard under the Mattermost username. Then the settings screen
turns the password login off, and the login page keeps only the button.
Screenshots go to ``test-artifacts/screenshots/``.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.live import LiveBridge
from tests.test_browser import TIMEOUT, shot

pytestmark = [pytest.mark.browser, pytest.mark.integration]


@pytest.fixture(scope="module")
def bridge(mm, tmp_path_factory):
    with LiveBridge(tmp_path_factory.mktemp("browser-oauth")) as live:
        app = mm.add_oauth_app([live.url + "/login/mattermost/callback"])
        live.cli(
            "oauth",
            "--server-url",
            mm.url,
            "--client-id",
            app["id"],
            "--client-secret",
            app["client_secret"],
        )
        yield live


def test_sign_in_with_mattermost_lands_on_the_dashboard_as_the_mattermost_user(
    page: Page, bridge, mm
):
    mm.oauth_user = mm.add_user("root-rita", roles="system_user system_admin")
    # Chromium reports a CSP violation on the console ("Refused to ...", or for a form
    # whose answer redirects elsewhere "... violates the following Content Security Policy
    # directive: form-action 'self' ... blocked", which a form POST button would cause).
    errors = []
    page.on(
        "console",
        lambda message: (
            errors.append(message.text)
            if "Content Security Policy" in message.text or "Refused to" in message.text
            else None
        ),
    )
    page.goto(bridge.url + "/checklist")
    expect(page).to_have_url(re.compile(r"/login\?next=/checklist"), timeout=TIMEOUT)
    shot(page, "oauth-01-login")
    page.get_by_role("link", name="Sign in with Mattermost").click()
    # Back from Mattermost on the page asked for, under the Mattermost username.
    expect(page).to_have_url(bridge.url + "/checklist", timeout=TIMEOUT)
    expect(page.get_by_role("button", name="Log out root-rita")).to_be_visible(timeout=TIMEOUT)
    assert ("GET", "/oauth/authorize") in mm.requests_seen

    page.get_by_role("link", name="Dashboard").click()
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible(timeout=TIMEOUT)
    shot(page, "oauth-02-dashboard")
    page.get_by_role("link", name="sign in with Mattermost").click()
    expect(page.get_by_text("Last sign-in with Mattermost: @root-rita")).to_be_visible(
        timeout=TIMEOUT
    )
    page.get_by_label("Turn the password login off").check()
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Sign-in settings saved.")).to_be_visible(timeout=TIMEOUT)
    shot(page, "oauth-03-settings")
    page.get_by_role("link", name="Dashboard").click()
    page.get_by_role("link", name="admin actions").click()
    log = page.locator("table[data-admin-log] tbody tr")
    expect(log.first).to_contain_text("root-rita", timeout=TIMEOUT)
    expect(log.first).to_contain_text("oauth_settings.settings_page")
    expect(log.nth(1)).to_contain_text("sign-in")
    expect(log.nth(1)).to_contain_text("Mattermost")

    page.get_by_role("button", name="Log out root-rita").click()
    expect(page).to_have_url(re.compile(r"/login"), timeout=TIMEOUT)
    expect(page.get_by_role("link", name="Sign in with Mattermost")).to_be_visible()
    expect(page.get_by_label("Admin password")).to_have_count(0)
    shot(page, "oauth-04-password-off")

    # A plain user gets the refusal page, readable, and no session.
    mm.oauth_user = mm.add_user("plain-paul")
    page.get_by_role("link", name="Sign in with Mattermost").click()
    expect(page.get_by_role("heading", name="Not allowed")).to_be_visible(timeout=TIMEOUT)
    expect(page.get_by_role("alert")).to_contain_text("@plain-paul signed in to Mattermost")
    shot(page, "oauth-05-refused")
    expect(page.get_by_role("link", name="Dashboard")).to_have_count(0)
    assert errors == []  # no CSP violation on the way (the refusal's 403 is not one)
