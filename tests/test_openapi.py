"""bridge/openapi.py: the document states the API's own rules, value for value.

The schemathesis run (test_openapi_conformance.py) explores the API at
random; these tests pin the edges it meets only by luck (NUL, whitespace of
every kind) or never (strings past its 32 KiB generation buffer), and the
1 MiB guarantee. Each edge value is judged twice, by the document (a JSON
Schema validator) and by the API (its answer), and the two must agree.
"""

from __future__ import annotations

import copy
import itertools
import json

import jsonschema_rs
import pytest

from bridge import MAX_BODY_BYTES
from bridge.openapi import SPEC, WHITESPACE

SERVER = "https://chat.example.com"
POSTS = f"{SERVER}/api/v4/posts"
# Values with a rule behind them: NUL, whitespace alone (Python's and
# Unicode's kinds), whitespace around text, a BOM (not whitespace), an emoji.
EDGES = [
    "Ann",
    " Ann ",
    "",
    " ",
    "\t\n",
    "\x1e",
    "\x85",
    "\u3000",
    "\u2028\u00a0",
    "\ufeff",
    "a\x00b",
    "\x00",
    "\U0001f600",
    None,
]
BASE_BODIES = {
    "/api/v1/conversations": {"visitor": {"name": "Ann"}, "text": "Hello"},
    "/api/v1/conversations/{id}/messages": {"text": "Hello again"},
    "/api/v1/notifications": {"type": "booking.created", "text": "Booked"},
}


def json_schema(schema):
    """OpenAPI 3.0's ``nullable`` as JSON Schema's ``type: [..., "null"]``."""
    if isinstance(schema, dict):
        converted = {key: json_schema(value) for key, value in schema.items() if key != "nullable"}
        if schema.get("nullable"):
            if "type" not in schema:  # e.g. a oneOf: null is one more choice
                return {"anyOf": [converted, {"type": "null"}]}
            converted["type"] = [schema["type"], "null"]
        return converted
    if isinstance(schema, list):
        return [json_schema(item) for item in schema]
    return schema


def body_schema(path):
    return SPEC["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]


def string_fields(schema, prefix=()):
    """Every string property of a body schema, nested objects included, as paths."""
    for name, prop in schema.get("properties", {}).items():
        if prop.get("type") == "object":
            yield from string_fields(prop, (*prefix, name))
        elif prop.get("type") == "string":
            yield (*prefix, name), prop


def with_value(body, field, value):
    body = copy.deepcopy(body)
    target = body
    for name in field[:-1]:
        target = target.setdefault(name, {})
    target[field[-1]] = value
    return body


FIELDS = [
    (path, field, prop) for path in BASE_BODIES for field, prop in string_fields(body_schema(path))
]
FIELD_IDS = [f"{path.rsplit('/', 1)[-1]}.{'.'.join(field)}" for path, field, _ in FIELDS]


@pytest.fixture
def api(app, client, store, runner, requests_mock):
    """An active test environment, Mattermost answering every post, and an open conversation."""
    store.update_environment(
        "test",
        server_url=SERVER,
        bot_token="b0tt0ken5ecret0123456789ab",
        bot_user_id="botuserid",
        bot_username="bridgebot",
        mirror_channel_id="mirrorchannelid0000000000a",
        active=1,
        notify_map={"booking.created": "orderschannelid00000000000"},
    )
    ids = itertools.count(1)
    requests_mock.post(
        POSTS,
        status_code=201,
        headers={"Content-Type": "application/json", "X-Version-Id": "9.11.0.9.11.0.abc.false"},
        json=lambda request, context: {"id": f"post{next(ids):022d}", **request.json()},
    )
    key = runner.invoke(args=["api-key", "test"]).output.strip().splitlines()[-1]
    headers = {"Authorization": f"Bearer {key}"}
    started = client.post(
        "/api/v1/conversations", json=BASE_BODIES["/api/v1/conversations"], headers=headers
    ).json
    assert started["status"] == "sent", started
    conversation = started["id"]

    def post(path, body=None, *, raw=None):
        """POST ``body`` as JSON, or ``raw`` JSON text as it is."""
        url = path.replace("{id}", conversation)
        if raw is not None:
            return client.post(url, headers=headers, data=raw, content_type="application/json")
        return client.post(url, headers=headers, json=body)

    return post


@pytest.mark.parametrize("path, field, prop", FIELDS, ids=FIELD_IDS)
def test_each_string_field_is_refused_exactly_when_the_document_says(api, path, field, prop):
    # The document's components come along: a body may $ref them (Attachment).
    schema = {**json_schema(body_schema(path)), "components": json_schema(SPEC["components"])}
    validator = jsonschema_rs.validator_for(schema)
    limit = prop["maxLength"]
    for value in [*EDGES, "x" * limit, "x" * (limit + 1), "\U0001f600" * limit]:
        body = with_value(BASE_BODIES[path], field, value)
        response = api(path, body)
        allowed = validator.is_valid(body)
        assert response.status_code == (201 if allowed else 400), (field, repr(value)[:40])
        if not allowed:
            assert f"'{'.'.join(field)}'" in response.json["error"]


@pytest.mark.parametrize("path", BASE_BODIES)
def test_every_body_the_document_allows_fits_in_one_mebibyte(api, path):
    """Each field at its longest, in the longest escapes (12 bytes an emoji), is still accepted."""
    body = BASE_BODIES[path]
    for field, prop in string_fields(body_schema(path)):
        body = with_value(body, field, "\U0001f600" * prop["maxLength"])
    data = json.dumps(body)  # ensure_ascii: "\ud83d\ude00", as Python's requests sends it
    assert len(data) > MAX_BODY_BYTES * 0.9  # the worst case really is near the limit
    response = api(path, raw=data)
    assert response.status_code == 201


def test_every_json_body_in_the_document_is_judged_here():
    """A new operation with a JSON body needs its valid base body above."""
    with_json_bodies = {
        path
        for path, item in SPEC["paths"].items()
        for method, operation in item.items()
        if method != "parameters"
        and "application/json" in operation.get("requestBody", {}).get("content", {})
    }
    assert with_json_bodies == set(BASE_BODIES)


def test_whitespace_in_the_document_is_what_python_strips():
    every_space = "".join(c for c in map(chr, range(0x110000)) if c.isspace())
    assert WHITESPACE == every_space


def test_unpaired_surrogate_is_400_not_a_server_error(api):
    # json.dumps would pair or reject it; the raw escape is what a careless client sends.
    for path, body in (
        ("/api/v1/conversations", '{"visitor": {"name": "Ann"}, "text": "a\\ud800b"}'),
        ("/api/v1/conversations", '{"visitor": {"name": "\\udfffAnn"}, "text": "Hi"}'),
        ("/api/v1/notifications", '{"type": "booking.created", "text": "\\udc00"}'),
    ):
        response = api(path, raw=body)
        assert response.status_code == 400
        assert "surrogate" in response.json["error"]
