"""``POST /hooks/mattermost/<env>``: Mattermost's outgoing webhook calls in.

Exempt from CSRF by name: Mattermost authenticates with the webhook token.
"""

from __future__ import annotations

from flask import Blueprint, current_app, request

from ..db import get_store
from ..errors import ApiError
from ..inbound import InboundRouter, PayloadError, parse_payload

bp = Blueprint("hooks", __name__)


@bp.post("/hooks/mattermost/<any(test, production):env>")
def receive(env: str):
    try:
        payload = parse_payload(request.content_type or "", request.form, request.get_data())
    except PayloadError as exc:
        get_store().log(
            env=env,
            direction="inbound",
            action="webhook",
            outcome="rejected",
            http_status=400,
            error=f"bad payload: {exc}",
        )
        raise ApiError(400, "bad_payload", str(exc)) from None
    router = InboundRouter(get_store(), session=current_app.config.get("MATTERMOST_SESSION"))
    outcome = router.handle(env, payload)
    if outcome.http_status == 403:
        raise ApiError(403, "token_mismatch", "the webhook token does not match")
    # An empty body: Mattermost posts nothing in the channel.
    return "", 200
