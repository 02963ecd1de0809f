"""``POST /hooks/mattermost/<env>``: Mattermost's outgoing webhook calls in.

Exempt from CSRF by name: Mattermost authenticates with the webhook token.

The answer goes out as soon as the call is checked and kept in the inbox;
the post lookup and routing run after it (``call_on_close``: gunicorn calls
it once the response is written). Mattermost waits at most 30 s for a hook
and never calls it again, and the lookup asks that same Mattermost: done
before answering, a slow Mattermost would make its own hook call wait on
itself. So its wait is one short SQLite transaction, whatever Mattermost's
API does, and a failed lookup leaves the call kept for the worker.
"""

from __future__ import annotations

from functools import partial

from flask import Blueprint, current_app, request

from ..buttons import buttons_from_config
from ..db import get_store
from ..errors import ApiError
from ..inbound import InboundRouter, PayloadError, parse_payload, route_after_answer

bp = Blueprint("hooks", __name__)


@bp.post("/hooks/mattermost/<any(test, production):env>")
def receive(env: str):
    router = InboundRouter(get_store())
    try:
        payload = parse_payload(request.content_type or "", request.form, request.get_data())
    except PayloadError as exc:
        router.reject(env, 400, f"bad payload: {exc.reason}")
        raise ApiError(400, "bad_payload", str(exc)) from None
    outcome = router.accept(env, payload)
    if outcome.http_status == 403:
        raise ApiError(403, "token_mismatch", "the webhook token does not match")
    # An empty body: Mattermost posts nothing in the channel.
    response = current_app.response_class("", 200)
    if outcome.routing is not None:
        response.call_on_close(
            partial(
                route_after_answer,
                current_app.config["DATABASE"],
                outcome.routing,
                session=current_app.config.get("MATTERMOST_SESSION"),
                buttons=buttons_from_config(current_app.config),
            )
        )
    return response
