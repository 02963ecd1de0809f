"""Request bodies over the limit (1 MiB) get 413 on every route, sized or chunked.

A body with a ``Content-Length`` is refused before any view runs. A chunked
body (``Transfer-Encoding: chunked``, no length) is read here, up to one byte
past the limit, and handed on as an ordinary sized body: Werkzeug would
otherwise stop reading it silently at the limit (a cut JSON body read as
"invalid JSON", 400) or not at all on routes that ignore the body.
"""

from __future__ import annotations

import io

from flask import Flask, request
from werkzeug.exceptions import RequestEntityTooLarge

TOO_LARGE = "bridge.body_too_large"


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
            body = read_at_most(environ["wsgi.input"], self.limit + 1)
            if len(body) > self.limit:
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
    length = request.content_length
    too_large = length is not None and length > request.max_content_length
    if too_large or request.environ.get(TOO_LARGE):
        raise RequestEntityTooLarge()


def init_app(app: Flask) -> None:
    app.wsgi_app = ChunkedBodyLimit(app.wsgi_app, app.config["MAX_CONTENT_LENGTH"])
    app.before_request(refuse_large_bodies)
