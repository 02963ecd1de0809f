"""The stand-in's issue-10 endpoints behave as the server source says (cited in standin.py)."""

from __future__ import annotations

import pytest
import requests

from tests.ids import mm_id
from tests.test_integration_files_notices import PNG


def call(mm, user, method, path, **kwargs):
    return requests.request(
        method,
        f"{mm.url}/api/v4{path}",
        headers={"Authorization": f"Bearer {user['token']}"},
        timeout=10,
        **kwargs,
    )


def test_ephemeral_posts_are_for_system_admins_only(mm):
    body = {
        "user_id": mm.agent["id"],
        "post": {"channel_id": mm.channels["support"]["id"], "message": "psst"},
    }
    refused = call(mm, mm.bot, "POST", "/posts/ephemeral", json=body)
    assert refused.status_code == 403
    assert refused.json()["id"] == "api.context.permissions.app_error"
    assert mm.ephemeral_posts == []
    mm.make_system_admin(mm.prod_bot["id"])
    made = call(mm, mm.prod_bot, "POST", "/posts/ephemeral", json=body)
    assert made.status_code == 201 and made.json()["message"] == "psst"
    assert [e["user_id"] for e in mm.ephemeral_posts] == [mm.agent["id"]]
    assert mm.posts_in(mm.channels["support"]["id"]) == []  # saved nowhere


def test_direct_channels_are_found_or_made_by_the_sorted_ids(mm):
    existing = call(mm, mm.bot, "POST", "/channels/direct", json=[mm.bot["id"], mm.agent["id"]])
    assert existing.status_code == 201 and existing.json()["id"] == mm.dm_channel["id"]
    new = call(
        mm, mm.prod_bot, "POST", "/channels/direct", json=[mm.agent["id"], mm.prod_bot["id"]]
    )
    again = call(
        mm, mm.prod_bot, "POST", "/channels/direct", json=[mm.prod_bot["id"], mm.agent["id"]]
    )
    assert new.json()["id"] == again.json()["id"]
    assert new.json()["name"] == "__".join(sorted([mm.agent["id"], mm.prod_bot["id"]]))
    assert new.json()["type"] == "D"
    # Not one of the two, not an admin: refused. Not two ids: 400.
    others = call(mm, mm.bot, "POST", "/channels/direct", json=[mm.agent["id"], mm.prod_bot["id"]])
    assert others.status_code == 403
    assert call(mm, mm.bot, "POST", "/channels/direct", json=[mm.bot["id"]]).status_code == 400


def test_files_are_uploaded_attached_and_read_by_those_who_may(mm):
    support = mm.channels["support"]["id"]
    info = mm.upload_as(mm.bot, support, "a.png", PNG, "image/png")
    assert info["post_id"] == "" and info["size"] == len(PNG)
    # Before a post carries it, only its uploader may read it.
    assert call(mm, mm.bot, "GET", f"/files/{info['id']}/info").status_code == 200
    assert call(mm, mm.agent, "GET", f"/files/{info['id']}").status_code == 403
    # Another user's file id is dropped from a post, not an error (attachFilesToPost).
    foreign = mm.upload_as(mm.agent, support, "b.png", PNG, "image/png")
    post = call(
        mm,
        mm.bot,
        "POST",
        "/posts",
        json={"channel_id": support, "message": "x", "file_ids": [info["id"], foreign["id"]]},
    ).json()
    assert post["file_ids"] == [info["id"]]
    assert [f["id"] for f in post["metadata"]["files"]] == [info["id"]]
    download = call(mm, mm.agent, "GET", f"/files/{info['id']}")
    assert download.status_code == 200 and download.content == PNG
    assert download.headers["Content-Disposition"].startswith("attachment")
    assert call(mm, mm.bot, "GET", f"/files/{mm_id('nope')}/info").status_code == 404
    # Uploading needs membership of the channel.
    with pytest.raises(requests.HTTPError):
        mm.upload_as(mm.bot, mm.channels["not-joined"]["id"], "c.png", PNG, "image/png")


def test_webhook_payloads_carry_file_ids_comma_separated(mm):
    support = mm.channels["support"]["id"]
    mm.add_outgoing_webhook(support, "http://127.0.0.1:9/nowhere", token="t" * 26)
    first = mm.upload_as(mm.agent, support, "1.png", PNG, "image/png")
    second = mm.upload_as(mm.agent, support, "2.png", PNG, "image/png")
    mm.user_post(mm.agent, support, "two files", file_ids=[first["id"], second["id"]])
    mm.wait_for_webhooks()
    assert mm.webhook_deliveries[-1]["payload"]["file_ids"] == f"{first['id']},{second['id']}"
