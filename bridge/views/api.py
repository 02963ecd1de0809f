"""The host API: JSON, ``Authorization: Bearer <environment API key>``.

A Mattermost failure is not the caller's error: the message is accepted,
kept, and its ``status`` says what happened (201 either way).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, jsonify, request, url_for

from ..attachments import AttachmentError, validate_attachments
from ..db import get_sender, get_store
from ..errors import ApiError
from ..openapi import (
    MAX_EMAIL,
    MAX_EXTERNAL_ID,
    MAX_MESSAGE_ID,
    MAX_NAME,
    MAX_TEXT,
    MAX_TYPE,
    SPEC,
)
from ..sender import ConversationClosed
from ..store import NotFound
from ..text import iso_time
from ..uploads import MAX_FILE_BYTES, UploadRefused, check_file
from . import parse_id
from .downloads import file_response

bp = Blueprint("api", __name__, url_prefix="/api/v1")


@bp.before_request
def authenticate():
    if request.endpoint == "api.openapi":
        return  # the description is public; it holds no data
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise ApiError(401, "unauthorized", "send 'Authorization: Bearer <API key>'")
    # Keys are looked up by their SHA-256: no timing hint about the key itself.
    settings = get_store().environment_for_api_key(key.strip())
    if settings is None:
        raise ApiError(
            401,
            "unauthorized",
            "unknown API key: create one on the configuration screen "
            "or with 'flask --app app api-key ENV'",
        )
    g.env = settings["name"]
    g.settings = settings


# -- request parsing ------------------------------------------------------------------


def _body() -> dict[str, Any]:
    if not request.is_json:
        raise ApiError(
            415, "unsupported_media_type", "send a JSON body (Content-Type: application/json)"
        )
    try:
        body = request.get_json(silent=True)
    except RecursionError:  # json's decoder recurses once per level of nesting
        raise ApiError(400, "invalid_json", "the JSON body is nested too deeply") from None
    if body is None:
        raise ApiError(400, "invalid_json", "the body is not valid JSON")
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "the body must be a JSON object")
    return body


def _text(body: dict, name: str, *, limit: int, required: bool = True, where: str = "") -> str:
    label = f"{where}{name}"
    value = body.get(name)
    if value is None:
        if required:
            raise ApiError(400, "missing_field", f"'{label}' is required")
        return ""
    if not isinstance(value, str):
        raise ApiError(400, "invalid_field", f"'{label}' must be a string")
    if required and not value.strip():
        raise ApiError(400, "invalid_field", f"'{label}' must not be empty")
    if len(value) > limit:
        raise ApiError(400, "invalid_field", f"'{label}' is longer than {limit} characters")
    if "\x00" in value:
        raise ApiError(400, "invalid_field", f"'{label}' contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # JSON can escape half of a surrogate pair ("\ud800"); no database or
        # Mattermost can store that, so it is the caller's error, not a 500.
        raise ApiError(
            400, "invalid_field", f"'{label}' contains an unpaired surrogate (not valid Unicode)"
        ) from None
    return value


def _conversation(conversation_id: str) -> dict[str, Any]:
    try:
        return get_store().conversation(conversation_id, env=g.env)
    except NotFound:
        raise _no_such_conversation(conversation_id) from None


def _no_such_conversation(conversation_id: str) -> ApiError:
    return ApiError(404, "not_found", f"no conversation {conversation_id!r} in this environment")


# -- responses --------------------------------------------------------------------------


def _delivery(message: dict[str, Any]) -> dict[str, Any]:
    """``status`` plus ``error`` or ``reason`` when there is one."""
    result: dict[str, Any] = {"status": message["status"]}
    if message["status"] == "failed":
        result["error"] = message["error"]
    if message["status"] == "skipped":
        result["reason"] = message["reason"]
    return result


def _conversation_json(conversation: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": conversation["id"],
        "status": conversation["status"],
        "visitor": {"name": conversation["visitor_name"], "email": conversation["visitor_email"]},
        "external_id": conversation["external_id"],
        "root_post_id": conversation["root_post_id"],
        "channel_id": conversation["channel_id"],
        "created_at": iso_time(conversation["created_at"]),
        "closed_at": iso_time(conversation["closed_at"]),
        "assignee": conversation["assignee"],
    }


# -- routes -------------------------------------------------------------------------------


@bp.get("/openapi.json")
def openapi():
    return jsonify(SPEC)


@bp.post("/conversations")
def create_conversation():
    body = _body()
    visitor = body.get("visitor")
    if visitor is None:
        raise ApiError(
            400, "missing_field", '\'visitor\' is required: {"name": ..., "email"?: ...}'
        )
    if not isinstance(visitor, dict):
        raise ApiError(400, "invalid_field", "'visitor' must be an object with a 'name'")
    name = _text(visitor, "name", limit=MAX_NAME, where="visitor.")
    email = _text(visitor, "email", limit=MAX_EMAIL, required=False, where="visitor.")
    text = _text(body, "text", limit=MAX_TEXT)
    external_id = _text(body, "external_id", limit=MAX_EXTERNAL_ID, required=False)
    conversation, message = get_sender().start_conversation(
        g.env, name.strip(), text, visitor_email=email.strip(), external_id=external_id
    )
    payload = {
        "id": conversation["id"],
        "root_post_id": conversation["root_post_id"],
        "channel_id": conversation["channel_id"],
        **_delivery(message),
    }
    return jsonify(payload), 201


@bp.post("/conversations/<conversation_id>/messages")
def add_message(conversation_id: str):
    body = _body()
    text = _text(body, "text", limit=MAX_TEXT)
    message = _add_visitor_message(conversation_id, text)
    return jsonify({"id": message["id"], "post_id": message["post_id"], **_delivery(message)}), 201


def _add_visitor_message(conversation_id: str, text: str, files=()) -> dict:
    """The visitor's next message, sent; a missing or closed conversation as its API error."""
    try:
        return get_sender().add_visitor_message(
            g.env, conversation_id, text, settings=g.settings, files=files
        )
    except NotFound:
        raise _no_such_conversation(conversation_id) from None
    except ConversationClosed:
        raise ApiError(
            409, "conversation_closed", "the conversation was closed by an agent"
        ) from None


@bp.get("/conversations/<conversation_id>")
def get_conversation(conversation_id: str):
    return jsonify(_conversation_json(_conversation(conversation_id)))


@bp.get("/conversations/<conversation_id>/messages")
def list_messages(conversation_id: str):
    _conversation(conversation_id)
    after = parse_id(request.args.get("after", "0"))
    if after is None:
        raise ApiError(
            400,
            "invalid_field",
            f"'after' must be a message id (a whole number from 0 to {MAX_MESSAGE_ID})",
        )
    store = get_store()
    rows = store.with_files(store.messages_after(conversation_id, after, visitor_view=True))
    messages = [
        {
            "id": row["id"],
            "direction": row["direction"],
            "author": row["author"],
            "text": row["text"],
            "created_at": iso_time(row["created_at"]),
            "status": row["status"],
            "files": _files_json(conversation_id, row["files"]),
        }
        for row in rows
    ]
    return jsonify({"messages": messages})


@bp.post("/conversations/<conversation_id>/files")
def add_file(conversation_id: str):
    """A visitor's file (multipart ``file``) with an optional ``text``, posted like a message."""
    if request.mimetype != "multipart/form-data":
        raise ApiError(
            415,
            "unsupported_media_type",
            "send multipart/form-data with a 'file' part and an optional 'text' part",
        )
    upload = request.files.get("file")
    if upload is None:
        raise ApiError(400, "missing_field", "'file' is required (a multipart file part)")
    text = _text(dict(request.form), "text", limit=MAX_TEXT, required=False)
    content = upload.read(MAX_FILE_BYTES + 1)
    try:
        name, mime_type = check_file(upload.filename or "", content)
    except UploadRefused as exc:
        status, code = (
            (413, "file_too_large") if len(content) > MAX_FILE_BYTES else (400, "invalid_file")
        )
        raise ApiError(status, code, str(exc)) from None
    message = _add_visitor_message(conversation_id, text, files=[(name, mime_type, content)])
    files = get_store().files_of_messages([message["id"]]).get(message["id"], [])
    payload = {
        "id": message["id"],
        "post_id": message["post_id"],
        **_delivery(message),
        "files": _files_json(conversation_id, files),
    }
    return jsonify(payload), 201


@bp.get("/conversations/<conversation_id>/files/<file_id>")
def get_file(conversation_id: str, file_id: str):
    """A file of the conversation, from Mattermost; another conversation's is a 404."""
    _conversation(conversation_id)

    def refuse(status: int, message: str):
        raise ApiError(status, "not_found" if status == 404 else "mattermost_unavailable", message)

    return file_response(get_store(), g.env, conversation_id, file_id, refuse)


def _files_json(conversation_id: str, files: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each file as the API shows it; ``url`` is null until Mattermost has it."""
    return [
        {
            "id": row["file_id"],
            "name": row["name"],
            "size": row["size"],
            "mime_type": row["mime_type"],
            "url": url_for("api.get_file", conversation_id=conversation_id, file_id=row["file_id"])
            if row["file_id"]
            else None,
        }
        for row in files
    ]


@bp.post("/notifications")
def notify():
    body = _body()
    kind = _text(body, "type", limit=MAX_TYPE)
    text = _text(body, "text", limit=MAX_TEXT)
    attachments = None
    if body.get("attachments") is not None:
        try:
            attachments = validate_attachments(body["attachments"])
        except AttachmentError as exc:
            raise ApiError(400, "invalid_field", str(exc)) from None
    message = get_sender().notify(g.env, kind.strip(), text, attachments)
    return jsonify(notification_json(message)), 201


def notification_json(message: dict[str, Any]) -> dict[str, Any]:
    """A notification's answer: its status, and the post and channel once known."""
    payload = _delivery(message)
    if message["post_id"]:
        payload["post_id"] = message["post_id"]
    if message["channel_id"]:
        payload["channel_id"] = message["channel_id"]
    return payload
