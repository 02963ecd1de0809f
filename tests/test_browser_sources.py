"""Browser test: the sources screen's live template preview, in Chromium against gunicorn.

The admin adds a source while watching the preview render a pasted Alertmanager
payload, breaks the template and sees the error line, fixes it, then edits the
template on the page of the source, where the preview uses the last payload
the source received. Screenshots go to ``test-artifacts/screenshots/``.
"""

from __future__ import annotations

import re

import pytest
import requests
from playwright.sync_api import Page, expect

from tests.live import ROOT, LiveBridge
from tests.test_browser import TIMEOUT, log_in, shot

pytestmark = [pytest.mark.browser, pytest.mark.integration]

EXAMPLES = ROOT / "examples"
TOKEN = "browser-alert-token-1"


@pytest.fixture(scope="module")
def bridge(tmp_path_factory):
    with LiveBridge(tmp_path_factory.mktemp("browser-sources")) as live:
        yield live


def test_the_template_preview_follows_typing_and_shows_the_error_line(page: Page, bridge):
    log_in(page, bridge)
    page.locator('section[data-env="test"]').get_by_role("link", name="0 sources").click()
    expect(page.get_by_role("heading", name="Sources")).to_be_visible(timeout=TIMEOUT)

    # Adding: the preview renders the pasted sample as the template is typed.
    preview = page.locator(".preview")
    expect(preview).to_contain_text("No payload to preview on yet", timeout=TIMEOUT)
    page.locator('input[name="name"]').fill("alertmanager")
    page.get_by_label("Notification type").fill("monitoring.alert")
    page.get_by_label("Sample payload").fill((EXAMPLES / "alertmanager-firing.json").read_text())
    template = page.get_by_label("Template")
    text = (EXAMPLES / "alertmanager.md.j2").read_text()
    template.fill(text)
    rendered = preview.locator('pre[data-preview="ok"]')
    expect(rendered).to_contain_text(
        ":rotating_light: **FIRING** HighErrorRate (2 alerts)", timeout=TIMEOUT
    )
    expect(rendered).to_contain_text("on `shop-api-2:9100`")

    # A mistake: the error and its line, live.
    template.press("Control+End")
    template.type("\n{{ payload.alerts[0].labels.nope.deeper }}")
    line = text.count("\n") + 2  # the file ends with a newline: the typed line comes after
    error = preview.locator('[data-preview="error"]')
    expect(error).to_contain_text(f"Line {line}:", timeout=TIMEOUT)
    expect(error).to_contain_text("has no attribute 'nope'")
    expect(error.locator("pre.error-line")).to_have_text(
        f"{line} | {{{{ payload.alerts[0].labels.nope.deeper }}}}"
    )
    shot(page, "sources-01-preview-error")

    # A sandbox escape reads as a refusal, not as an empty string.
    template.fill("{{ ''.__class__.__mro__ }}")
    expect(error).to_contain_text("'__class__' of a 'str' object is not allowed", timeout=TIMEOUT)

    # Fixed and saved, with a secret of the admin's own (a random one is offered).
    template.fill(text)
    expect(rendered).to_be_visible(timeout=TIMEOUT)
    secret = page.get_by_role("textbox", name="Secret")
    assert len(secret.input_value()) >= 32
    secret.fill(TOKEN)
    page.get_by_role("button", name="Add source").click()
    expect(page.locator(".flash.ok")).to_contain_text("Source alertmanager added.", timeout=TIMEOUT)
    expect(page.get_by_role("heading", name="Source alertmanager")).to_be_visible()
    assert TOKEN not in page.content()

    # The other system calls; the source's page shows the payload and previews on it.
    answer = requests.post(
        f"{bridge.url}/hooks/in/test/alertmanager",
        data=(EXAMPLES / "alertmanager-resolved.json").read_bytes(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    assert answer.status_code == 201, answer.text
    page.reload()
    expect(page.locator("pre[data-last-payload]")).to_contain_text(
        '"status": "resolved"', timeout=TIMEOUT
    )
    expect(page.get_by_label("Call URL")).to_have_value(f"{bridge.url}/hooks/in/test/alertmanager")
    preview = page.locator(".preview")
    expect(preview).to_contain_text("Rendered on the last payload received", timeout=TIMEOUT)
    expect(preview.locator('pre[data-preview="ok"]')).to_contain_text(
        ":white_check_mark: **RESOLVED** HighErrorRate"
    )

    # Editing the template on the page previews it before it is saved.
    page.get_by_label("Template").fill(
        "Alert {{ payload.status | upper }}: {{ payload.alerts | length }}"
    )
    expect(preview.locator('pre[data-preview="ok"]')).to_have_text(
        "Alert RESOLVED: 1", timeout=TIMEOUT
    )
    shot(page, "sources-03-source-preview")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator(".flash.ok")).to_contain_text("Source alertmanager saved.", timeout=TIMEOUT)
    expect(page.get_by_label("Template")).to_have_value(
        "Alert {{ payload.status | upper }}: {{ payload.alerts | length }}"
    )
    assert re.search(r"saved <code>••••••", page.content())
    assert TOKEN not in page.content()

    # The list: one source, one payload received, its type not mapped yet.
    page.get_by_role("link", name="← All sources").click()
    row = page.locator('tr[data-source="alertmanager"]')
    expect(row).to_contain_text("monitoring.alert", timeout=TIMEOUT)
    expect(row).to_contain_text("not mapped: skipped")
    expect(row.locator("td").nth(3)).to_contain_text("1 · last")
    shot(page, "sources-04-list")
