"""The ``/bridge`` slash command: list, close, reopen, status, help.

Mattermost POSTs a form (app/command.go DoCommandRequest: ``token``,
``team_id``, ``team_domain``, ``channel_id``, ``channel_name``, ``user_id``,
``user_name``, ``command``, ``text``, ``trigger_id``, ``response_url``)
with ``Authorization: Token <token>``, and shows the JSON answer
(model.CommandResponse): ``response_type`` ``ephemeral`` is seen only by
the agent who typed it. Mattermost never checks the token: the bridge does,
in constant time, before anything else.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .actions import author_name, record_close
from .checklist import checklist
from .inbound import MATTERMOST_ID
from .store import Store
from .text import neutralize

SHORT_REF = 8  # characters of a conversation id shown as its ref
MIN_REF = 4  # the shortest prefix accepted back
HELP = (
    "**/bridge** — the web chats mirrored in this environment:\n"
    "- `/bridge list` — open conversations, newest first, with ref, assignee and a link\n"
    "- `/bridge close REF` — close one (the visitor sees that it has ended)\n"
    "- `/bridge reopen REF` — reopen a closed one\n"
    "- `/bridge status` — active or not, last send, failed messages, checklist\n"
    "- `/bridge help` — this text"
)


@dataclass
class CommandResult:
    """The HTTP status, the answer's JSON and the follow-up once it is sent."""

    status: int
    body: dict[str, Any]
    conversation_id: str = ""
    closed_message_id: int | None = None
    actor: str = ""
    # A valid call's log row (Store.log_agent_call), written once the answer is sent.
    log: dict[str, Any] | None = None


def ephemeral(text: str) -> dict[str, Any]:
    return {"response_type": "ephemeral", "text": text}


def given_token(form: Mapping[str, str], authorization: str) -> str:
    """The token Mattermost sent: the ``Authorization: Token`` header, else the form's."""
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "token" and value.strip():
        return value.strip()
    return form.get("token", "")


def short_ref(conversation: dict[str, Any]) -> str:
    return conversation["id"][:SHORT_REF]


def age(seconds: float) -> str:
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{int(seconds // 60)} min"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h"
    return f"{int(seconds // 86400)} d"


class CommandHandler:
    """Answers one ``/bridge`` call for one environment."""

    def __init__(self, store: Store, *, now: float | None = None):
        self.store = store
        self.now = time.time() if now is None else now

    def handle(self, env: str, form: Mapping[str, str], authorization: str) -> CommandResult:
        settings = self.store.environment(env)
        expected = settings["command_token"]
        token = given_token(form, authorization)
        if not expected:
            return self._reject(env, "token mismatch: no command token is saved yet")
        if not hmac.compare_digest(token.encode(), expected.encode()):
            return self._reject(env, "token mismatch")
        user_id, user_name = form.get("user_id", ""), form.get("user_name", "")[:64]
        if not MATTERMOST_ID.fullmatch(user_id):
            return CommandResult(400, ephemeral("The call has no valid user_id."))
        words = form.get("text", "")[:1000].split()
        sub = words[0].lower() if words else "help"
        ref = words[1] if len(words) > 1 else ""
        if sub == "list":
            result = CommandResult(200, ephemeral(self._list(settings)))
        elif sub == "status":
            result = CommandResult(200, ephemeral(self._status(settings)))
        elif sub in ("close", "reopen"):
            result = self._change(settings, sub, ref, user_id, user_name)
        else:
            unknown = _with_help(f"Unknown subcommand `{neutralize(sub[:40])}`.")
            result = CommandResult(200, ephemeral(HELP if sub == "help" else unknown))
        result.log = {
            "env": env,
            "action": "command",
            "outcome": "ok",
            "detail": f"/bridge {sub[:40]}",
            "target": user_id,
            "conversation_id": result.conversation_id,
        }
        return result

    def _reject(self, env: str, reason: str) -> CommandResult:
        self.store.count_refused_agent_call(
            env=env, action="command", reason=reason, http_status=403
        )
        return CommandResult(
            403, {"error": "the command token does not match", "code": "token_mismatch"}
        )

    def _list(self, settings: dict[str, Any]) -> str:
        env = settings["name"]
        rows = self.store.open_conversations(env)
        if not rows:
            return f"No open conversations in **{env}**."
        lines = [f"Open conversations in **{env}**, newest first:"]
        for c in rows:
            name = neutralize(" ".join(c["visitor_name"].split())) or "Visitor"
            link = (
                f"[thread]({settings['server_url']}/_redirect/pl/{c['root_post_id']})"
                if c["root_post_id"] and settings["server_url"]
                else "not posted yet"
            )
            lines.append(
                f"- `{short_ref(c)}` · **{name}** · {c['assignee'] or 'unclaimed'}"
                f" · {age(self.now - c['created_at'])} · {link}"
            )
        return "\n".join(lines)

    def _status(self, settings: dict[str, Any]) -> str:
        env = settings["name"]
        last = self.store.last_send(env)
        progress = checklist(self.store, env)
        return "\n".join(
            [
                f"**{env}** is {'active' if settings['active'] else 'inactive'}.",
                f"- last send: {age(self.now - last) + ' ago' if last else 'never'}",
                f"- failed messages waiting: {self.store.failed_waiting(env)}",
                f"- checklist: {progress.done} of {progress.total} items hold",
            ]
        )

    def _change(self, settings, sub: str, ref: str, user_id: str, user_name: str) -> CommandResult:
        env = settings["name"]
        matches = self.store.conversations_by_ref(env, ref) if len(ref) >= MIN_REF else []
        if len(matches) != 1:
            why = "matches several conversations" if matches else "matches no conversation"
            shown = neutralize(ref[:40]) or "(none)"
            return CommandResult(200, ephemeral(_with_help(f"`{shown}` {why} in **{env}**.")))
        conversation = matches[0]
        name = neutralize(conversation["visitor_name"])
        wanted = "closed" if sub == "close" else "open"
        if conversation["status"] == wanted:
            return CommandResult(
                200, ephemeral(f"`{short_ref(conversation)}` is already {wanted}.")
            )
        if not settings["active"]:
            return CommandResult(200, ephemeral(f"**{env}** is inactive: nothing changed."))
        actor = f"@{user_name}" if user_name else "an agent"
        result = CommandResult(200, {}, conversation_id=conversation["id"], actor=actor)
        with self.store.immediate():
            if sub == "close":
                author = author_name(self.store, env, user_id, user_name)
                message = record_close(self.store, env, conversation, author=author)
                result.closed_message_id = message["id"] if message else None
                text = f"Closed `{short_ref(conversation)}` ({name})."
            else:
                self.store.reopen_conversation(conversation["id"])
                text = f"Reopened `{short_ref(conversation)}` ({name})."
        result.body = ephemeral(text)
        return result


def _with_help(reason: str) -> str:
    return f"{reason}\n\n{HELP}" if reason else HELP
