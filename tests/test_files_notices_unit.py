"""Issue 10 parts 3-4 in units: the client's new calls (requests-mock), file checks,
the webhook's file_ids, and the notice after a callback keeps failing."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest
import requests
from werkzeug.datastructures import MultiDict

from bridge import mattermost as mm
from bridge.callbacks import NOTICE_AFTER_FAILURES, CallbackSender
from bridge.inbound import PayloadError, parse_payload
from bridge.uploads import MAX_FILE_BYTES, UploadRefused, check_file, safe_name, sniff
from bridge.views.downloads import content_disposition
from tests.ids import mm_id
from tests.test_callbacks import SECRET, Receiver
from tests.test_integration_files_notices import PDF, PNG

SERVER = "https://chat.example.com"
JSON = {"Content-Type": "application/json", "X-Version-Id": "9.11.0.9.11.0.abc.false"}
CHANNEL, BOT, AGENT, FILE, ROOT = (mm_id(x) for x in ("ch", "bot", "agent", "file", "root"))


@pytest.fixture
def client(session, records):
    return mm.MattermostClient(SERVER, "tok", session=session, on_call=records.append)


# -- the client's calls --------------------------------------------------------------


def test_ephemeral_post_sends_the_user_and_the_post(client, mock, records):
    mock.post(f"{SERVER}/api/v4/posts/ephemeral", status_code=201, json={"id": "e1"}, headers=JSON)
    client.ephemeral_post(AGENT, CHANNEL, "psst", root_id=ROOT)
    assert mock.last_request.json() == {
        "user_id": AGENT,
        "post": {"channel_id": CHANNEL, "root_id": ROOT, "message": "psst"},
    }
    assert [(r.action, r.status) for r in records] == [("notice", 201)]


def test_ephemeral_post_refused_for_a_member_role_is_forbidden(client, mock):
    body = {
        "id": "api.context.permissions.app_error",
        "message": "You do not have the appropriate permissions.",
        "status_code": 403,
    }
    mock.post(f"{SERVER}/api/v4/posts/ephemeral", status_code=403, json=body, headers=JSON)
    with pytest.raises(mm.Forbidden):
        client.ephemeral_post(AGENT, CHANNEL, "psst")


def test_direct_channel_posts_the_two_user_ids(client, mock):
    mock.post(f"{SERVER}/api/v4/channels/direct", status_code=201, json={"id": "dm1"}, headers=JSON)
    assert client.direct_channel(BOT, AGENT)["id"] == "dm1"
    assert mock.last_request.json() == [BOT, AGENT]


def test_upload_file_is_multipart_with_the_channel_and_gives_the_file_info(client, mock):
    info = {"id": FILE, "name": "a.png", "size": len(PNG), "mime_type": "image/png"}
    mock.post(
        f"{SERVER}/api/v4/files",
        status_code=201,
        json={"file_infos": [info], "client_ids": []},
        headers=JSON,
    )
    assert client.upload_file(CHANNEL, "a.png", PNG, "image/png") == info
    request = mock.last_request
    assert request.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    body = request.body
    assert b'name="channel_id"\r\n\r\n' + CHANNEL.encode() in body
    assert b'name="files"; filename="a.png"\r\nContent-Type: image/png\r\n\r\n' + PNG in body
    assert request.headers["Authorization"] == "Bearer tok"


def test_an_upload_answer_without_file_infos_is_not_mattermost(client, mock):
    mock.post(f"{SERVER}/api/v4/files", status_code=201, json={"client_ids": []}, headers=JSON)
    with pytest.raises(mm.NotMattermost):
        client.upload_file(CHANNEL, "a.png", PNG, "image/png")


def test_file_info_and_streamed_download(client, mock, records):
    mock.get(f"{SERVER}/api/v4/files/{FILE}/info", json={"id": FILE, "name": "x.pdf"}, headers=JSON)
    mock.get(
        f"{SERVER}/api/v4/files/{FILE}", content=PDF, headers={"Content-Type": "application/pdf"}
    )
    assert client.file_info(FILE)["name"] == "x.pdf"
    response = client.open_file(FILE)
    assert b"".join(response.iter_content(7)) == PDF
    response.close()
    assert [(r.action, r.status, r.error) for r in records] == [
        ("file_info", 200, ""),
        ("download", 200, ""),
    ]


def test_a_download_mattermost_refuses_raises_and_is_recorded(client, mock, records):
    body = {
        "id": "app.file_info.get.app_error",
        "message": "Unable to get the file info.",
        "status_code": 404,
    }
    mock.get(f"{SERVER}/api/v4/files/{FILE}", status_code=404, json=body, headers=JSON)
    with pytest.raises(mm.NotFound):
        client.open_file(FILE)
    assert [(r.action, r.status) for r in records] == [("download", 404)]
    assert "404" in records[0].error


# -- what a file is ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, mime_type",
    [
        (PNG, "image/png"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "image/jpeg"),
        (b"GIF89a\x01\x00", "image/gif"),
        (b"RIFF\x1a\x00\x00\x00WEBPVP8L", "image/webp"),
        (PDF, "application/pdf"),
        (b"MZ\x90\x00\x03", None),  # a Windows program
        (b"\x7fELF\x02\x01", None),
        (b"<html><script>", None),
        (b"RIFF\x1a\x00\x00\x00WAVE", None),  # RIFF, but not WebP
    ],
)
def test_the_type_comes_from_the_content(content, mime_type):
    assert sniff(content) == mime_type


def test_a_disguised_an_empty_and_a_too_large_file_are_refused_with_the_reason():
    with pytest.raises(UploadRefused, match="whatever its name says"):
        check_file("cat.png", b"MZ\x90\x00" * 10)
    with pytest.raises(UploadRefused, match="empty"):
        check_file("cat.png", b"")
    with pytest.raises(UploadRefused, match="at most 10 MB"):
        check_file("big.png", PNG + b"\x00" * MAX_FILE_BYTES)
    assert check_file("ok.png", PNG + b"\x00" * (MAX_FILE_BYTES - len(PNG))) == (
        "ok.png",
        "image/png",
    )


@pytest.mark.parametrize(
    "name, mime_type, safe",
    [
        ("../../etc/passwd.png", "image/png", "passwd.png"),
        ("C:\\Users\\me\\shot.PNG", "image/png", "shot.PNG"),
        ("photo.jpeg", "image/jpeg", "photo.jpeg"),
        ("invoice.exe", "application/pdf", "invoice.exe.pdf"),  # the content decides
        ("a\x00b\u202e.png", "image/png", "ab.png"),  # no control or bidi characters
        ("", "image/gif", "file.gif"),
        ("x" * 300 + ".pdf", "application/pdf", "x" * 116 + ".pdf"),
    ],
)
def test_names_are_cleaned_and_carry_the_extension_of_their_type(name, mime_type, safe):
    assert safe_name(name, mime_type) == safe


def test_content_disposition_is_an_attachment_with_an_exact_and_a_plain_name():
    assert content_disposition('Rechnung "März"; x.pdf') == (
        'attachment; filename="Rechnung _M_rz__ x.pdf"; '
        "filename*=UTF-8''Rechnung%20%22M%C3%A4rz%22%3B%20x.pdf"
    )


# -- the webhook's file_ids ----------------------------------------------------------------

FIELDS = {
    "token": "t" * 26,
    "post_id": mm_id("p"),
    "user_id": AGENT,
    "channel_id": CHANNEL,
    "text": "see attached",
}


def test_file_ids_arrive_comma_separated_in_a_form_and_in_json():
    ids = f"{FILE},{mm_id('file2')}"
    form = {**FIELDS, "file_ids": ids}
    from_form = parse_payload(
        "application/x-www-form-urlencoded", MultiDict(form), urlencode(form).encode()
    )
    from_json = parse_payload("application/json", MultiDict(), json.dumps(form).encode())
    assert from_form.file_ids == from_json.file_ids == ids
    assert (
        parse_payload("application/json", MultiDict(), json.dumps(FIELDS).encode()).file_ids == ""
    )


@pytest.mark.parametrize("file_ids", ["../etc/passwd", f"{FILE},x", ",".join([FILE] * 11)])
def test_file_ids_that_are_not_mattermost_ids_are_refused(file_ids):
    with pytest.raises(PayloadError, match="file_ids"):
        parse_payload(
            "application/json", MultiDict(), json.dumps({**FIELDS, "file_ids": file_ids}).encode()
        )


# -- a callback that keeps failing ----------------------------------------------------------


@pytest.fixture
def receiver():
    receiver = Receiver(SECRET)
    yield receiver
    receiver.close()


@pytest.fixture
def agent_reply(store, mm, receiver):
    """An agent's reply in a mirrored thread, waiting for the host's callback."""
    support = mm.channels["support"]["id"]
    store.update_environment(
        "test",
        server_url=mm.url,
        bot_token=mm.bot["token"],
        bot_user_id=mm.bot["id"],
        callback_url=receiver.url,
        callback_secret=SECRET,
        active=1,
    )
    conversation, _ = store.create_conversation("test", "Ann", "", "", "Hi")
    root = mm.user_post(mm.bot, support, "root")
    store.set_conversation_root(conversation["id"], root["id"], support)
    post = mm.user_post(mm.agent, support, "Your order ships today", root_id=root["id"])
    return store.add_inbound_message(
        env="test",
        conversation_id=conversation["id"],
        direction="agent",
        author="Alice",
        text=post["message"],
        post_id=post["id"],
        delivery_status="pending",
    )


def notice_rows(store):
    return list(store.db.query("SELECT * FROM log WHERE action = 'agent_notice'"))


def test_the_agent_is_told_once_when_the_callback_keeps_failing(store, mm, receiver, agent_reply):
    receiver.status = 500
    dm_posts = len(mm.posts_in(mm.dm_channel["id"]))
    with requests.Session() as session:
        sender = CallbackSender(store, session=session, sleep=lambda _: None)
        assert sender.deliver(agent_reply["id"], attempts=NOTICE_AFTER_FAILURES - 1) is False
        assert len(mm.posts_in(mm.dm_channel["id"])) == dm_posts  # not yet
        assert sender.deliver(agent_reply["id"], attempts=1) is False
        (notice,) = mm.posts_in(mm.dm_channel["id"])[dm_posts:]
        assert "has not reached the visitor" in notice["message"]
        assert "HTTP 500" in notice["message"]
        assert sender.deliver(agent_reply["id"], attempts=2) is False
    assert len(mm.posts_in(mm.dm_channel["id"])) == dm_posts + 1  # told once
    (row,) = notice_rows(store)
    assert row["error"] == "the host's callback keeps failing: told by direct"
    assert row["message_id"] == agent_reply["id"] and row["target"] == mm.agent["id"]
    assert len(receiver.calls) == NOTICE_AFTER_FAILURES + 2


def test_a_reply_too_long_for_the_host_is_told_at_once_and_once(store, mm, receiver, agent_reply):
    receiver.status = 413
    dm_posts = len(mm.posts_in(mm.dm_channel["id"]))
    with requests.Session() as session:
        sender = CallbackSender(store, session=session, sleep=lambda _: None)
        assert sender.deliver(agent_reply["id"], attempts=1) is False
        (notice,) = mm.posts_in(mm.dm_channel["id"])[dm_posts:]
        assert "longer than the visitor's side accepts" in notice["message"]
        assert "22 characters" in notice["message"]
        assert sender.deliver(agent_reply["id"], attempts=NOTICE_AFTER_FAILURES) is False
    assert len(mm.posts_in(mm.dm_channel["id"])) == dm_posts + 1
    (row,) = notice_rows(store)
    assert row["error"] == "the reply is longer than the visitor's side accepts: told by direct"
