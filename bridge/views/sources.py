"""``POST /hooks/in/<env>/<source>``: other systems' webhooks, translated into notifications.

Exempt from CSRF by name: the source's secret (token or HMAC signature)
authenticates the call, and is checked before anything is written.
"""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from ..db import get_sender
from ..errors import ApiError
from ..store import NotFound
from ..translate import Call, CallError, Translator
from .api import notification_json

bp = Blueprint("source_hooks", __name__)


@bp.post("/hooks/in/<any(test, production):env>/<source>")
def receive(env: str, source: str):
    call = Call(
        body=_body(),
        content_type=request.content_type or "",
        query_token=request.args.get("token"),
        authorization=request.headers.get("Authorization"),
        headers=request.headers,
    )
    translator = Translator(get_sender(), describe=notification_json)
    try:
        result = translator.receive(env, source, call)
    except NotFound:
        raise ApiError(404, "not_found", f"no source {source!r} in the {env} environment") from None
    except CallError as exc:
        response = jsonify({"error": exc.message, "code": exc.code})
        if exc.status == 503:
            response.headers["Retry-After"] = "60"  # too many payloads kept: come back later
        return response, exc.status
    return jsonify(result.body), result.http_status


def _body() -> bytes:
    """The raw body (the HMAC is over these bytes), at most MAX_CONTENT_LENGTH.

    A Content-Length over the limit is refused before the view; a chunked body
    is cut at the limit by Werkzeug without an error, so one that fills it
    is refused here rather than parsed truncated.
    """
    body = request.get_data(cache=False)
    if request.content_length is None and len(body) >= current_app.config["MAX_CONTENT_LENGTH"]:
        raise RequestEntityTooLarge()
    return body
