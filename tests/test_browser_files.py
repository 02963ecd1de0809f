"""Browser (Chromium): a visitor attaches a PNG on the chat page, and downloads an agent's PDF.

Screenshots go to ``test-artifacts/screenshots/`` (``20-*``) for a human look.
"""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import configure_env
from tests.test_browser import TIMEOUT, root_post_for, shot, start_chat
from tests.test_integration_files_notices import EXECUTABLE, PDF, PNG

pytestmark = [pytest.mark.browser, pytest.mark.integration]
WEBHOOK_TOKEN = "test-webhook-token-0123456"


@pytest.fixture(scope="module")
def chat_env(live, mm):
    key = configure_env(live, mm)
    mm.add_outgoing_webhook(
        mm.channels["support"]["id"], f"{live.url}/hooks/mattermost/test", token=WEBHOOK_TOKEN
    )
    return key


def test_a_visitor_attaches_a_png_and_downloads_an_agents_pdf(page: Page, live, mm, chat_env):
    text = f"My screen shows an error ({time.monotonic_ns()})"
    start_chat(page, live, "Vera", text)
    root = root_post_for(mm, text)
    messages = page.locator("ol.messages")

    # A disguised program is refused on the page, and nothing reaches Mattermost.
    page.get_by_label("Your message").fill("this one?")
    page.get_by_label("Attach an image or PDF").set_input_files(
        files=[{"name": "cat.png", "mimeType": "image/png", "buffer": EXECUTABLE}]
    )
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_role("alert")).to_contain_text("whatever its name says", timeout=TIMEOUT)
    expect(page.get_by_label("Your message")).to_have_value("this one?")
    shot(page, "20-chat-file-refused")
    assert [p for p in mm.posts if p["root_id"] == root["id"]] == []

    # A real PNG goes, with its text, into the thread as one post carrying the file.
    page.get_by_label("Your message").fill("Here is a screenshot")
    page.get_by_label("Attach an image or PDF").set_input_files(
        files=[{"name": "error.png", "mimeType": "image/png", "buffer": PNG}]
    )
    page.get_by_role("button", name="Send").click()
    mine = messages.locator("li.message.visitor").filter(has_text="Here is a screenshot")
    expect(mine.get_by_role("link", name="error.png")).to_be_visible(timeout=TIMEOUT)
    (post,) = [p for p in mm.posts if p["root_id"] == root["id"]]
    (info,) = mm.file_infos_of(post)
    assert mm.file_content(info["id"]) == PNG and info["name"] == "error.png"

    # The agent answers with a PDF: a download link appears (HTMX polling) and serves it.
    support = mm.channels["support"]["id"]
    uploaded = mm.upload_as(mm.agent, support, "Anleitung.pdf", PDF, "application/pdf")
    mm.user_post(
        mm.agent, support, "Follow these steps", root_id=root["id"], file_ids=[uploaded["id"]]
    )
    link = messages.locator("li.message.agent").get_by_role("link", name="Anleitung.pdf")
    expect(link).to_be_visible(timeout=TIMEOUT)
    shot(page, "21-chat-files-both-ways")
    with page.expect_download(timeout=TIMEOUT) as download_info:
        link.click()
    download = download_info.value
    assert download.suggested_filename == "Anleitung.pdf"
    assert download.failure() is None
    with open(download.path(), "rb") as saved:
        assert saved.read() == PDF
