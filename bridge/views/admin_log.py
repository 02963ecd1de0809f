"""The log of admin actions: who signed in (and who was refused), who logged out, and
every POST an admin made on an admin screen, under the name the admin acts as."""

from __future__ import annotations

from flask import Blueprint, g, render_template, request

from ..db import get_store
from .auth import admin_name, login_required

bp = Blueprint("admin_log", __name__)
# Not admin screens (or, for auth, logged by their own views with more to say).
NOT_LOGGED = {"api", "hooks", "agent_hooks", "chat", "source_hooks", "oauth_login", "auth"}
# POSTs that change nothing (a template's live preview, sent as the admin types).
READ_ONLY = {"sources.live_preview"}


@bp.get("/admin-log")
@login_required
def page():
    return render_template("admin_log/page.html", actions=get_store().admin_actions())


@bp.after_app_request
def log_admin_posts(response):
    """Every admin POST that was let through (the guard ran and said yes)."""
    if (
        request.method == "POST"
        and g.get("is_admin")
        and request.blueprint not in NOT_LOGGED
        and request.endpoint not in READ_ONLY
        and response.status_code < 400
    ):
        detail = f"POST {request.path} → {response.status_code}"
        get_store().log_admin_action(admin_name(), request.endpoint or "", detail)
    return response
