"""Issue 10, parts 3-4 end to end under gunicorn: private notices to agents, files both ways."""

from __future__ import annotations

import re

import pytest
import requests

from tests.conftest import configure_env
from tests.ids import mm_id
from tests.live import wait_until

pytestmark = pytest.mark.integration
WEBHOOK_TOKEN = "test-webhook-token-0123456"
# The smallest real files of each kind: what their first bytes say is what they are.
PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"
    b"\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\xcf\xc0\xf0\x1f\x00\x05\x00\x01\xff\x89\x99"
    b"=\x1d\x00\x00\x00\x00IEND\xaeB`\x82"
)
PDF = b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
EXECUTABLE = b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 200  # a Linux program, named .png below


@pytest.fixture(scope="module")
def key(live, mm):
    key = configure_env(live, mm)
    mm.add_outgoing_webhook(
        mm.channels["support"]["id"], f"{live.url}/hooks/mattermost/test", token=WEBHOOK_TOKEN
    )
    return key


def settle(live, mm):
    mm.wait_for_webhooks()
    live.wait_routed()


def start_chat(live, text="Hello, I need help"):
    response = requests.post(
        f"{live.url}/chat/test/start", data={"name": "Vera", "text": text}, timeout=30
    )
    assert response.status_code == 200, response.text[:300]
    return re.search(r"[?&]c=([a-z2-7]{26})", response.url).group(1)


def conversation(live, key, conversation_id):
    return live.api("GET", f"/api/v1/conversations/{conversation_id}", key).json()


def counts(live):
    return (
        live.query("SELECT COUNT(*) AS n FROM messages")[0]["n"],
        live.query("SELECT COUNT(*) AS n FROM message_files")[0]["n"],
    )


def visitor_upload(live, conversation_id, name, content, text="", mime="image/png"):
    return requests.post(
        f"{live.url}/chat/test/{conversation_id}/messages",
        data={"text": text},
        files={"file": (name, content, mime)},
        timeout=60,
        allow_redirects=False,
    )


# -- private notices --------------------------------------------------------------------


def test_a_reply_to_a_closed_conversation_brings_the_agent_a_dm_and_nothing_in_the_channel(
    live, mm, key
):
    support = mm.channels["support"]["id"]
    conversation_id = start_chat(live)
    root = conversation(live, key, conversation_id)["root_post_id"]
    mm.user_post(mm.agent, support, "!close", root_id=root)
    settle(live, mm)
    assert conversation(live, key, conversation_id)["status"] == "closed"
    bot_posts_in_channel = len([p for p in mm.posts_in(support) if p["user_id"] == mm.bot["id"]])
    dm_posts = len(mm.posts_in(mm.dm_channel["id"]))

    mm.user_post(mm.agent, support, "Are you still there?", root_id=root)
    settle(live, mm)

    wait_until(lambda: len(mm.posts_in(mm.dm_channel["id"])) == dm_posts + 1, what="the DM")
    notice = mm.posts_in(mm.dm_channel["id"])[-1]
    assert notice["user_id"] == mm.bot["id"]
    assert "not delivered" in notice["message"] and "closed" in notice["message"]
    # The bot may not make ephemeral posts (a member role): tried, refused, then the DM.
    assert ("POST", "/api/v4/posts/ephemeral") in mm.requests_seen
    assert mm.ephemeral_posts == []
    # Nothing new from the bot in the mirror channel, and nothing stored for the visitor.
    assert (
        len([p for p in mm.posts_in(support) if p["user_id"] == mm.bot["id"]])
        == bot_posts_in_channel
    )
    texts = [
        m["text"]
        for m in live.api("GET", f"/api/v1/conversations/{conversation_id}/messages", key).json()[
            "messages"
        ]
    ]
    assert "Are you still there?" not in texts
    (row,) = live.query(
        "SELECT outcome, error, target FROM log WHERE action = 'agent_notice'"
        " AND conversation_id = ?",
        [conversation_id],
    )
    assert row == {
        "outcome": "ok",
        "error": "the conversation is closed: told by direct",
        "target": mm.agent["id"],
    }

    # A bot with the system_admin role may: then the notice is ephemeral, in the thread.
    mm.make_system_admin(mm.bot["id"])
    try:
        mm.user_post(mm.agent, support, "Hello?", root_id=root)
        settle(live, mm)
        wait_until(lambda: len(mm.ephemeral_posts) == 1, what="the ephemeral notice")
    finally:
        mm._users[mm.bot["id"]]["roles"] = "system_user"
    (ephemeral,) = mm.ephemeral_posts
    assert ephemeral["user_id"] == mm.agent["id"]
    assert ephemeral["post"]["root_id"] == root
    assert ephemeral["post"]["channel_id"] == support
    assert len(mm.posts_in(mm.dm_channel["id"])) == dm_posts + 1  # no second DM


# -- files from the visitor ---------------------------------------------------------------


def test_a_visitors_png_reaches_the_mattermost_post(live, mm, key):
    conversation_id = start_chat(live)
    root = conversation(live, key, conversation_id)["root_post_id"]

    response = visitor_upload(live, conversation_id, "screenshot.png", PNG, text="See this")
    assert response.status_code == 302

    (post,) = [p for p in mm.posts if p["root_id"] == root]
    assert post["message"].endswith("See this")
    (info,) = mm.file_infos_of(post)
    assert info["name"] == "screenshot.png" and info["mime_type"] == "image/png"
    assert info["size"] == len(PNG) and info["user_id"] == mm.bot["id"]
    assert mm.file_content(info["id"]) == PNG
    assert mm.get_post(post["id"])["file_ids"] == [info["id"]]
    # Mattermost has it now: the bridge keeps its id, not its bytes.
    (row,) = live.query(
        "SELECT file_id, content IS NULL AS dropped FROM message_files WHERE conversation_id = ?",
        [conversation_id],
    )
    assert row == {"file_id": info["id"], "dropped": 1}
    # The visitor's page links the file too.
    page = requests.get(f"{live.url}/chat/test?c={conversation_id}", timeout=10).text
    assert f"/chat/test/{conversation_id}/files/{info['id']}" in page


def test_a_failed_upload_keeps_the_message_and_its_file_for_the_retry(live, mm, key):
    conversation_id = start_chat(live)
    root = conversation(live, key, conversation_id)["root_post_id"]
    mm.fail_next(1, 503)  # the upload

    response = visitor_upload(live, conversation_id, "photo.png", PNG)
    assert response.status_code == 302
    (row,) = live.query(
        "SELECT m.status, f.file_id, length(f.content) AS kept FROM messages m"
        " JOIN message_files f ON f.message_id = m.id WHERE m.conversation_id = ?",
        [conversation_id],
    )
    assert row == {"status": "failed", "file_id": "", "kept": len(PNG)}
    assert [p for p in mm.posts if p["root_id"] == root] == []

    live.cli("retry")

    (post,) = [p for p in mm.posts if p["root_id"] == root]
    (info,) = mm.file_infos_of(post)
    assert mm.file_content(info["id"]) == PNG
    (row,) = live.query(
        "SELECT m.status, f.file_id, f.content IS NULL AS dropped FROM messages m"
        " JOIN message_files f ON f.message_id = m.id WHERE m.conversation_id = ?",
        [conversation_id],
    )
    assert row == {"status": "sent", "file_id": info["id"], "dropped": 1}


def test_a_host_uploads_a_file_with_text_through_the_api(live, mm, key):
    conversation_id = live.api(
        "POST", "/api/v1/conversations", key, json={"visitor": {"name": "Hal"}, "text": "Hi"}
    ).json()["id"]
    response = live.api(
        "POST",
        f"/api/v1/conversations/{conversation_id}/files",
        key,
        data={"text": "the invoice"},
        files={"file": ("invoice.PDF", PDF, "application/octet-stream")},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "sent"
    (file,) = body["files"]
    assert file["name"] == "invoice.PDF" and file["mime_type"] == "application/pdf"
    assert file["size"] == len(PDF)
    assert file["url"] == f"/api/v1/conversations/{conversation_id}/files/{file['id']}"
    post = mm.get_post(body["post_id"])
    assert post["file_ids"] == [file["id"]] and post["message"].endswith("the invoice")
    assert mm.file_content(file["id"]) == PDF


# -- files from the agent -------------------------------------------------------------------


def test_an_agents_pdf_reaches_the_visitors_download_link_and_only_there(live, mm, key):
    support = mm.channels["support"]["id"]
    mine, other = start_chat(live), start_chat(live, "Another visitor")
    root = conversation(live, key, mine)["root_post_id"]
    info = mm.upload_as(mm.agent, support, "Rechnung März.pdf", PDF, "application/pdf")

    mm.user_post(mm.agent, support, "Here is your invoice", root_id=root, file_ids=[info["id"]])
    settle(live, mm)

    # The webhook carried the id, form-encoded, as Mattermost sends it.
    assert mm.webhook_deliveries[-1]["payload"]["file_ids"] == info["id"]
    page = requests.get(f"{live.url}/chat/test?c={mine}", timeout=10).text
    link = f"/chat/test/{mine}/files/{info['id']}"
    assert f'href="{link}"' in page and "Rechnung März.pdf" in page

    download = requests.get(live.url + link, timeout=10)
    assert download.status_code == 200
    assert download.content == PDF
    assert download.headers["Content-Type"] == "application/pdf"
    assert download.headers["X-Content-Type-Options"] == "nosniff"
    assert download.headers["Content-Disposition"] == (
        "attachment; filename=\"Rechnung M_rz.pdf\"; filename*=UTF-8''Rechnung%20M%C3%A4rz.pdf"
    )

    # Another conversation's link, a made-up id: 404, and Mattermost is not asked.
    seen = len(mm.requests_seen)
    for path in (f"/chat/test/{other}/files/{info['id']}", f"/chat/test/{mine}/files/{mm_id('x')}"):
        assert requests.get(live.url + path, timeout=10).status_code == 404
    assert len(mm.requests_seen) == seen

    # The host API shows the same file with its own URL, for the same conversation only.
    messages = live.api("GET", f"/api/v1/conversations/{mine}/messages", key).json()["messages"]
    assert messages[-1]["files"] == [
        {
            "id": info["id"],
            "name": "Rechnung März.pdf",
            "size": len(PDF),
            "mime_type": "application/pdf",
            "url": f"/api/v1/conversations/{mine}/files/{info['id']}",
        }
    ]
    assert live.api("GET", messages[-1]["files"][0]["url"], key).content == PDF
    wrong = live.api("GET", f"/api/v1/conversations/{other}/files/{info['id']}", key)
    assert wrong.status_code == 404 and wrong.json()["code"] == "not_found"


# -- bad input ------------------------------------------------------------------------------


def test_a_disguised_or_oversized_file_is_refused_clearly_and_nothing_is_stored(live, mm, key):
    conversation_id = start_chat(live)
    before, posts = counts(live), len(mm.posts)

    disguised = visitor_upload(live, conversation_id, "cat.png", EXECUTABLE, text="look")
    assert disguised.status_code == 400
    assert "whatever its name says" in disguised.text
    assert "look" in disguised.text  # the typed text is kept in the form

    too_big = visitor_upload(live, conversation_id, "big.png", PNG + b"\x00" * (10 * 2**20))
    assert too_big.status_code == 400
    assert "too large" in too_big.text and "at most 10 MB" in too_big.text

    far_too_big = visitor_upload(live, conversation_id, "huge.png", PNG + b"\x00" * (11 * 2**20))
    assert far_too_big.status_code == 413

    api = live.api(
        "POST",
        f"/api/v1/conversations/{conversation_id}/files",
        key,
        files={"file": ("run.png", EXECUTABLE, "image/png")},
    )
    assert api.status_code == 400 and api.json()["code"] == "invalid_file"
    missing = live.api(
        "POST",
        f"/api/v1/conversations/{conversation_id}/files",
        key,
        files={"text": (None, "no file")},
    )  # multipart, but no file part
    assert missing.status_code == 400 and missing.json()["code"] == "missing_field"
    as_json = live.api(
        "POST", f"/api/v1/conversations/{conversation_id}/files", key, json={"text": "x"}
    )
    assert as_json.status_code == 415

    assert counts(live) == before
    assert len(mm.posts) == posts


def test_the_upload_limit_is_only_on_the_upload_routes(live, key):
    """Other routes keep refusing a body over 1 MiB."""
    response = live.api(
        "POST",
        "/api/v1/notifications",
        key,
        data=b"{" + b" " * (2**20 + 10) + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 413
