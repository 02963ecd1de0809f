"""Request bodies over the limit (1 MiB) get 413 on every route, sized or chunked.

The two upload routes (a file on the chat page, ``POST /api/v1/conversations/<id>/files``)
allow a 10 MB file plus the form around it instead.

A body with a ``Content-Length`` is refused before any view runs. A chunked
body (``Transfer-Encoding: chunked``, no length) is read here, up to one byte
past the limit, and handed on as an ordinary sized body: Werkzeug would
otherwise stop reading it silently at the limit (a cut JSON body read as
"invalid JSON", 400) or not at all on routes that ignore the body.
"""

from __future__ import annotations

import io
import re

from flask import Flask, request
from werkzeug.exceptions import RequestEntityTooLarge

from .uploads import MAX_UPLOAD_BODY

TOO_LARGE = "bridge.body_too_large"
# The two routes that take a file (10 MB and the form around it); every other
# route keeps the 1 MiB limit.
UPLOAD_ROUTES = re.compile(
    r"/chat/(?:test|production)/[^/]+/messages|/api/v1/conversations/[^/]+/files"
)


def limit_for(environ, default: int) -> int:
    """The body limit of the request's route: larger for a file upload, else ``default``."""
    if default is None:
        return default
    is_upload = environ.get("REQUEST_METHOD") == "POST" and UPLOAD_ROUTES.fullmatch(
        environ.get("PATH_INFO", "")
    )
    return max(default, MAX_UPLOAD_BODY) if is_upload else default


class ChunkedBodyLimit:
    """WSGI middleware: buffer a chunked body of at most ``limit`` bytes, flag a bigger one."""

    def __init__(self, wsgi_app, limit: int):
        self.wsgi_app = wsgi_app
        self.limit = limit

    def __call__(self, environ, start_response):
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        # The server sets wsgi.input_terminated when it ends a chunked body itself
        # (gunicorn, Werkzeug's server): only then is reading to the end safe.
        if chunked and not environ.get("CONTENT_LENGTH") and environ.get("wsgi.input_terminated"):
            limit = limit_for(environ, self.limit)
            body = read_at_most(environ["wsgi.input"], limit + 1)
            if len(body) > limit:
                environ[TOO_LARGE] = True
                body = b""  # the rest is left unread; the server drops or drains it
            # From here on it is an ordinary sized body (Werkzeug ignores a
            # Content-Length beside "Transfer-Encoding: chunked").
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
            del environ["wsgi.input_terminated"], environ["HTTP_TRANSFER_ENCODING"]
        return self.wsgi_app(environ, start_response)


def read_at_most(stream, size: int) -> bytes:
    """Up to ``size`` bytes: a dechunking stream may return one chunk per read."""
    parts, total = [], 0
    while total < size:
        data = stream.read(size - total)
        if not data:
            break
        parts.append(data)
        total += len(data)
    return b"".join(parts)


def refuse_large_bodies() -> None:
    """Before any view: 413 for a body over the limit, with or without a length."""
    request.max_content_length = limit_for(request.environ, request.max_content_length)
    length = request.content_length
    too_large = length is not None and length > request.max_content_length
    if too_large or request.environ.get(TOO_LARGE):
        raise RequestEntityTooLarge()


def init_app(app: Flask) -> None:
    app.wsgi_app = ChunkedBodyLimit(app.wsgi_app, app.config["MAX_CONTENT_LENGTH"])
    app.before_request(refuse_large_bodies)
