"""The checklist page: test and production side by side, ticks and live evidence."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, Response, abort, current_app, render_template

from .. import checklist as readiness
from ..db import get_store
from ..integration import has_credentials, logged_client
from .auth import admin_name, login_required

bp = Blueprint("checklist", __name__)
ENV = "<any(test, production):env>"


@bp.before_request
@login_required
def require_login():
    """Admins only."""


@bp.get("/checklist")
def page():
    store = get_store()
    lists = [readiness.checklist(store, env) for env in readiness.ITEMS]
    return render_template("checklist/page.html", lists=lists)


@bp.post(f"/checklist/{ENV}/<item>/toggle")
def toggle(env: str, item: str):
    """Tick or untick one item; answers with the item's own fragment."""
    if readiness.item_for(env, item) is None:
        abort(404, f"The {env} checklist has no item {item!r}.")
    store = get_store()
    current = store.ticks(env).get(item)
    store.set_tick(env, item, not (current and current["ticked"]), admin_name())
    return _environment_fragment(env)


@bp.post(f"/checklist/{ENV}/recheck")
def recheck(env: str):
    """Ask Mattermost again (token and channel membership)."""
    store = get_store()
    settings = store.environment(env)
    if not settings["server_url"] or not has_credentials(settings):
        return _environment_fragment(
            env, "Nothing to check yet: save the server URL and bot token or account login first."
        )
    client = logged_client(store, settings, session=current_app.config.get("MATTERMOST_SESSION"))
    readiness.recheck(store, env, client)
    return _environment_fragment(env, "Checked with Mattermost just now.")


def _environment_fragment(env: str, note: str = ""):
    state = readiness.checklist(get_store(), env)
    return render_template("checklist/_environment.html", checklist=state, note=note)


@bp.get("/checklist.md")
def export():
    store = get_store()
    lists = [readiness.checklist(store, env) for env in readiness.ITEMS]
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    body = readiness.as_markdown(lists, now, admin_name())
    return Response(
        body,
        mimetype="text/markdown",
        headers={"Content-Disposition": "attachment; filename=mattermost-bridge-checklist.md"},
    )
