"""One place that turns errors into responses: JSON, an HTMX fragment or a page."""

from __future__ import annotations

import logging
import sqlite3

from flask import Flask, jsonify, render_template, request
from werkzeug.exceptions import HTTPException, InternalServerError, ServiceUnavailable

from . import htmx
from .uploads import MAX_UPLOAD_BODY

log = logging.getLogger(__name__)

CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    503: "unavailable",
}
# SQLite's answers when another process holds the write lock (a backup, a
# shell) past the busy timeout, or when the disk is full: the caller should
# try again later, and nothing was written (the transaction rolled back).
DATABASE_UNAVAILABLE = {"SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_FULL"}
UNAVAILABLE_RETRY_AFTER = 5  # seconds; about one busy timeout


class ApiError(Exception):
    """A JSON API error with a status, a machine code and a sentence for people."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def wants_json() -> bool:
    """JSON for the host API and the webhook route, and for clients that ask for it."""
    # By path too: a 404 or 405 is raised before a blueprint is chosen.
    if request.blueprint in ("api", "hooks") or request.path.startswith(("/api/", "/hooks/")):
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json" and not htmx


def json_error(status: int, code: str, message: str):
    return jsonify({"error": message, "code": code}), status


def handle_api_error(error: ApiError):
    return json_error(error.status, error.code, error.message)


def handle_http_exception(error: HTTPException):
    status = error.code or 500
    message = error.description or error.name
    if status == 413:
        message = "request body is larger than 1 MiB"
        if request.max_content_length == MAX_UPLOAD_BODY:  # one of the two upload routes
            message = "request body is larger than a 10 MB file and its form allow"
    # The exception's own headers (Allow on a 405, as RFC 9110 requires;
    # Retry-After on a 503) survive; only its HTML content type is ours to replace.
    headers = [(k, v) for k, v in error.get_headers() if k.lower() != "content-type"]
    if wants_json():
        body, status = json_error(status, CODES.get(status, "error"), message)
        return body, status, headers
    if request.blueprint == "chat" or request.path.startswith("/chat/"):
        # Visitors see the chat's own page, never the admin header; by path too,
        # for an address no chat route matches (a mistyped link).
        env = (request.view_args or {}).get("env") or _chat_env_in_path()
        return render_template("chat/error.html", message=message, env=env), status, headers
    template = "errors/_error.html" if htmx else "errors/error.html"
    response = render_template(template, status=status, title=error.name, message=message)
    return response, status, headers


def _chat_env_in_path() -> str | None:
    """``test`` or ``production`` when the path names it (``/chat/<env>/...``), else None."""
    env = request.path.split("/")[2]
    return env if env in ("test", "production") else None


class DatabaseUnavailable(ServiceUnavailable):
    """The database is locked by another process or the disk is full."""

    def __init__(self, error: sqlite3.Error):
        full = _sqlite_error_name(error) == "SQLITE_FULL"
        super().__init__(
            "The bridge's database is full: free disk space on the server, then try again."
            if full
            else "The bridge's database is busy (locked by another process). Try again shortly.",
            retry_after=UNAVAILABLE_RETRY_AFTER,
        )


def database_unavailable(error: BaseException) -> bool:
    """True for a locked, busy or full database; other database errors are bugs."""
    return (
        isinstance(error, sqlite3.OperationalError)
        and _sqlite_error_name(error) in DATABASE_UNAVAILABLE
    )


def _sqlite_error_name(error: sqlite3.Error) -> str:
    # Extended codes (SQLITE_BUSY_SNAPSHOT, ...) name their primary code first.
    name = getattr(error, "sqlite_errorname", "") or ""
    return "_".join(name.split("_")[:2])


def handle_unexpected(error: Exception):
    if database_unavailable(error):
        # Not a bug: logged as a warning, answered 503 with Retry-After.
        log.warning("database unavailable on %s %s: %s", request.method, request.path, error)
        return handle_http_exception(DatabaseUnavailable(error))
    # Log the traceback for the operator; show nothing internal to the caller.
    log.exception("unhandled error on %s %s", request.method, request.path)
    message = "Something went wrong on our side."
    if isinstance(error, sqlite3.OperationalError) and "no such table" in str(error):
        message = "The database is not initialised: run 'flask --app app init'."
    return handle_http_exception(InternalServerError(message))


def init_app(app: Flask) -> None:
    app.register_error_handler(ApiError, handle_api_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(Exception, handle_unexpected)

    @app.after_request
    def vary_on_htmx(response):
        if "Vary" in response.headers:
            response.vary.add("HX-Request")
        else:  # the usual case, without parsing a header set
            response.headers["Vary"] = "HX-Request"
        return response
