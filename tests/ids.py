"""Ids shaped like Mattermost's: 26 letters and digits (model.IsValidId).

A real server answers 400 to an id of any other shape in a URL, so tests use
these even where a mock would accept anything.
"""

from __future__ import annotations

import re

VALID_ID = re.compile(r"[A-Za-z0-9]{26}")


def mm_id(label: str) -> str:
    """A readable, valid id: ``mm_id("ch1")`` is ``ch1`` padded with zeros to 26."""
    if not re.fullmatch(r"[a-z0-9]{1,26}", label):
        raise ValueError(f"{label!r}: use 1 to 26 lowercase letters and digits")
    return label.ljust(26, "0")
