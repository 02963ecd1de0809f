"""Serving a conversation's file from Mattermost, with the bot's credentials.

Only a file recorded for that conversation is served (any other id is a
404, whether or not Mattermost has it), as an attachment, never inline, with
``nosniff``: an agent may attach anything, and the bridge's own origin must
never render it. The bytes stream through in 64 KiB pieces; every read has
the client's (connect, read) timeout.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NoReturn
from urllib.parse import quote

from flask import Response, abort, current_app

from .. import mattermost as mm
from ..integration import logged_client
from ..store import Store
from ..uploads import EXTENSIONS

CHUNK = 64 * 1024


def content_disposition(name: str) -> str:
    """``attachment`` with an ASCII fallback name and the exact one (RFC 6266 / 5987)."""
    fallback = (
        "".join(
            ch if ch.isascii() and ch.isprintable() and ch not in '"\\;' else "_" for ch in name
        )
        or "file"
    )
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def file_response(
    store: Store,
    env: str,
    conversation_id: str,
    file_id: str,
    refuse: Callable[[int, str], NoReturn] = abort,
) -> Response:
    """The file's bytes from Mattermost, or 404 when it is not this conversation's.

    :param refuse: how the view says no (a page, or the API's JSON error).
    """
    row = store.conversation_file(conversation_id, file_id)
    if row is None:
        refuse(404, "No such file in this conversation.")
    settings = store.environment(env)
    client = logged_client(
        store,
        settings,
        session=current_app.config.get("MATTERMOST_SESSION"),
        message={"conversation_id": conversation_id, "id": row["message_id"]},
    )
    try:
        upstream = client.open_file(file_id)
    except mm.NotFound:
        refuse(404, "The file is gone from Mattermost.")
    except mm.MattermostError:
        refuse(502, "Mattermost did not give the file; try again in a moment.")

    def pieces():
        try:
            yield from upstream.iter_content(CHUNK)
        finally:
            upstream.close()

    # Images and PDFs keep their type; anything else is plain bytes to save.
    mime_type = row["mime_type"] if row["mime_type"] in EXTENSIONS else "application/octet-stream"
    headers = {
        "Content-Disposition": content_disposition(row["name"]),
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "private, no-store",
    }
    length = upstream.headers.get("Content-Length")
    if length and length.isdigit():
        headers["Content-Length"] = length
    return Response(pieces(), 200, mimetype=mime_type, headers=headers)
