"""Security headers on every response: Content-Security-Policy, framing, sniffing.

Admin pages load only the bridge's own files (``default-src 'self'``; no
inline script or style anywhere, see static/bridge.js) and cannot be framed.
The chat page is made to be embedded: only by the origins listed in
``BRIDGE_CHAT_ORIGINS`` (spaces or commas between them), by any site when
that is empty.
"""

from __future__ import annotations

import re

from flask import Flask, current_app, request

# Shared by every page; frame-ancestors is added per page.
BASE_POLICY = "default-src 'self'; base-uri 'none'; form-action 'self'; object-src 'none'"
# A CSP host-source with a scheme: https://chat.example.com, http://localhost:3000,
# https://*.example.com. Anything else (a path, a ';') would break or widen the header.
ORIGIN = re.compile(r"https?://(\*\.)?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*(:(\d{1,5}|\*))?", re.ASCII)


def parse_chat_origins(value: str) -> str:
    """The frame-ancestors sources for the chat page; ``*`` when none are listed.

    :raises ValueError: naming the entry that is not an origin.
    """
    origins = []
    for entry in re.split(r"[\s,]+", value.strip()):
        if not entry:
            continue
        origin = entry.rstrip("/")
        if origin != "'self'" and not ORIGIN.fullmatch(origin):
            raise ValueError(
                f"BRIDGE_CHAT_ORIGINS: {entry!r} is not an origin like https://www.example.com"
            )
        origins.append(origin)
    return " ".join(dict.fromkeys(origins)) or "*"


COMMON_HEADERS = (("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "same-origin"))
ADMIN_HEADERS = (
    *COMMON_HEADERS,
    ("X-Frame-Options", "DENY"),
    ("Content-Security-Policy", f"{BASE_POLICY}; frame-ancestors 'none'"),
)


def add_security_headers(response):
    """CSP on every response; admin pages (everything but the chat) cannot be framed.

    A header the view set itself is kept. One pass over the response's
    headers: this runs on every webhook call too.
    """
    if request.blueprint == "chat" or request.path.startswith("/chat/"):
        # By path too: a mistyped chat link's error page shows inside the site's frame.
        policy = current_app.config["CHAT_CONTENT_SECURITY_POLICY"]
        wanted = (*COMMON_HEADERS, ("Content-Security-Policy", policy))
    else:
        wanted = ADMIN_HEADERS
    present = {key.lower() for key, _ in response.headers}
    response.headers.extend((key, value) for key, value in wanted if key.lower() not in present)
    return response


def init_app(app: Flask) -> None:
    app.config["CHAT_FRAME_ANCESTORS"] = parse_chat_origins(app.config["CHAT_ORIGINS"])
    app.config["CHAT_CONTENT_SECURITY_POLICY"] = (
        f"{BASE_POLICY}; frame-ancestors {app.config['CHAT_FRAME_ANCESTORS']}"
    )
    app.after_request(add_security_headers)
