"""Text shaping for Mattermost posts: mentions and links neutralized, long text split."""

from __future__ import annotations

import re
from datetime import UTC, datetime

ZERO_WIDTH_SPACE = "\u200b"

# An @ that can start a mention. Mattermost splits words on . - : and strips
# leading punctuation, so "Thanks.@channel" pings; only a letter or digit
# right before the @ (an e-mail address, "a@channel") keeps it inert.
_MENTION = re.compile(r"(?<![A-Za-z0-9])@(?=[A-Za-z0-9_.\-])")


def neutralize_mentions(text: str) -> str:
    """Stop visitor text from pinging anyone in Mattermost.

    ``@channel``, ``@here``, ``@all`` and ``@user`` get a zero-width space
    after the ``@``: the text reads the same, Mattermost sees no mention.
    Visitors have no business notifying staff by name; e-mail addresses are
    left alone.
    """
    return _MENTION.sub("@" + ZERO_WIDTH_SPACE, text)


def neutralize_links(text: str) -> str:
    """Stop visitor text from placing images or disguised links in front of agents.

    Mattermost renders posts as Markdown: ``![x](http://tracker/pixel.png)``
    (or ``![x][1]`` with ``[1]: http://...``) loads an image in every
    agent's client, and ``[https://bank.example](http://evil)`` shows one
    address but opens another. Every such form needs a ``]`` directly
    followed by ``(``, ``[``, ``:``, or (in Mattermost's marked,
    webapp/channels/src/utils/markdown, mattermost/marked lib/marked.js
    ``reflink``) whitespace and ``[``. A zero-width space after each ``]``
    breaks them all: the agent reads the text as typed, brackets included,
    and bare addresses in it are autolinked as themselves. Raw HTML
    (``<img>``, ``<a>``) needs nothing: Mattermost renders it as text
    (marked's ``sanitize: true``).
    """
    return text.replace("]", "]" + ZERO_WIDTH_SPACE)


def neutralize(text: str) -> str:
    """Visitor text made safe to post: no mentions, no images, no disguised links."""
    return neutralize_links(neutralize_mentions(text))


def split_text(text: str, limit: int) -> list[str]:
    """Split text into parts of at most ``limit`` characters, in order.

    Cuts after the last line break, else the last space, in the second half
    of a part; otherwise hard at the limit. Joining the parts gives the text.
    """
    if limit < 2:
        raise ValueError("limit must be at least 2")
    parts = []
    while len(text) > limit:
        window = text[:limit]
        cut = window.rfind("\n")
        if cut < limit // 2:
            cut = window.rfind(" ")
        if cut < limit // 2:
            cut = limit - 1
        while cut > 0 and text[cut + 1] == "@":
            cut -= 1  # a part must not start with an @: "a@channel" would become live
        parts.append(text[: cut + 1])
        text = text[cut + 1 :]
    parts.append(text)
    return parts


def iso_time(timestamp: float | None) -> str | None:
    """Unix seconds as ISO 8601 UTC with milliseconds: ``2026-11-21T19:44:13.123Z``."""
    if timestamp is None:
        return None
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
