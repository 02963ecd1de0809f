"""Slack-compatible message attachments, checked against Mattermost's own model.

Mattermost keeps attachments in a post's ``props.attachments`` and reads them
as ``model.MessageAttachment`` (server/public/model/message_attachment.go):
the fields and the rules below are that struct's and its ``IsValid``. Today
the server only warns about an invalid attachment ("in a future version this
will result in an error"), so the bridge refuses one up front with a 400 that
names the field, rather than posting something Mattermost may drop later.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_ATTACHMENTS = 20
MAX_FIELDS = 50
MAX_TEXT = 8000  # per text-like field; the whole list is bounded below
MAX_SHORT_TEXT = 1000  # titles, names, footers
MAX_URL = 2048
# Mattermost refuses a post whose props exceed 800,000 runes (model.PostPropsMaxRunes);
# leave plenty of room for the bridge's own props.
MAX_TOTAL_CHARS = 200_000

COLOR_WORDS = ("good", "warning", "danger")
HEX_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")  # message_attachment.go hexColorRegex
HTTP_URL = re.compile(r"^https?://[^\s/?#]+[^\s]*$", re.IGNORECASE)

TEXT_FIELDS = {"fallback": MAX_TEXT, "pretext": MAX_TEXT, "text": MAX_TEXT}
SHORT_FIELDS = {
    "color": 7,
    "author_name": MAX_SHORT_TEXT,
    "title": MAX_SHORT_TEXT,
    "footer": MAX_SHORT_TEXT,
}
URL_FIELDS = ("author_link", "author_icon", "title_link", "image_url", "thumb_url", "footer_icon")
KNOWN_FIELDS = {*TEXT_FIELDS, *SHORT_FIELDS, *URL_FIELDS, "fields", "ts"}
FIELD_KEYS = ("title", "value", "short")


class AttachmentError(ValueError):
    """An attachment breaks a rule; ``field`` names it like ``attachments[0].color``."""

    def __init__(self, field: str, message: str):
        super().__init__(f"'{field}' {message}")
        self.field = field


def validate_attachments(value: Any, *, where: str = "attachments", strict: bool = True) -> list:
    """The attachments, checked and normalised; raises :class:`AttachmentError`.

    :param strict: refuse keys Mattermost does not know (the host API). A
        pass-through payload from another system (``strict=False``) may carry
        Slack-only keys such as ``mrkdwn_in``: they are dropped instead.
    """
    if not isinstance(value, list):
        raise AttachmentError(where, "must be a list of attachment objects")
    if len(value) > MAX_ATTACHMENTS:
        raise AttachmentError(where, f"may hold at most {MAX_ATTACHMENTS} attachments")
    checked = [_attachment(item, f"{where}[{i}]", strict) for i, item in enumerate(value)]
    if len(json.dumps(checked, ensure_ascii=False)) > MAX_TOTAL_CHARS:
        raise AttachmentError(where, f"are larger than {MAX_TOTAL_CHARS} characters in all")
    return checked


def _attachment(item: Any, where: str, strict: bool) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise AttachmentError(where, "must be an object")
    if "actions" in item:
        # Buttons need an integration URL that answers Mattermost: not a notification's job.
        raise AttachmentError(f"{where}.actions", "are not supported (buttons need an integration)")
    unknown = sorted(key for key in item if key not in KNOWN_FIELDS)
    if unknown and strict:
        raise AttachmentError(
            f"{where}.{unknown[0]}",
            "is not a message attachment field (known: " + ", ".join(sorted(KNOWN_FIELDS)) + ")",
        )
    checked: dict[str, Any] = {}
    for key, limit in {**TEXT_FIELDS, **SHORT_FIELDS}.items():
        if item.get(key) is not None:
            checked[key] = _string(item[key], f"{where}.{key}", limit)
    if checked.get("color") and not (
        checked["color"] in COLOR_WORDS or HEX_COLOR.match(checked["color"])
    ):
        raise AttachmentError(
            f"{where}.color", "must be good, warning, danger or a hex colour like #36a64f"
        )
    for key in URL_FIELDS:
        if item.get(key) is not None:
            url = _string(item[key], f"{where}.{key}", MAX_URL)
            if url and not HTTP_URL.match(url):
                raise AttachmentError(f"{where}.{key}", "must be an http:// or https:// URL")
            checked[key] = url
    if item.get("ts") is not None:
        ts = item["ts"]
        if isinstance(ts, bool) or not isinstance(ts, (str, int, float)):
            raise AttachmentError(f"{where}.ts", "must be a string or a number (Unix seconds)")
        checked["ts"] = ts
    if item.get("fields") is not None:
        checked["fields"] = _fields(item["fields"], f"{where}.fields", strict)
    return checked


def _fields(value: Any, where: str, strict: bool) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise AttachmentError(where, "must be a list of {title, value, short} objects")
    if len(value) > MAX_FIELDS:
        raise AttachmentError(where, f"may hold at most {MAX_FIELDS} fields")
    fields = []
    for i, field in enumerate(value):
        here = f"{where}[{i}]"
        if not isinstance(field, dict):
            raise AttachmentError(here, "must be an object")
        unknown = sorted(key for key in field if key not in FIELD_KEYS)
        if unknown and strict:
            raise AttachmentError(
                f"{here}.{unknown[0]}", "is not a field key (title, value, short)"
            )
        checked: dict[str, Any] = {
            "title": _string(field.get("title", ""), f"{here}.title", MAX_SHORT_TEXT)
        }
        value_ = field.get("value", "")
        if isinstance(value_, int) and not isinstance(value_, bool):
            # Go decodes a JSON number as float64, which IsValid refuses: send a string.
            value_ = str(value_)
        checked["value"] = _string(
            value_, f"{here}.value", MAX_TEXT, kind="a string or a whole number"
        )
        short = field.get("short", False)
        if isinstance(short, str) and short in ("true", "false"):
            short = short == "true"  # model.SlackCompatibleBool reads these too
        if not isinstance(short, bool):
            raise AttachmentError(f"{here}.short", "must be true or false")
        checked["short"] = short
        fields.append(checked)
    return fields


def _string(value: Any, where: str, limit: int, *, kind: str = "a string") -> str:
    if not isinstance(value, str):
        raise AttachmentError(where, f"must be {kind}")
    if len(value) > limit:
        raise AttachmentError(where, f"is longer than {limit} characters")
    if "\x00" in value:
        raise AttachmentError(where, "contains a NUL character")
    return value


def valid_color(color: str) -> bool:
    """A colour Mattermost accepts for an attachment's side bar."""
    return color in COLOR_WORDS or bool(HEX_COLOR.match(color))


def styled(text: str, style: dict[str, str]) -> dict[str, Any]:
    """The attachment a notification type's colour and title turn ``text`` into."""
    title = style.get("title", "")
    summary = " ".join(text.split())
    fallback = f"{title}: {summary}" if title else summary
    attachment: dict[str, Any] = {"fallback": fallback[:300], "text": text}
    if style.get("color"):
        attachment["color"] = style["color"]
    if title:
        attachment["title"] = title
    return attachment
