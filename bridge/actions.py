"""Closing, reopening and claiming a conversation: one code path for every way in.

An agent closes a conversation by writing ``!close`` in its thread
(inbound.py), with the Close button on its root post, or with
``/bridge close REF``; each goes through :func:`record_close` (the event the
visitor and the host's callback see, in the caller's transaction) and then
:func:`after_close` (the confirmation in the thread, the root post rewritten).
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

import requests

from . import mattermost as mm
from .buttons import Buttons, root_update, state_note
from .callbacks import INLINE_ATTEMPTS, CallbackSender
from .integration import logged_client
from .sender import format_message
from .store import Store

log = logging.getLogger(__name__)

CLOSE_CONFIRMATION = "Conversation closed. The visitor sees that it has ended."


def record_close(
    store: Store, env: str, conversation: dict[str, Any], *, author: str, post_id: str = ""
) -> dict[str, Any] | None:
    """Store the close event and close the conversation (call inside a transaction).

    :param author: the agent's display name, as the visitor sees it.
    :param post_id: the ``!close`` post; a button or command has none, so a
        unique key stands in (replies are stored once per post id).
    :returns: the event message (its callback pending when the host has a
        callback URL), or None when this post was stored already.
    """
    settings = store.environment(env)
    message = store.add_inbound_message(
        env=env,
        conversation_id=conversation["id"],
        direction="event",
        author=author,
        text=f"{author} closed the conversation.",
        post_id=post_id or f"agent-close:{secrets.token_hex(8)}",
        delivery_status="pending" if settings["callback_url"] else "",
    )
    if message is not None:
        store.close_conversation(conversation["id"])
    return message


def after_close(
    store: Store,
    client: mm.MattermostClient,
    conversation: dict[str, Any],
    *,
    buttons: Buttons | None = None,
    actor: str = "",
) -> None:
    """Say in the thread that it is closed; rewrite the root post when it has buttons.

    The confirmation is posted over REST: Mattermost refuses a webhook-response
    comment on a post that is itself a reply. The hook fires for this bot post
    too and the loop guard ignores it. A failure is in the log (the client's
    calls are logged) and changes nothing: the close itself has happened.
    """
    if not conversation["root_post_id"]:
        return  # never mirrored (its first post failed): no thread to confirm in
    try:
        client.create_post(
            conversation["channel_id"],
            CLOSE_CONFIRMATION,
            root_id=conversation["root_post_id"],
            action="close_notice",
        )
    except mm.MattermostError:
        pass
    if buttons is not None:
        refresh_root(store, client, store.conversation(conversation["id"]), buttons, actor=actor)


def refresh_root(
    store: Store,
    client: mm.MattermostClient,
    conversation: dict[str, Any],
    buttons: Buttons,
    *,
    actor: str = "",
) -> None:
    """Rewrite the root post to show the state and the buttons that fit it."""
    if not conversation["root_post_id"]:
        return
    update = root_post_update(store, conversation, buttons, actor=actor)
    try:
        client.patch_post(conversation["root_post_id"], update["message"], update["props"])
    except mm.MattermostError:
        pass  # logged by the client; the next touch tries again


def root_post_update(
    store: Store,
    conversation: dict[str, Any],
    buttons: Buttons,
    *,
    actor: str = "",
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``{"message", "props"}`` of the root post as it should read now.

    :param settings: the environment's, when the caller has read them already.
    """
    first = store.first_message(conversation["id"])
    settings = settings or store.environment(conversation["env"])
    return root_update(
        first,
        format_message(first, is_root=True),
        conversation,
        buttons,
        state_note(conversation, actor),
        settings.get("max_post_size") or mm.MAX_POST_SIZE,
    )


def author_name(store: Store, env: str, user_id: str, user_name: str) -> str:
    """The agent's display name as the visitor sees it: the cached one (inbound.py
    fills the cache), else the username; no Mattermost call while Mattermost waits."""
    cached = store.cached_user(env, user_id, 10 * 365 * 86400)
    if cached:
        return cached["display_name"]
    return user_name or "Agent"


def finish_after_answer(
    database: str,
    conversation_id: str,
    *,
    log_row: dict[str, Any] | None = None,
    closed_message_id: int | None = None,
    session: requests.Session | None = None,
    buttons: Buttons | None = None,
    actor: str = "",
) -> None:
    """What follows a button's or a command's answer, off Mattermost's wait.

    For ``conversation_id``: a close gets its confirmation in the thread and
    its callback; with ``buttons`` the root post is rewritten too (a
    command's answer cannot update a post; a button's answer does it
    itself). A failure here loses nothing the visitor sees: the worker
    delivers a pending callback later. Then the call's log row
    (:meth:`Store.log_agent_call`), a write Mattermost need not wait for; it
    is lost (a traceback in the server log says so) when the database
    cannot take it or the process dies first.
    """
    store = Store(database, shared=True)
    try:
        if conversation_id:
            _follow_up_conversation(
                store,
                conversation_id,
                closed_message_id=closed_message_id,
                session=session,
                buttons=buttons,
                actor=actor,
            )
        if log_row is not None:
            try:
                store.log_agent_call(**log_row)
            except Exception:
                log.exception("the log row of a %s call was not written", log_row["action"])
    finally:
        store.close()


def _follow_up_conversation(
    store: Store,
    conversation_id: str,
    *,
    closed_message_id: int | None,
    session: requests.Session | None,
    buttons: Buttons | None,
    actor: str,
) -> None:
    try:
        conversation = store.conversation(conversation_id)
        client = logged_client(store, store.environment(conversation["env"]), session=session)
        if closed_message_id is not None:
            after_close(store, client, conversation, buttons=buttons, actor=actor)
            message = store.message(closed_message_id)
            if message["delivery_status"] == "pending":
                CallbackSender(store, session=session).deliver(
                    closed_message_id, attempts=INLINE_ATTEMPTS
                )
        elif buttons is not None:
            refresh_root(store, client, conversation, buttons, actor=actor)
    except Exception:
        log.exception("after-answer work for conversation %s failed", conversation_id)
        store.rollback()
