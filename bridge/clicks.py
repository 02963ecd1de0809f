"""A click on a root post's Claim / Close / Reopen button, as Mattermost relays it.

Mattermost POSTs JSON (model.PostActionIntegrationRequest, sent by
app/integration_action.go DoPostActionWithCookie): ``user_id``,
``user_name``, ``channel_id``, ``team_id``, ``post_id``, ``type``,
``context`` ... and shows our answer (model.PostActionIntegrationResponse):
``update`` replaces the post (its message too: an update without one empties
it) and ``ephemeral_text`` is shown to the clicking user only. Any answer but
a 200 makes Mattermost show a bare error, so a refusal is a 200 with an
``ephemeral_text`` saying why, and nothing is written but a counted log row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .actions import author_name, record_close, root_post_update
from .buttons import ACTIONS, CLAIM, CLOSE, REOPEN, Buttons, signature_matches
from .inbound import MATTERMOST_ID
from .store import NotFound, Store

REFUSED = "This button's call was refused: "


@dataclass
class ClickResult:
    """The answer's JSON and what to do once it is sent."""

    body: dict[str, Any]
    conversation_id: str = ""
    closed_message_id: int | None = None
    actor: str = ""
    # The valid call's log row (Store.log_agent_call), written once the answer is sent.
    log: dict[str, Any] | None = None


@dataclass
class Click:
    user_id: str
    user_name: str
    post_id: str
    conversation_id: str
    action: str
    signature: str


class ClickError(ValueError):
    """Not a call the bridge's buttons make; the message is a fixed sentence."""


def parse_click(raw_body: bytes) -> Click:
    try:
        data = json.loads(raw_body or b"null")
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ClickError("the body is not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("context"), dict):
        raise ClickError("the body has no action context")
    context = data["context"]
    values = {
        "user_id": data.get("user_id"),
        "user_name": data.get("user_name", ""),
        "post_id": data.get("post_id"),
        "conversation_id": context.get("conversation_id"),
        "action": context.get("action"),
        "signature": context.get("signature"),
    }
    if not all(isinstance(value, str) for value in values.values()):
        raise ClickError("a field is missing or not text")
    if not (
        MATTERMOST_ID.fullmatch(values["user_id"]) and MATTERMOST_ID.fullmatch(values["post_id"])
    ):
        raise ClickError("user_id or post_id is not a Mattermost id")
    if len(values["user_name"]) > 64 or len(values["conversation_id"]) > 64:
        raise ClickError("a field is longer than Mattermost makes it")
    if values["action"] not in ACTIONS:
        raise ClickError("unknown action")
    return Click(**values)


class ClickHandler:
    """Checks a click, then claims, closes or reopens.

    :param buttons: the app's buttons (secret and address) for the answer's update.
    """

    def __init__(self, store: Store, buttons: Buttons):
        self.store = store
        self.buttons = buttons

    def handle(self, env: str, raw_body: bytes) -> ClickResult:
        try:
            click = parse_click(raw_body)
        except ClickError as exc:
            return self._refuse(env, f"not a call from the bridge's buttons ({exc})")
        # The signature first, in constant time, before anything is looked up or written.
        if not signature_matches(
            self.buttons.secret, click.conversation_id, click.action, click.signature
        ):
            return self._refuse(env, "its signature does not match")
        try:
            conversation = self.store.conversation(click.conversation_id, env=env)
        except NotFound:
            return self._refuse(env, "the conversation is not in this environment")
        if click.post_id != conversation["root_post_id"]:
            return self._refuse(env, "the post is not that conversation's root post")
        settings = self.store.environment_flags(env)
        if not settings["active"]:
            return self._refuse(env, "the bridge is inactive in this environment")
        return self._perform(settings, click, conversation)

    def _perform(self, settings: dict, click: Click, conversation: dict[str, Any]) -> ClickResult:
        env = settings["name"]
        actor = f"@{click.user_name}" if click.user_name else "an agent"
        closed = conversation["status"] == "closed"
        stale = (click.action == REOPEN) != closed
        result = ClickResult(body={}, conversation_id=conversation["id"], actor=actor)
        if stale:
            # Another agent got there first: show the post as it is now, change nothing.
            note = f"Nothing done: the conversation is already {conversation['status']}."
            result.log = self._log_row(env, click, conversation, "ignored", note)
            result.body = {
                "update": root_post_update(
                    self.store, conversation, self.buttons, settings=settings
                ),
                "ephemeral_text": note,
            }
            return result
        with self.store.immediate():
            if click.action == CLAIM:
                self.store.set_assignee(conversation["id"], actor)
                text = f"You claimed the conversation with {conversation['visitor_name']}."
            elif click.action == CLOSE:
                author = author_name(self.store, env, click.user_id, click.user_name)
                message = record_close(self.store, env, conversation, author=author)
                result.closed_message_id = message["id"] if message else None
                text = ""
            else:
                self.store.reopen_conversation(conversation["id"])
                text = "Reopened: the visitor can write again."
        result.log = self._log_row(env, click, conversation, "ok", f"{click.action} by {actor}")
        now = {CLAIM: {"assignee": actor}, CLOSE: {"status": "closed"}, REOPEN: {"status": "open"}}
        conversation = {**conversation, **now[click.action]}  # as just written
        update = root_post_update(
            self.store, conversation, self.buttons, actor=actor, settings=settings
        )
        result.body = {"update": update}
        if text:
            result.body["ephemeral_text"] = text
        return result

    @staticmethod
    def _log_row(env, click: Click, conversation, outcome: str, detail: str) -> dict[str, Any]:
        """The log row of a valid click. It is not part of the change's transaction:
        Mattermost waits for the answer, the log does not (agent_hooks.py)."""
        return {
            "env": env,
            "action": "button",
            "outcome": outcome,
            "detail": detail,
            "target": click.user_id,
            "conversation_id": conversation["id"],
            "post_id": click.post_id,
        }

    def _refuse(self, env: str, reason: str) -> ClickResult:
        """A counted log row (a fixed sentence) and the reason for the clicking agent."""
        self.store.count_refused_agent_call(
            env=env, action="button", reason=reason, http_status=200
        )
        return ClickResult(body={"ephemeral_text": REFUSED + reason + "."})
