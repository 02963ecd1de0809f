"""Shared by the unit tests of sources and rich notifications: a Mattermost mocked with
requests-mock, an environment configured against it, and the shipped examples."""

from __future__ import annotations

import itertools
from pathlib import Path

SERVER = "https://chat.example.com"
POSTS = f"{SERVER}/api/v4/posts"
MIRROR = "mirrorchannelid0000000000a"
JSON = {"Content-Type": "application/json", "X-Version-Id": "9.11.0.9.11.0.abc.false"}
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

_ids = itertools.count(1)


def created(request, context):
    """Mattermost's 201 for ``POST /api/v4/posts``: the post with a new id."""
    context.status_code = 201
    context.headers.update(JSON)
    return {"id": f"post{next(_ids):022d}", **request.json()}


def posted(requests_mock) -> list[dict]:
    """The bodies of the posts the bridge made, in order."""
    return [r.json() for r in requests_mock.request_history if r.method == "POST"]


def configure(store, **fields) -> dict:
    """The test environment verified, active and pointed at :data:`SERVER`."""
    return store.update_environment(
        "test",
        **{
            "server_url": SERVER,
            "bot_token": "b0tt0ken5ecret0123456789ab",
            "bot_user_id": "b" * 26,
            "bot_username": "bridgebot",
            "mirror_channel_id": MIRROR,
            "active": 1,
            **fields,
        },
    )


def example(name: str) -> str:
    return (EXAMPLES / name).read_text()
