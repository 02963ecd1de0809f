"""``POST /hooks/mattermost/<env>/action`` and ``.../command``: agents act from Mattermost.

Exempt from CSRF by name: Mattermost authenticates the command with its
token and the buttons with the HMAC in their context (buttons.py). The
answer goes out first; the call's log row, a close's confirmation, its
callback and a command's root post rewrite follow once it is sent
(``call_on_close``), so Mattermost waits for the change's own short SQLite
transaction only (a claim: one row; a list: none).
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
    # The button's answer rewrites the root post itself: no rewrite after it.
    _follow_up(response, result, buttons=None, work=result.closed_message_id is not None)
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
    work = bool(result.conversation_id)
    _follow_up(response, result, buttons=buttons_from_config(current_app.config), work=work)
    return response


def _follow_up(response, result: ClickResult | CommandResult, *, buttons, work: bool) -> None:
    """After the answer: the call's log row, and with ``work`` the conversation's follow-up."""
    if result.log is None and not work:
        return  # a refusal: counted before the answer
    response.call_on_close(
        partial(
            finish_after_answer,
            current_app.config["DATABASE"],
            result.conversation_id if work else "",
            log_row=result.log,
            closed_message_id=result.closed_message_id,
            session=current_app.config.get("MATTERMOST_SESSION"),
            buttons=buttons,
            actor=result.actor,
        )
    )
