"""The integration log page: filters, newest first, keyset pagination, live tail."""

from __future__ import annotations

import re

from flask import Blueprint, render_template, request

from .. import htmx
from ..db import get_store
from ..store import DIRECTIONS, ENVIRONMENTS, LOG_PAGE_SIZE, OUTCOMES
from . import parse_id
from .auth import login_required

bp = Blueprint("log", __name__)


@bp.before_request
@login_required
def require_login():
    """The log is for admins only."""


CONVERSATION_ID = re.compile(r"^[a-z0-9]{26}$")


def _filters() -> dict[str, str]:
    """The page's filters, unknown values dropped rather than trusted."""
    allowed = {"env": ENVIRONMENTS, "direction": DIRECTIONS, "outcome": OUTCOMES}
    filters = {
        name: request.args.get(name, "") if request.args.get(name, "") in values else ""
        for name, values in allowed.items()
    }
    conversation = request.args.get("conversation", "")
    filters["conversation"] = conversation if CONVERSATION_ID.match(conversation) else ""
    return filters


@bp.get("/log")
def page():
    filters = _filters()
    before = parse_id(request.args.get("before"))
    rows = get_store().log_page(**filters, before_id=before)
    context = {
        "rows": rows,
        "filters": filters,
        "before": before,
        "newest_id": rows[0]["id"] if rows else 0,
        "older_than": rows[-1]["id"] if len(rows) == LOG_PAGE_SIZE else None,
        "environments": ENVIRONMENTS,
        "channel_names": _channel_names(),
        "directions": DIRECTIONS,
        "outcomes": OUTCOMES,
    }
    if htmx and not htmx.boosted and not htmx.history_restore_request:
        return render_template("log/_table.html", **context)
    return render_template("log/page.html", **context)


@bp.get("/log/tail")
def tail():
    """Rows newer than ``after``, above a fresh poller that remembers the newest."""
    filters = _filters()
    after = parse_id(request.args.get("after")) or 0
    rows = get_store().log_page(**filters, after_id=after)
    newest = rows[0]["id"] if rows else after
    return render_template(
        "log/_tail.html",
        rows=rows,
        filters=filters,
        newest_id=newest,
        channel_names=_channel_names(),
    )


def _channel_names() -> dict[str, str]:
    """Channel id -> "Team / Channel" for the channels either environment uses."""
    names: dict[str, str] = {}
    for settings in get_store().environments():
        names.update(settings["channel_names"])
    return names
