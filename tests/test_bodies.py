"""Bodies: deeply nested JSON is a 400, a chunked body past 1 MiB a 413, never a 500.

The Flask test client is checked with a chunked environ as gunicorn builds
it (no CONTENT_LENGTH, ``wsgi.input_terminated``), and gunicorn itself too.
"""

from __future__ import annotations

import io
import json

import pytest
import requests

from bridge import MAX_BODY_BYTES
from tests.live import LiveBridge

DEEP_JSON = "[" * 100_000 + "]" * 100_000
BIG = MAX_BODY_BYTES + 1


def chunked(client, path, body: bytes, content_type: str, **headers):
    """POST ``body`` the way a server hands a chunked request to the app."""
    return client.post(
        path,
        data=body,
        headers={"Transfer-Encoding": "chunked", "Content-Type": content_type, **headers},
        environ_overrides={"CONTENT_LENGTH": "", "wsgi.input_terminated": True},
    )


@pytest.fixture
def api_key(runner):
    return runner.invoke(args=["api-key", "test"]).stdout.strip().splitlines()[-1]


def test_deeply_nested_json_on_the_host_api_is_a_400(client, api_key):
    response = client.post(
        "/api/v1/conversations",
        data=DEEP_JSON,
        headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.get_json() == {
        "code": "invalid_json",
        "error": "the JSON body is nested too deeply",
    }


def test_deeply_nested_json_on_the_webhook_is_a_400(client, store):
    response = client.post(
        "/hooks/mattermost/test", data=DEEP_JSON, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.get_json()["code"] == "bad_payload"


@pytest.mark.parametrize(
    "method, path, content_type",
    [
        ("post", "/api/v1/conversations", "application/json"),
        ("post", "/hooks/mattermost/test", "application/json"),
        ("post", "/hooks/mattermost/test", "application/x-www-form-urlencoded"),
        ("post", "/login", "application/x-www-form-urlencoded"),
        ("post", "/chat/test/start", "application/x-www-form-urlencoded"),
        ("post", "/no-such-route", "text/plain"),
    ],
)
def test_a_chunked_body_past_1_mib_is_a_413_on_every_route(
    client, api_key, method, path, content_type
):
    body = b"{" + b" " * BIG if content_type == "application/json" else b"a=" + b"x" * BIG
    response = chunked(client, path, body, content_type, Authorization=f"Bearer {api_key}")
    assert response.status_code == 413


def test_a_chunked_body_at_the_limit_reaches_the_view_whole(client, api_key):
    text = "x" * 80_000  # the longest text the API takes
    body = json.dumps({"visitor": {"name": "Vera"}, "text": text}).encode()
    body += b" " * (MAX_BODY_BYTES - len(body))  # exactly 1 MiB: allowed
    response = chunked(
        client,
        "/api/v1/conversations",
        body,
        "application/json",
        Authorization=f"Bearer {api_key}",
    )
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["status"] == "skipped"  # inactive: kept, not posted


class Trickle(io.BytesIO):
    """A dechunking input as Werkzeug's own server gives it: one chunk per read."""

    CHUNK = 8192

    def read(self, size: int | None = -1) -> bytes:
        return super().read(self.CHUNK if size is None or size < 0 else min(size, self.CHUNK))


def test_a_chunked_body_read_one_chunk_at_a_time_is_still_measured_whole(client):
    response = client.post(
        "/hooks/mattermost/test",
        input_stream=Trickle(b"a=" + b"x" * BIG),
        headers={
            "Transfer-Encoding": "chunked",
            "Content-Type": "application/x-www-form-urlencoded",
        },
        environ_overrides={"CONTENT_LENGTH": "", "wsgi.input_terminated": True},
    )
    assert response.status_code == 413


def test_a_sized_body_past_1_mib_is_still_a_413(client):
    response = client.post(
        "/hooks/mattermost/test", data=b"a=" + b"x" * BIG, content_type="text/plain"
    )
    assert response.status_code == 413
    assert response.get_json()["code"] == "too_large"


# -- under gunicorn: its chunked handling, not the test client's ------------------------


@pytest.fixture(scope="module")
def live_bodies(tmp_path_factory):
    with LiveBridge(tmp_path_factory.mktemp("bodies")) as bridge:
        yield bridge


def stream(size: int, piece: bytes = b"x" * 65536):
    """A generator body: requests sends it chunked, with no Content-Length."""
    sent = 0
    while sent < size:
        yield piece[: size - sent]
        sent += len(piece)


@pytest.mark.integration
@pytest.mark.parametrize(
    "path, content_type",
    [
        ("/api/v1/conversations", "application/json"),
        ("/hooks/mattermost/test", "application/json"),
        ("/hooks/mattermost/test", "application/x-www-form-urlencoded"),
        ("/login", "application/x-www-form-urlencoded"),
        ("/no-such-route", "text/plain"),
    ],
)
def test_gunicorn_answers_a_2_5_mb_chunked_body_with_413(live_bodies, path, content_type):
    key = live_bodies.api_key("test") if path.startswith("/api/") else ""
    response = requests.post(
        live_bodies.url + path,
        data=stream(2_500_000),
        headers={"Content-Type": content_type, "Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert response.status_code == 413


@pytest.mark.integration
def test_gunicorn_passes_a_small_chunked_body_on_and_nested_json_is_a_400(live_bodies):
    key = live_bodies.api_key("test")
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    body = json.dumps({"visitor": {"name": "Vera"}, "text": "Hello"}).encode()
    created = requests.post(
        live_bodies.url + "/api/v1/conversations",
        data=iter([body[:10], body[10:]]),
        headers=headers,
        timeout=30,
    )
    assert created.status_code == 201, created.text
    for path in ("/api/v1/conversations", "/hooks/mattermost/test"):
        nested = requests.post(live_bodies.url + path, data=DEEP_JSON, headers=headers, timeout=30)
        assert nested.status_code == 400, nested.text
    assert "Traceback" not in live_bodies.log_path.read_text()
