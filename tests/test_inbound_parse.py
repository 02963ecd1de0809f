"""bridge/inbound.py parse_payload: Mattermost's outgoing-webhook bodies, both encodings."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest
from werkzeug.datastructures import MultiDict

from bridge.inbound import MAX_FIELD, MAX_TEXT, PayloadError, WebhookPayload, parse_payload

FORM = "application/x-www-form-urlencoded"
FIELDS = {
    "token": "hooktoken00000000000000000",
    "team_id": "team0000000000000000000000",
    "team_domain": "acme",
    "channel_id": "chan0000000000000000000000",
    "channel_name": "support",
    "user_id": "user0000000000000000000000",
    "user_name": "bo",
    "post_id": "post0000000000000000000000",
    "text": "Hello Ann",
    "trigger_word": "",
}


def form_payload(**overrides):
    fields = {**FIELDS, "timestamp": "1700000000", **overrides}
    fields = {key: value for key, value in fields.items() if value is not None}
    return parse_payload(FORM, MultiDict(fields), urlencode(fields).encode())


def json_payload(content_type="application/json", **overrides):
    fields = {**FIELDS, "timestamp": 1700000000123, "file_ids": "", **overrides}
    fields = {key: value for key, value in fields.items() if value is not None}
    return parse_payload(content_type, MultiDict(), json.dumps(fields).encode())


def test_form_encoded_payload_is_read():
    payload = form_payload()
    assert isinstance(payload, WebhookPayload)
    assert payload.token == FIELDS["token"]
    assert payload.post_id == FIELDS["post_id"]
    assert payload.user_name == "bo"
    assert payload.text == "Hello Ann"


def test_form_seconds_and_json_milliseconds_give_the_same_seconds():
    from_form = form_payload(timestamp="1700000000")
    from_json = json_payload(timestamp=1700000000000)
    assert from_form.timestamp == from_json.timestamp == 1_700_000_000.0


def test_json_milliseconds_keep_their_fraction():
    assert json_payload(timestamp=1700000000123).timestamp == pytest.approx(1_700_000_000.123)


def test_json_with_a_charset_parameter_is_json():
    assert json_payload("application/json; charset=utf-8").post_id == FIELDS["post_id"]


def test_multipart_form_is_read_like_a_form():
    payload = parse_payload("multipart/form-data; boundary=x", MultiDict({**FIELDS}), b"")
    assert payload.channel_id == FIELDS["channel_id"]


def test_empty_text_is_allowed():
    assert form_payload(text="").text == ""
    assert json_payload(text=None).text == ""


def test_missing_timestamp_is_none():
    assert form_payload(timestamp=None).timestamp is None


@pytest.mark.parametrize("field", ["token", "post_id", "user_id", "channel_id"])
def test_missing_field_is_named_with_a_content_type_hint(field):
    with pytest.raises(PayloadError) as caught:
        json_payload(**{field: None})
    message = str(caught.value)
    assert field in message
    assert "content type" in message
    assert "application/json" in message


def test_empty_required_field_counts_as_missing():
    with pytest.raises(PayloadError, match="post_id"):
        form_payload(post_id="")


def test_several_missing_fields_are_all_named():
    with pytest.raises(PayloadError) as caught:
        form_payload(token=None, user_id=None)
    assert "missing fields: token, user_id" in str(caught.value)
    assert FORM in str(caught.value)


def test_json_sent_as_form_hints_at_the_content_type():
    # A JSON body labelled as a form parses to no fields at all.
    body = json.dumps(FIELDS).encode()
    with pytest.raises(PayloadError, match="content type"):
        parse_payload(FORM, MultiDict(), body)


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", ""])
def test_unsupported_content_type_is_refused_naming_what_mattermost_sends(content_type):
    with pytest.raises(PayloadError) as caught:
        parse_payload(content_type, MultiDict(FIELDS), json.dumps(FIELDS).encode())
    message = str(caught.value)
    assert "unsupported content type" in message
    assert "application/json" in message and FORM in message


@pytest.mark.parametrize("body", [b"[1, 2, 3]", b'"text"', b"42", b"null", b""])
def test_json_that_is_not_an_object_is_refused(body):
    with pytest.raises(PayloadError, match="must be an object"):
        parse_payload("application/json", MultiDict(), body)


@pytest.mark.parametrize("body", [b"{not json", b'{"token": "x",}', b"\xff\xfe{}"])
def test_invalid_json_is_refused(body):
    with pytest.raises(PayloadError, match="not valid JSON"):
        parse_payload("application/json", MultiDict(), body)


def test_non_string_json_values_are_not_taken_as_fields():
    with pytest.raises(PayloadError, match="token"):
        json_payload(token={"nested": True})
    with pytest.raises(PayloadError, match="post_id"):
        json_payload(post_id=True)


def test_timestamp_that_is_not_a_number_is_refused():
    with pytest.raises(PayloadError, match="timestamp"):
        form_payload(timestamp="yesterday")


def test_oversized_field_is_refused():
    with pytest.raises(PayloadError, match="longer"):
        form_payload(text="x" * (MAX_FIELD + 1))


# -- ids in Mattermost's form, stored lengths (DESIGN 10) -----------------------------


def test_ids_the_server_makes_are_accepted():
    from tests.standin import new_id  # model.NewId's alphabet and length

    ids = {name: new_id() for name in ("post_id", "user_id", "channel_id", "team_id")}
    payload = form_payload(**ids)
    assert (payload.post_id, payload.user_id, payload.channel_id, payload.team_id) == (
        ids["post_id"],
        ids["user_id"],
        ids["channel_id"],
        ids["team_id"],
    )
    assert form_payload(post_id="ABCDEFGHIJKLMNOPQRSTUVWXYZ").post_id.isupper()  # IsValidId


@pytest.mark.parametrize("field", ["post_id", "user_id", "channel_id", "team_id"])
@pytest.mark.parametrize(
    "value",
    [
        "a" * 25,
        "a" * 27,
        "a" * 25 + "-",
        "a" * 25 + " ",
        "é" * 13,  # 26 bytes, letters: Go's IsValidId takes it, NewId never makes it
        "x" * 60_000,
    ],
)
def test_ids_not_in_mattermosts_form_are_refused_naming_the_field(field, value):
    with pytest.raises(PayloadError) as caught:
        json_payload(**{field: value})
    assert str(caught.value).startswith(field) or "longer" in str(caught.value)
    assert value not in caught.value.reason  # the log reason never carries the caller's data


def test_team_id_may_be_absent():
    assert form_payload(team_id=None).team_id == ""


def test_text_is_cut_to_the_longest_post_and_names_to_mattermosts_limits():
    long_text = "ä" * 20_000
    payload = form_payload(text=long_text, user_name="u" * 500, channel_name="c" * 500)
    assert payload.text == "ä" * MAX_TEXT == long_text[:16_383]
    assert (len(payload.user_name), len(payload.channel_name)) == (64, 64)
    assert form_payload(text="short").text == "short"


def test_unsupported_content_type_has_a_fixed_log_reason():
    with pytest.raises(PayloadError) as caught:
        parse_payload("text/x-" + "z" * 5000, MultiDict(FIELDS), b"")
    assert caught.value.reason == "unsupported content type"
    assert len(str(caught.value)) < 300


# -- exact wording (found by make mutate) --------------------------------------------------


@pytest.mark.parametrize("content_type, named", [("text/plain", "text/plain"), ("", "(none)")])
def test_an_unsupported_content_type_is_named_as_sent(content_type, named):
    with pytest.raises(PayloadError) as caught:
        parse_payload(content_type, MultiDict(FIELDS), b"")
    assert str(caught.value) == (
        f"unsupported content type {named}: Mattermost sends "
        "application/x-www-form-urlencoded or application/json"
    )


def test_one_missing_field_is_named_in_the_singular():
    with pytest.raises(PayloadError) as caught:
        form_payload(post_id=None)
    assert str(caught.value).startswith(f"missing field: post_id (body read as {FORM};")


def test_a_field_as_long_as_the_limit_is_accepted():
    assert form_payload(text="x" * MAX_FIELD).post_id == FIELDS["post_id"]  # no PayloadError
    with pytest.raises(PayloadError) as caught:
        form_payload(text="x" * (MAX_FIELD + 1))
    assert str(caught.value) == "a field is longer than any Mattermost post can be"


@pytest.mark.parametrize(
    "body, message",
    [
        (b"{not json", "the body is not valid JSON"),
        (b"[1]", "the JSON body must be an object"),
    ],
)
def test_bad_json_bodies_are_explained(body, message):
    with pytest.raises(PayloadError) as caught:
        parse_payload("application/json", MultiDict(), body)
    assert str(caught.value) == message


def test_a_timestamp_that_is_not_a_number_is_explained():
    with pytest.raises(PayloadError) as caught:
        form_payload(timestamp="yesterday")
    assert str(caught.value) == "timestamp is not a number"
