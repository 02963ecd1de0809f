"""``POST /hooks/mattermost/<env>/action`` and ``.../command``: agents act from Mattermost.

Exempt from CSRF by name: Mattermost authenticates the command with its
token and the buttons with the HMAC in their context (buttons.py). The
answer goes out first; a close's confirmation, its callback and a command's
root post rewrite follow once it is sent (``call_on_close``), so Mattermost
waits for one short SQLite transaction only.
"""

from __future__ import annotations

from functools import partial

from flask import Blueprint, current_app, jsonify, request

from ..actions import finish_after_answer
from ..buttons import buttons_from_config
from ..clicks import ClickHandler, ClickResult
from ..commands import CommandHandler, CommandResult
from ..db import get_store
from ..errors import ApiError

bp = Blueprint("agent_hooks", __name__)
ENV = "<any(test, production):env>"


@bp.post(f"/hooks/mattermost/{ENV}/action")
def action(env: str):
    buttons = buttons_from_config(current_app.config)
    if buttons is None:
        # Buttons are only posted with BRIDGE_PUBLIC_URL set; a click on an old one
        # after it was removed cannot be answered with working buttons.
        return jsonify(
            {"ephemeral_text": "The bridge's buttons need BRIDGE_PUBLIC_URL to be set again."}
        )
    result = ClickHandler(get_store(), buttons).handle(env, request.get_data())
    response = jsonify(result.body)
    if result.closed_message_id is not None:
        # The button's answer rewrites the root post itself: no rewrite after it.
        _follow_up(response, result, buttons=None)
    return response


@bp.post(f"/hooks/mattermost/{ENV}/command")
def command(env: str):
    mimetype = request.mimetype
    if mimetype not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        raise ApiError(400, "bad_payload", "Mattermost sends slash commands form-encoded")
    result = CommandHandler(get_store()).handle(
        env, request.form, request.headers.get("Authorization", "")
    )
    response = jsonify(result.body)
    response.status_code = result.status
    if result.conversation_id:
        buttons = buttons_from_config(current_app.config)
        _follow_up(response, result, buttons=buttons)
    return response


def _follow_up(response, result: ClickResult | CommandResult, *, buttons) -> None:
    response.call_on_close(
        partial(
            finish_after_answer,
            current_app.config["DATABASE"],
            result.conversation_id,
            closed_message_id=result.closed_message_id,
            session=current_app.config.get("MATTERMOST_SESSION"),
            buttons=buttons,
            actor=result.actor,
        )
    )
