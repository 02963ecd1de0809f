"""Claim / Close / Reopen buttons on a conversation's root post (issue 10).

They are message attachment actions. Mattermost does not sign the call it
makes when one is clicked (app/integration_action.go DoPostActionWithCookie
POSTs the action's ``integration.context`` as given), and anyone who can
reach the bridge could make that call. So the context carries the
conversation id, the action and an HMAC of both made with the app's secret
key; the integration URL and context never reach Mattermost's clients (the
server strips them, model/post.go StripActionIntegrations).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .text import split_text

# Action ids must be letters and digits: the web app builds a DOM id from them.
CLAIM, CLOSE, REOPEN = "claim", "close", "reopen"
ACTIONS = (CLAIM, CLOSE, REOPEN)
LABELS = {CLAIM: "Claim", CLOSE: "Close", REOPEN: "Reopen"}
STYLES = {CLAIM: "primary", CLOSE: "danger", REOPEN: "default"}
# Marks the bridge's own attachment among a root post's attachments.
ATTACHMENT_MARK = "bridge-buttons"


@functools.lru_cache(maxsize=4)
def _signing_key(secret: str) -> bytes:
    """The buttons' own key, derived from the app's secret (once per process)."""
    return hashlib.sha256(b"mattermost-bridge action buttons\x00" + secret.encode()).digest()


def signature(secret: str, conversation_id: str, action: str) -> str:
    """HMAC-SHA256 of the conversation id and the action, keyed for this use only."""
    message = f"{conversation_id}\x00{action}".encode()
    return hmac.digest(_signing_key(secret), message, "sha256").hex()


def signature_matches(secret: str, conversation_id: str, action: str, given: str) -> bool:
    """Constant-time check of a context's signature."""
    expected = signature(secret, conversation_id, action)
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace"))


def state_note(conversation: dict[str, Any], actor: str = "") -> str:
    """What the buttons' attachment says about the conversation now.

    :param actor: ``@name`` of whoever just closed it, when known.
    """
    if conversation["status"] == "closed":
        return f"*closed by {actor}*" if actor else "*closed*"
    if conversation.get("assignee"):
        return f"*claimed by {conversation['assignee']}*"
    return "*open, not claimed yet*"


@dataclass(frozen=True)
class Buttons:
    """What building the buttons needs: the app's secret and its public address.

    :param secret: the app's SECRET_KEY.
    :param base_url: how Mattermost reaches the bridge (BRIDGE_PUBLIC_URL); empty:
        no buttons (the worker without BRIDGE_PUBLIC_URL cannot know it).
    """

    secret: str
    base_url: str

    def action_url(self, env: str) -> str:
        return f"{self.base_url.rstrip('/')}/hooks/mattermost/{env}/action"

    def attachment(self, conversation: dict[str, Any], note: str) -> dict[str, Any]:
        """The attachment holding the state and the buttons that fit it."""
        if conversation["status"] == "closed":
            shown = (REOPEN,)
        else:
            shown = (CLAIM, CLOSE)
        url = self.action_url(conversation["env"])
        return {
            "fallback": note.strip("*"),
            "text": note,
            "footer": ATTACHMENT_MARK,
            "actions": [
                {
                    "id": action,
                    "type": "button",
                    "name": LABELS[action],
                    "style": STYLES[action],
                    "integration": {
                        "url": url,
                        "context": {
                            "conversation_id": conversation["id"],
                            "action": action,
                            "signature": signature(self.secret, conversation["id"], action),
                        },
                    },
                }
                for action in shown
            ],
        }


def buttons_from_config(config: Any) -> Buttons | None:
    """The app's buttons, pointing at BRIDGE_PUBLIC_URL; None when it is not set.

    Never the address a request came to: a visitor starting a chat chooses
    its Host header, and the buttons would send agents' clicks (the signed
    context, the agent's name) to the visitor's server.
    """
    base = config.get("PUBLIC_URL") or ""
    if not base or not urlsplit(base).scheme:
        return None
    return Buttons(config["SECRET_KEY"], base)


def post_props(
    message: dict[str, Any], part: int, attachments: list[dict[str, Any]]
) -> dict[str, Any]:
    """A bridge post's props: the sender's keys for finding it again, and the attachments."""
    props: dict[str, Any] = {
        "bridge_message_id": str(message["id"]),
        # The random key tells this bridge's post from another's same id.
        "bridge_key": message["pending_key"],
        "bridge_part": str(part),
    }
    if attachments:
        props["attachments"] = attachments
    return props


def root_props(message: dict[str, Any], attachments: list[dict[str, Any]]) -> dict[str, Any]:
    """A root post's props (its first part)."""
    return post_props(message, 0, attachments)


def root_update(
    message: dict[str, Any],
    root_text: str,
    conversation: dict[str, Any],
    buttons: Buttons,
    note: str,
    max_post_size: int,
) -> dict[str, Any]:
    """The root post rewritten: its first part's text (Mattermost empties a post whose
    update has no message) and its props with the buttons that fit the state."""
    parts = split_text(root_text, max_post_size)
    # A message's own attachments go with its last part (sender.py).
    own = message.get("attachments") or [] if len(parts) == 1 else []
    others = [a for a in own if isinstance(a, dict)]
    attachments = [*others, buttons.attachment(conversation, note)]
    return {"message": parts[0], "props": root_props(message, attachments)}
