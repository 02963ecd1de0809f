"""Text shaping for Mattermost posts: mentions neutralized, long text split."""

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
