"""The host API described as OpenAPI 3.0, served at ``/api/v1/openapi.json``.

Host applications generate their clients from this document, so it is part
of the product. Every limit the API enforces is stated here, and
``bridge/views/api.py`` reads its limits from this module;
``tests/test_openapi_conformance.py`` runs schemathesis against a live bridge
so that the document and the API cannot drift apart.
"""

from __future__ import annotations

from . import MAX_BODY_BYTES
from .store import MESSAGES_PAGE_SIZE
from .uploads import ACCEPTED, EXTENSIONS, MAX_FILE_BYTES, MAX_UPLOAD_BODY
from .views import MAX_ROW_ID as MAX_MESSAGE_ID  # message ids are SQLite row ids

# Lengths count characters (Unicode code points), as JSON Schema's maxLength does.
MAX_NAME = 200
MAX_EMAIL = 320
MAX_EXTERNAL_ID = 200
MAX_TYPE = 64
# Every body the document allows fits the 1 MiB limit however the client
# escapes it: 12 bytes per character at worst ("\ud83d\ude00" for one emoji),
# so 80,000 characters of text plus every other field stays under 1 MiB.
MAX_TEXT = 80_000

# What Python's str.strip() and str.isspace() count as whitespace: the API
# refuses a name, text or type made only of these ("must not be empty").
# tests/test_openapi.py checks this list against Python itself.
WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680"
    "\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)
CONVERSATION_ID_PATTERN = "^[a-z2-7]{26}$"  # store.new_id(): lowercase base32


def _char_class(chars: str) -> str:
    r"""A regex character class body, ``\uXXXX`` escapes and ranges (ECMA-262 and Python)."""
    points = sorted(map(ord, chars))
    runs: list[list[int]] = []
    for point in points:
        if runs and point == runs[-1][1] + 1:
            runs[-1][1] = point
        else:
            runs.append([point, point])
    return "".join(
        f"\\u{low:04x}" + (f"-\\u{high:04x}" if high > low else "") for low, high in runs
    )


# The text rules as JSON Schema: no NUL anywhere (PostgreSQL, Mattermost's
# database, stores no NUL in text), and for required fields not only
# whitespace. Stated with "not" rather than one anchored pattern: validators
# that fold maxLength into the pattern (schemathesis does) would otherwise
# compile an 80,000-fold repetition for every check. Not "allOf" either:
# schemathesis then stops testing the length boundaries.
NUL_PATTERN = "\\u0000"
# An attachment's URL as bridge/attachments.py reads it: http(s) in any letter
# case, no whitespace (Python's, spelled out: ECMA's \s is another set), or empty.
_NOT_SPACE = f"[^{_char_class(WHITESPACE)}"
URL_PATTERN = f"^([hH][tT][tT][pP][sS]?://{_NOT_SPACE}/?#]+{_NOT_SPACE}]*)?$"
BLANK_PATTERN = f"^[{_char_class(WHITESPACE)}]*$"

_TEXT_RULES = (
    "Unicode text: NUL characters and unpaired surrogate escapes (\\ud800-\\udfff alone) "
    "are refused with 400."
)


def _string(max_length: int, *, required: bool, description: str = "") -> dict:
    schema: dict = {"type": "string", "maxLength": max_length}
    if required:
        schema["minLength"] = 1
        schema["not"] = {"anyOf": [{"pattern": NUL_PATTERN}, {"pattern": BLANK_PATTERN}]}
        rule = "Must contain a character other than whitespace."
    else:
        # Optional fields may be left out, null or empty: all mean "none".
        schema["nullable"] = True
        # "a string with a NUL"; a bare pattern in "not" would refuse null too.
        schema["not"] = {"type": "string", "pattern": NUL_PATTERN}
        rule = "Optional: absent, null and empty all mean none."
    schema["description"] = " ".join(part for part in (description, rule, _TEXT_RULES) if part)
    return schema


def _json(schema: dict) -> dict:
    return {"content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _each_nullable(properties: dict) -> dict:
    """The same properties, each of which may also be null (and, as text, hold no NUL)."""
    return {
        name: _no_nul(nullable) if schema.get("type") == "string" else nullable
        for name, schema in properties.items()
        for nullable in [{**schema, "nullable": True}]
    }


def _no_nul(schema: dict) -> dict:
    """The schema, refusing a string with a NUL in it (bridge/attachments.py does)."""
    return {**schema, "not": {"type": "string", "pattern": NUL_PATTERN}}


def _object(properties: dict, required: tuple[str, ...] = ()) -> dict:
    schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


# Each error status, the `code` values it carries and when.
ERRORS = {
    400: "`invalid_json`, `missing_field` or `invalid_field`: `error` names the field and the rule",
    401: "`unauthorized`: no `Authorization: Bearer <API key>` header, or an unknown key",
    404: "`not_found`: no conversation with this id in the key's environment",
    409: "`conversation_closed`: an agent closed the conversation",
    413: f"`too_large`: the request body is larger than {MAX_BODY_BYTES // 1024 // 1024} MiB",
    415: "`unsupported_media_type`: the body is not sent as `application/json`",
    503: "`unavailable`: the database is busy or full; nothing was stored or posted. "
    "Retry after `Retry-After` seconds",
    502: "`mattermost_unavailable`: Mattermost did not give the file; try again later",
}
FILE_ID_PATTERN = "^[A-Za-z0-9]{26}$"  # a Mattermost file id (model.IsValidId)
_FILE_ERRORS = {
    "400": {
        "description": "`missing_field` (no `file` part), `invalid_field` (`text`) or "
        f"`invalid_file`: empty, or not {ACCEPTED} by its content (the name does not count)",
        **_json(_ref("Error")),
    },
    "413": {
        "description": f"`file_too_large`: the file is over {MAX_FILE_BYTES} bytes (10 MB), or "
        f"`too_large`: the whole body is over {MAX_UPLOAD_BODY} bytes",
        **_json(_ref("Error")),
    },
    "415": {
        "description": "`unsupported_media_type`: the body is not multipart/form-data",
        **_json(_ref("Error")),
    },
}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds to wait before retrying",
        "schema": {"type": "integer", "minimum": 0},
    }
}
# Every route refuses a body over 1 MiB, checks the key and may find the database busy.
_EVERY_ROUTE = (401, 413, 503)


def _errors(*codes: int) -> dict:
    responses = {}
    for code in sorted({*codes, *_EVERY_ROUTE}):
        responses[str(code)] = {"description": ERRORS[code], **_json(_ref("Error"))}
        if code == 503:
            responses[str(code)]["headers"] = _RETRY_AFTER
    return responses


def _json_body(schema: dict) -> dict:
    return {
        "required": True,
        "description": f"A JSON object, at most {MAX_BODY_BYTES} bytes (1 MiB); "
        "unknown fields are ignored.",
        **_json(schema),
    }


_STATUS = {
    "type": "string",
    "enum": ["sent", "failed", "skipped"],
    "description": "`sent`; `failed` (kept, retried later; `error` says why); "
    "`skipped` (inactive environment or unmapped type; `reason` says which)",
}
# What a visitor message's 201 says about it (the text and the file routes).
_KEPT_MESSAGE = {
    "id": {"type": "integer", "minimum": 1},
    "status": _STATUS,
    "post_id": {"type": "string"},
    "error": {"type": "string"},
    "reason": {"type": "string"},
}
_ID_PARAMETER = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "The conversation id returned when it was started.",
    "schema": {"type": "string", "pattern": CONVERSATION_ID_PATTERN},
}
_FOLLOW_UP = {
    "getConversation": {
        "operationId": "getConversation",
        "parameters": {"id": "$response.body#/id"},
    },
    "listMessages": {"operationId": "listMessages", "parameters": {"id": "$response.body#/id"}},
    "addMessage": {"operationId": "addMessage", "parameters": {"id": "$response.body#/id"}},
}

SPEC = {
    "openapi": "3.0.3",
    "info": {
        "title": "Mattermost Bridge host API",
        "version": "1",
        "description": "The key selects the environment. A Mattermost failure is not the "
        "caller's error: the message is kept and its status says what happened. "
        f"Every request body is limited to {MAX_BODY_BYTES} bytes (1 MiB): larger ones get "
        '413 on every route. Errors are JSON objects `{"error", "code"}`.',
    },
    "components": {
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "An environment's API key: the configuration screen, or "
                "`flask --app app api-key ENV`.",
            }
        },
        "schemas": {
            "Error": _object(
                {
                    "error": {"type": "string", "description": "a sentence for people"},
                    "code": {"type": "string", "description": "a machine-readable code"},
                },
                ("error", "code"),
            ),
            # Mattermost's MessageAttachment (server/public/model/message_attachment.go),
            # checked by bridge/attachments.py; all of them together stay under 200,000
            # characters. A link without its text is kept: Mattermost just does not show it.
            "Attachment": {
                "type": "object",
                "additionalProperties": False,
                # Each top-level field may be null: the API reads null as absent.
                "properties": _each_nullable(
                    {
                        **{
                            name: {"type": "string", "maxLength": 8000}
                            for name in ("fallback", "pretext", "text")
                        },
                        **{
                            name: {"type": "string", "maxLength": 1000}
                            for name in ("author_name", "title", "footer")
                        },
                        "color": {
                            "type": "string",
                            "pattern": "^(good|warning|danger|#[0-9a-fA-F]{6})?$",
                        },
                        **{
                            name: {
                                "type": "string",
                                "maxLength": 2048,
                                "pattern": URL_PATTERN,
                            }
                            for name in (
                                "author_link",
                                "author_icon",
                                "title_link",
                                "image_url",
                                "thumb_url",
                                "footer_icon",
                            )
                        },
                        "ts": {"oneOf": [{"type": "string"}, {"type": "number"}]},
                        "fields": {
                            "type": "array",
                            "maxItems": 50,
                            "items": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {
                                    "title": _no_nul({"type": "string", "maxLength": 1000}),
                                    "value": {
                                        "oneOf": [
                                            _no_nul({"type": "string", "maxLength": 8000}),
                                            {"type": "integer"},
                                        ]
                                    },
                                    "short": {"type": "boolean"},
                                },
                            },
                        },
                    }
                ),
            },
            "Message": _object(
                {
                    "id": {"type": "integer", "minimum": 1, "maximum": MAX_MESSAGE_ID},
                    "direction": {"type": "string", "enum": ["visitor", "agent"]},
                    "author": {"type": "string"},
                    "text": {"type": "string"},
                    "created_at": {"type": "string", "format": "date-time"},
                    "status": {
                        "type": "string",
                        "enum": ["sending", "sent", "failed", "skipped"],
                    },
                    "files": {"type": "array", "items": _ref("File")},
                },
                ("id", "direction", "author", "text", "created_at", "status", "files"),
            ),
            "File": _object(
                {
                    "id": {
                        "type": "string",
                        "description": "Mattermost's file id; empty until the file is uploaded",
                    },
                    "name": {"type": "string"},
                    "size": {"type": "integer", "minimum": 0},
                    "mime_type": {"type": "string"},
                    "url": {
                        "type": "string",
                        "nullable": True,
                        "description": "where this API serves the file (same key); null "
                        "until Mattermost has it",
                    },
                },
                ("id", "name", "size", "mime_type", "url"),
            ),
            "Conversation": _object(
                {
                    "id": {"type": "string", "pattern": CONVERSATION_ID_PATTERN},
                    "status": {"type": "string", "enum": ["open", "closed"]},
                    "visitor": _object(
                        {"name": {"type": "string"}, "email": {"type": "string"}},
                        ("name", "email"),
                    ),
                    "external_id": {"type": "string"},
                    "root_post_id": {
                        "type": "string",
                        "description": "empty until the first message is posted",
                    },
                    "channel_id": {"type": "string"},
                    "created_at": {"type": "string", "format": "date-time"},
                    "closed_at": {"type": "string", "format": "date-time", "nullable": True},
                    "assignee": {
                        "type": "string",
                        "description": "``@username`` of the agent who claimed it with the "
                        "Claim button in Mattermost; empty while nobody has",
                    },
                },
                (
                    "id",
                    "status",
                    "visitor",
                    "external_id",
                    "root_post_id",
                    "channel_id",
                    "created_at",
                    "closed_at",
                    "assignee",
                ),
            ),
        },
    },
    "security": [{"bearer": []}],
    "paths": {
        "/api/v1/openapi.json": {
            "get": {
                "operationId": "getOpenAPI",
                "summary": "This document (no key needed)",
                "security": [],
                "responses": {
                    "200": {"description": "the OpenAPI document", **_json({"type": "object"})}
                },
            }
        },
        "/api/v1/conversations": {
            "post": {
                "operationId": "startConversation",
                "summary": "Start a conversation; its first message becomes a root post",
                "requestBody": _json_body(
                    _object(
                        {
                            "visitor": _object(
                                {
                                    "name": _string(MAX_NAME, required=True),
                                    "email": _string(MAX_EMAIL, required=False),
                                },
                                ("name",),
                            ),
                            "text": _string(MAX_TEXT, required=True),
                            "external_id": _string(
                                MAX_EXTERNAL_ID,
                                required=False,
                                description="The host's own reference for the conversation.",
                            ),
                        },
                        ("visitor", "text"),
                    )
                ),
                "responses": {
                    "201": {
                        "description": "accepted and kept",
                        **_json(
                            _object(
                                {
                                    "id": {"type": "string", "pattern": CONVERSATION_ID_PATTERN},
                                    "status": _STATUS,
                                    "root_post_id": {"type": "string"},
                                    "channel_id": {"type": "string"},
                                    "error": {"type": "string"},
                                    "reason": {"type": "string"},
                                },
                                ("id", "status", "root_post_id", "channel_id"),
                            )
                        ),
                        "links": _FOLLOW_UP,
                    },
                    **_errors(400, 415),
                },
            }
        },
        "/api/v1/conversations/{id}": {
            "parameters": [_ID_PARAMETER],
            "get": {
                "operationId": "getConversation",
                "summary": "The conversation: status open/closed, root post, channel",
                "responses": {
                    "200": {"description": "the conversation", **_json(_ref("Conversation"))},
                    **_errors(404),
                },
            },
        },
        "/api/v1/conversations/{id}/messages": {
            "parameters": [_ID_PARAMETER],
            "get": {
                "operationId": "listMessages",
                "summary": f"Messages oldest first, {MESSAGES_PAGE_SIZE} a page; "
                "page with after=<last id> until the list is empty",
                "parameters": [
                    {
                        "name": "after",
                        "in": "query",
                        "description": "the last message id already seen",
                        "schema": {
                            "type": "integer",
                            "minimum": 0,
                            "maximum": MAX_MESSAGE_ID,
                            "default": 0,
                        },
                    }
                ],
                "responses": {
                    "200": {
                        "description": "a page",
                        **_json(
                            _object(
                                {
                                    "messages": {
                                        "type": "array",
                                        "maxItems": MESSAGES_PAGE_SIZE,
                                        "items": _ref("Message"),
                                    }
                                },
                                ("messages",),
                            )
                        ),
                    },
                    **_errors(400, 404),
                },
            },
            "post": {
                "operationId": "addMessage",
                "summary": "A visitor's next message; becomes a reply in the thread",
                "requestBody": _json_body(
                    _object({"text": _string(MAX_TEXT, required=True)}, ("text",))
                ),
                "responses": {
                    "201": {
                        "description": "accepted and kept",
                        **_json(_object(_KEPT_MESSAGE, ("id", "status", "post_id"))),
                    },
                    **_errors(400, 404, 409, 415),
                },
            },
        },
        "/api/v1/conversations/{id}/files": {
            "parameters": [_ID_PARAMETER],
            "post": {
                "operationId": "addFile",
                "summary": "A visitor's file (image or PDF, at most 10 MB), with an optional "
                "text; uploaded to Mattermost and attached to a reply in the thread",
                "requestBody": {
                    "required": True,
                    "description": f"multipart/form-data, at most {MAX_UPLOAD_BODY} bytes in "
                    f"all. The type is judged by the content: {ACCEPTED}.",
                    "content": {
                        "multipart/form-data": {
                            "schema": _object(
                                {
                                    "file": {"type": "string", "format": "binary"},
                                    # No "not" here: schemathesis cannot judge a binary
                                    # part against one. The rules are the same as for JSON.
                                    "text": {
                                        "type": "string",
                                        "maxLength": MAX_TEXT,
                                        "pattern": "^[^\\u0000]*$",
                                        "description": "Optional. " + _TEXT_RULES,
                                    },
                                },
                                ("file",),
                            ),
                            # What the file must be, by its content (its declared type
                            # and name do not count).
                            "encoding": {"file": {"contentType": ", ".join(EXTENSIONS)}},
                        }
                    },
                },
                "responses": {
                    "201": {
                        "description": "accepted and kept (a failed upload is retried with "
                        "the message)",
                        **_json(
                            _object(
                                {
                                    **_KEPT_MESSAGE,
                                    "files": {"type": "array", "items": _ref("File")},
                                },
                                ("id", "status", "post_id", "files"),
                            )
                        ),
                    },
                    **_errors(404, 409),
                    **_FILE_ERRORS,
                },
            },
        },
        "/api/v1/conversations/{id}/files/{file_id}": {
            "parameters": [
                _ID_PARAMETER,
                {
                    "name": "file_id",
                    "in": "path",
                    "required": True,
                    "description": "A file id from a message's `files`.",
                    "schema": {"type": "string", "pattern": FILE_ID_PATTERN},
                },
            ],
            "get": {
                "operationId": "getFile",
                "summary": "A file of this conversation, as an attachment; any other id is 404",
                "responses": {
                    "200": {
                        "description": "the file's bytes (Content-Disposition: attachment)",
                        "content": {
                            "application/octet-stream": {
                                "schema": {"type": "string", "format": "binary"}
                            },
                            **{
                                mime: {"schema": {"type": "string", "format": "binary"}}
                                for mime in EXTENSIONS
                            },
                        },
                    },
                    **_errors(404, 502),
                },
            },
        },
        "/api/v1/notifications": {
            "post": {
                "operationId": "notify",
                "summary": "A typed notification to the channel mapped to its type",
                "requestBody": _json_body(
                    _object(
                        {
                            "type": _string(
                                MAX_TYPE,
                                required=True,
                                description="The notification type, e.g. booking.created.",
                            ),
                            "text": _string(MAX_TEXT, required=True),
                            "attachments": {
                                "type": "array",
                                "nullable": True,
                                "maxItems": 20,
                                "description": "Slack-compatible message attachments "
                                "(Mattermost's MessageAttachment); a bad one is a 400 naming "
                                "the field, e.g. attachments[0].color. Optional: absent, null "
                                "and empty all mean none.",
                                "items": {"$ref": "#/components/schemas/Attachment"},
                            },
                        },
                        ("type", "text"),
                    )
                ),
                "responses": {
                    "201": {
                        "description": "sent, failed (kept, retried) or skipped",
                        **_json(
                            _object(
                                {
                                    "status": _STATUS,
                                    "post_id": {"type": "string"},
                                    "channel_id": {"type": "string"},
                                    "reason": {"type": "string"},
                                    "error": {"type": "string"},
                                },
                                ("status",),
                            )
                        ),
                    },
                    **_errors(400, 415),
                },
            }
        },
    },
}
