"""The host API described as OpenAPI 3.0, served at ``/api/v1/openapi.json``."""

from __future__ import annotations

_ERROR = {"$ref": "#/components/schemas/Error"}
_STATUS = {"type": "string", "enum": ["sent", "failed", "skipped"]}


def _json(schema: dict) -> dict:
    return {"content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict:
    return {str(code): {"description": "error", **_json(_ERROR)} for code in codes}


SPEC = {
    "openapi": "3.0.3",
    "info": {
        "title": "Mattermost Bridge host API",
        "version": "1",
        "description": "The key selects the environment. A Mattermost failure is not the "
        "caller's error: the message is kept and its status says what happened.",
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error", "code"],
                "properties": {"error": {"type": "string"}, "code": {"type": "string"}},
            },
            # Mattermost's MessageAttachment (server/public/model/message_attachment.go),
            # checked by bridge/attachments.py; title_link needs title, author_link needs
            # author_name, and all of them together stay under 200,000 characters.
            "Attachment": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
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
                        "pattern": "^(good|warning|danger|#[0-9a-fA-F]{6})$",
                    },
                    **{
                        name: {
                            "type": "string",
                            "maxLength": 2048,
                            "pattern": "^https?://[^\\s/?#]+[^\\s]*$",
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
                                "title": {"type": "string", "maxLength": 1000},
                                "value": {
                                    "oneOf": [
                                        {"type": "string", "maxLength": 8000},
                                        {"type": "integer"},
                                    ]
                                },
                                "short": {"type": "boolean"},
                            },
                        },
                    },
                },
            },
            "Message": {
                "type": "object",
                "properties": {
                    "id": {"type": "integer"},
                    "direction": {"type": "string", "enum": ["visitor", "agent"]},
                    "author": {"type": "string"},
                    "text": {"type": "string"},
                    "created_at": {"type": "string", "format": "date-time"},
                    "status": {"type": "string"},
                },
            },
        },
    },
    "security": [{"bearer": []}],
    "paths": {
        "/api/v1/conversations": {
            "post": {
                "summary": "Start a conversation; its first message becomes a root post",
                "requestBody": {
                    "required": True,
                    **_json(
                        {
                            "type": "object",
                            "required": ["visitor", "text"],
                            "properties": {
                                "visitor": {
                                    "type": "object",
                                    "required": ["name"],
                                    "properties": {
                                        "name": {
                                            "type": "string",
                                            "minLength": 1,
                                            "maxLength": 200,
                                        },
                                        "email": {"type": "string", "maxLength": 320},
                                    },
                                },
                                "text": {"type": "string", "minLength": 1, "maxLength": 100000},
                                "external_id": {"type": "string", "maxLength": 200},
                            },
                        }
                    ),
                },
                "responses": {
                    "201": {
                        "description": "accepted and kept",
                        **_json(
                            {
                                "type": "object",
                                "properties": {
                                    "id": {"type": "string"},
                                    "status": _STATUS,
                                    "root_post_id": {"type": "string"},
                                    "channel_id": {"type": "string"},
                                    "error": {"type": "string"},
                                    "reason": {"type": "string"},
                                },
                            }
                        ),
                    },
                    **_errors(400, 401, 413, 415),
                },
            }
        },
        "/api/v1/conversations/{id}": {
            "parameters": [
                {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "get": {
                "summary": "The conversation: status open/closed, root post, channel",
                "responses": {"200": {"description": "the conversation"}, **_errors(401, 404)},
            },
        },
        "/api/v1/conversations/{id}/messages": {
            "parameters": [
                {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "get": {
                "summary": "Messages oldest first, 100 a page; page with after=<last id>",
                "parameters": [
                    {"name": "after", "in": "query", "schema": {"type": "integer", "minimum": 0}}
                ],
                "responses": {
                    "200": {
                        "description": "a page",
                        **_json(
                            {
                                "type": "object",
                                "properties": {
                                    "messages": {
                                        "type": "array",
                                        "items": {"$ref": "#/components/schemas/Message"},
                                    }
                                },
                            }
                        ),
                    },
                    **_errors(400, 401, 404),
                },
            },
            "post": {
                "summary": "A visitor's next message; becomes a reply in the thread",
                "requestBody": {
                    "required": True,
                    **_json(
                        {
                            "type": "object",
                            "required": ["text"],
                            "properties": {
                                "text": {"type": "string", "minLength": 1, "maxLength": 100000}
                            },
                        }
                    ),
                },
                "responses": {
                    "201": {
                        "description": "accepted and kept",
                        **_json(
                            {
                                "type": "object",
                                "properties": {
                                    "id": {"type": "integer"},
                                    "status": _STATUS,
                                    "post_id": {"type": "string"},
                                    "error": {"type": "string"},
                                },
                            }
                        ),
                    },
                    **_errors(400, 401, 404, 409, 413, 415),
                },
            },
        },
        "/api/v1/notifications": {
            "post": {
                "summary": "A typed notification to the channel mapped to its type",
                "requestBody": {
                    "required": True,
                    **_json(
                        {
                            "type": "object",
                            "required": ["type", "text"],
                            "properties": {
                                "type": {"type": "string", "minLength": 1, "maxLength": 64},
                                "text": {"type": "string", "minLength": 1, "maxLength": 100000},
                                "attachments": {
                                    "type": "array",
                                    "maxItems": 20,
                                    "items": {"$ref": "#/components/schemas/Attachment"},
                                },
                            },
                        }
                    ),
                },
                "responses": {
                    "201": {
                        "description": "sent, failed (kept, retried) or skipped",
                        **_json(
                            {
                                "type": "object",
                                "properties": {
                                    "status": _STATUS,
                                    "post_id": {"type": "string"},
                                    "channel_id": {"type": "string"},
                                    "reason": {"type": "string"},
                                    "error": {"type": "string"},
                                },
                            }
                        ),
                    },
                    **_errors(400, 401, 413, 415),
                },
            }
        },
    },
}
