"""Private notices to an agent whose reply cannot reach the visitor.

The conversation is closed, the host's callback keeps failing, or the host
refuses the reply as too long (413): the agent
must know, and nobody else. First an ephemeral post in the thread (only the
agent sees it). Mattermost lets only roles with ``create_post_ephemeral``
make one (system admins by default: api4/post.go createEphemeralPost answers
403 otherwise), so on 403 the bot writes the agent a direct message instead
(``POST /api/v4/channels/direct``, then a post there). Never a post in the
mirror channel. Every notice is one row in the integration log, besides the
rows of the calls it made.
"""

from __future__ import annotations

from typing import Any

import requests

from . import mattermost as mm
from .integration import logged_client
from .store import Store

CLOSED = "the conversation is closed"
CALLBACK_FAILING = "the host's callback keeps failing"
TOO_LONG = "the reply is longer than the visitor's side accepts"


def tell_agent(
    store: Store,
    settings: dict[str, Any],
    *,
    agent_user_id: str,
    conversation: dict[str, Any],
    text: str,
    reason: str,
    message_id: int | None = None,
    session: requests.Session | None = None,
) -> str:
    """Tell one agent privately; how it went: ``ephemeral``, ``direct`` or ``failed``.

    :param reason: a fixed phrase (``CLOSED``, ``CALLBACK_FAILING``, ``TOO_LONG``) for the log.
    """
    client = logged_client(
        store,
        settings,
        session=session,
        message={"conversation_id": conversation["id"], "id": message_id},
    )
    how, error = "failed", ""
    try:
        try:
            client.ephemeral_post(
                agent_user_id,
                conversation["channel_id"],
                text,
                root_id=conversation["root_post_id"],
            )
            how = "ephemeral"
        except mm.Forbidden:
            # The usual case for a bot: it lacks create_post_ephemeral.
            channel = client.direct_channel(settings["bot_user_id"], agent_user_id)
            client.create_post(channel["id"], text, action="notice_dm")
            how = "direct"
    except mm.MattermostError as exc:
        error = str(exc)
    store.log(
        env=settings["name"],
        direction="outbound",
        action="agent_notice",
        target=agent_user_id,
        outcome="error" if error else "ok",
        error=f"{reason}: " + (f"notice not delivered: {error}" if error else f"told by {how}"),
        conversation_id=conversation["id"],
        message_id=message_id,
    )
    return how
