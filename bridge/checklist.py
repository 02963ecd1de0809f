"""The test / production readiness checklist: items, their evidence, their ticks.

Every item can be ticked by an admin (who and when is kept). Where the bridge
can see evidence, the item shows it (ok / failing / not yet, with the time
and a link into the log) and ticks itself when the evidence arrives. An item
*holds* when it is ticked and its evidence is not failing; an environment is
ready when every item holds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from . import mattermost as mm
from .integration import has_credentials, verify_bot
from .store import Store
from .store.checklist import NOT_WEBHOOK_ACTIONS

OK, FAILING, NOT_YET = "ok", "failing", "not yet"
# Evidence that does not stop an item from holding, but is not ticked by itself:
# an admin has to tick it knowingly (an account login, which is not a bot).
WARNING = "warning"
EVIDENCE_TICKER = "bridge (evidence)"


@dataclass
class Evidence:
    state: str  # ok / failing / not yet
    detail: str
    at: float | None = None
    log_filters: dict[str, str] = field(default_factory=dict)  # link into the log page


@dataclass
class Item:
    key: str
    label: str
    help: str
    evidence: Callable[[Store, dict, dict], Evidence] | None = None  # None: manual only


@dataclass
class ItemState:
    item: Item
    ticked: bool
    ticked_by: str
    ticked_at: float | None
    evidence: Evidence | None

    @property
    def holds(self) -> bool:
        return self.ticked and (self.evidence is None or self.evidence.state != FAILING)

    @property
    def stale_tick(self) -> bool:
        """Ticked, but the evidence now says otherwise: nobody should trust it."""
        return self.ticked and self.evidence is not None and self.evidence.state == FAILING


@dataclass
class EnvironmentChecklist:
    env: str
    items: list[ItemState]

    @property
    def done(self) -> int:
        return sum(state.holds for state in self.items)

    @property
    def total(self) -> int:
        return len(self.items)

    @property
    def ready(self) -> bool:
        return self.done == self.total


# -- evidence -----------------------------------------------------------------------------


def _bot_verified(store: Store, settings: dict, context: dict) -> Evidence:
    filters = {"env": settings["name"], "direction": "outbound"}
    if settings["bot_user_id"]:
        if not settings["bot_is_bot"] and settings["auth_mode"] == "login":
            return Evidence(
                WARNING,
                f"@{settings['bot_username']} signs in by account login: a regular user "
                "account, not a bot account (its posts show under that person's name); "
                "tick this if that is intended",
                settings["verified_at"],
                filters,
            )
        if not settings["bot_is_bot"]:
            return Evidence(
                FAILING,
                f"@{settings['bot_username']} is a regular user, not a bot account",
                settings["verified_at"],
                filters,
            )
        return Evidence(
            OK,
            f"@{settings['bot_username']} verified, a bot account "
            f"(Mattermost {settings['server_version'] or '?'})",
            settings["verified_at"],
            filters,
        )
    failure = store.last_log(settings["name"], "outbound", outcome="error", action="verify")
    if failure and settings["server_url"] and has_credentials(settings):
        return Evidence(FAILING, failure["error"], failure["ts"], {**filters, "outcome": "error"})
    if failure:
        # Nothing saved yet: a failed try of typed settings is not the integration failing.
        return Evidence(
            NOT_YET,
            f"verify the token on the authentication screen (last try, not saved: "
            f"{failure['error']})",
            failure["ts"],
            {**filters, "outcome": "error"},
        )
    return Evidence(NOT_YET, "verify the token on the authentication screen")


def _separate_bot(store: Store, settings: dict, context: dict) -> Evidence:
    evidence = _bot_verified(store, settings, context)
    if evidence.state not in (OK, WARNING):
        return evidence
    test_bot = context["test"]["bot_user_id"]
    if test_bot and test_bot == settings["bot_user_id"]:
        return Evidence(
            FAILING,
            f"@{settings['bot_username']} is also the test bot: production "
            "needs its own bot account",
            settings["verified_at"],
            evidence.log_filters,
        )
    if not test_bot:
        return Evidence(
            evidence.state,
            evidence.detail + "; the test bot is not verified yet, so the difference is unchecked",
            evidence.at,
            evidence.log_filters,
        )
    return Evidence(
        evidence.state,
        evidence.detail + "; differs from the test bot",
        evidence.at,
        evidence.log_filters,
    )


def watched_channels(settings: dict) -> list[str]:
    """The mirror channel and every mapped notification channel, each once."""
    channels = [settings["mirror_channel_id"], *settings["notify_map"].values()]
    return sorted({c for c in channels if c})


def _membership(store: Store, settings: dict, context: dict) -> Evidence:
    channels = watched_channels(settings)
    if not channels:
        return Evidence(NOT_YET, "choose the mirror channel first")
    check = store.checks(settings["name"]).get("bot_member")
    filters = {"env": settings["name"], "direction": "outbound"}
    if check is None:
        return Evidence(NOT_YET, "press Re-check to ask Mattermost")
    if check["subject"] != ",".join(channels):
        return Evidence(
            NOT_YET,
            "the channels changed since the last check: press Re-check",
            check["checked_at"],
            filters,
        )
    return Evidence(check["state"], check["detail"], check["checked_at"], filters)


def _auth_filled(store: Store, settings: dict, context: dict) -> Evidence:
    credential = "account login" if settings["auth_mode"] == "login" else "bot token"
    missing = [
        label
        for label, present in (
            ("server URL", settings["server_url"]),
            (credential, has_credentials(settings)),
            ("webhook token", settings["webhook_token"]),
        )
        if not present
    ]
    if missing:
        return Evidence(NOT_YET, "missing: " + ", ".join(missing))
    return Evidence(OK, f"server URL, {credential} and webhook token saved", settings["updated_at"])


def _channel_ids(store: Store, settings: dict, context: dict) -> Evidence:
    if not settings["mirror_channel_id"]:
        return Evidence(NOT_YET, "no mirror channel id yet")
    ids = [f"mirror {settings['mirror_channel_name'] or ''} = {settings['mirror_channel_id']}"]
    ids += [f"{kind} = {channel}" for kind, channel in sorted(settings["notify_map"].items())]
    return Evidence(OK, "; ".join(ids), settings["updated_at"])


def _mapping(store: Store, settings: dict, context: dict) -> Evidence:
    if not settings["mirror_channel_id"]:
        return Evidence(NOT_YET, "choose the mirror channel")
    if not settings["notify_map"]:
        return Evidence(NOT_YET, "map at least one notification type to a channel")
    count = len(settings["notify_map"])
    return Evidence(
        OK,
        f"mirror channel chosen; {count} notification type{'' if count == 1 else 's'} mapped",
        settings["updated_at"],
    )


def _server_and_ids(store: Store, settings: dict, context: dict) -> Evidence:
    if not settings["server_url"]:
        return Evidence(NOT_YET, "no server URL yet")
    evidence = _channel_ids(store, settings, context)
    if evidence.state != OK:
        return evidence
    return Evidence(OK, f"{settings['server_url']}; {evidence.detail}", evidence.at)


def _test_message(store: Store, settings: dict, context: dict) -> Evidence:
    env = settings["name"]
    last = store.last_log(env, "outbound", outcome="ok", action="test_message")
    failed = store.last_log(env, "outbound", outcome="error", action="test_message")
    filters = {"env": env, "direction": "outbound"}
    if failed and (not last or failed["id"] > last["id"]):
        return Evidence(
            FAILING,
            f"the last test message failed: {failed['error']} Fix it, then send one again.",
            failed["ts"],
            {**filters, "outcome": "error"},
        )
    if last:
        return Evidence(OK, f"posted as {last['post_id']}", last["ts"], filters)
    return Evidence(NOT_YET, "press Send test message on the configuration screen")


def _active_and_tested(store: Store, settings: dict, context: dict) -> Evidence:
    evidence = _test_message(store, settings, context)
    if not settings["active"]:
        return Evidence(
            NOT_YET if evidence.state != FAILING else FAILING,
            "the integration is not active yet; " + evidence.detail,
            evidence.at,
            evidence.log_filters,
        )
    return Evidence(
        evidence.state,
        "active; test message: " + evidence.detail,
        evidence.at,
        evidence.log_filters,
    )


def _webhook(store: Store, settings: dict, context: dict) -> Evidence:
    env = settings["name"]
    if not settings["webhook_token"]:
        return Evidence(NOT_YET, "save the outgoing webhook's token on the authentication screen")
    filters = {"env": env, "direction": "inbound"}
    valid = store.last_valid_inbound(env)
    rejected = store.last_log(env, "inbound", outcome="rejected", not_actions=NOT_WEBHOOK_ACTIONS)
    # Rejections are counted in one row per window: its last_ts is the latest.
    refused_at = rejected and (rejected["last_ts"] or rejected["ts"])
    if rejected and (not valid or refused_at > valid["ts"]):
        return Evidence(
            FAILING,
            f"the last call was refused: {rejected['error']}",
            refused_at,
            {**filters, "outcome": "rejected"},
        )
    if valid:
        return Evidence(OK, "token set; a valid call arrived", valid["ts"], filters)
    return Evidence(
        NOT_YET, "token set; waiting for Mattermost's first call (post in the mirror channel)"
    )


def _agent_call(action: str, not_yet: str, ok: str) -> Callable[[Store, dict, dict], Evidence]:
    """Evidence from Mattermost's calls for agents: the slash command or a button."""

    def evidence(store: Store, settings: dict, context: dict) -> Evidence:
        env = settings["name"]
        filters = {"env": env, "direction": "inbound"}
        valid = store.last_log(env, "inbound", outcome="ok", action=action)
        if valid:
            return Evidence(OK, ok, valid["ts"], filters)
        rejected = store.last_log(env, "inbound", outcome="rejected", action=action)
        if rejected:
            return Evidence(
                FAILING,
                f"the last call was refused: {rejected['error']}",
                rejected["last_ts"] or rejected["ts"],
                {**filters, "outcome": "rejected"},
            )
        return Evidence(NOT_YET, not_yet)

    return evidence


_slash_command = _agent_call(
    "command",
    "save the slash command's token, then type /bridge status in Mattermost",
    "a valid /bridge call arrived",
)
_buttons_work = _agent_call(
    "button",
    "click Claim on a conversation's root post (Mattermost must reach the action URL)",
    "a valid button click arrived",
)


def _end_to_end(store: Store, settings: dict, context: dict) -> Evidence:
    conversation = store.end_to_end_conversation(settings["name"])
    if conversation is None:
        return Evidence(
            NOT_YET, "start a chat, write a second message, and answer it in the Mattermost thread"
        )
    return Evidence(
        OK,
        f"conversation with {conversation['visitor_name']}: root post, visitor "
        "reply and agent reply",
        conversation["completed_at"],
        {"env": settings["name"]},
    )


# Both environments: Mattermost's calls for agents (issue 10).
AGENT_ITEMS = [
    Item(
        "slash_command",
        "Slash command set up",
        "/bridge with the command token saved; a valid command call received.",
        _slash_command,
    ),
    Item(
        "buttons",
        "Buttons work",
        "Claim / Close / Reopen on a root post; a valid button call received.",
        _buttons_work,
    ),
]

TEST_ITEMS = [
    Item(
        "bot_token",
        "Bot account and token",
        "Token verified via users/me and it is a bot account.",
        _bot_verified,
    ),
    Item(
        "bot_member",
        "Bot is a member of the channels",
        "Of the mirror channel and every notification channel, as Mattermost says on Re-check.",
        _membership,
    ),
    Item(
        "channel_ids",
        "Channel ids noted",
        "The ids of the mirror and notification channels.",
        _channel_ids,
    ),
    Item(
        "auth_filled",
        "Authentication screen filled",
        "Server URL, bot token, webhook token.",
        _auth_filled,
    ),
    Item(
        "mapping",
        "Channel chosen and notifications mapped",
        "A mirror channel and at least one notification type.",
        _mapping,
    ),
    Item(
        "test_message",
        "Test message posted",
        "Send test message on the configuration screen.",
        _test_message,
    ),
    Item(
        "webhook",
        "Outgoing webhook set up",
        "Token saved and a valid call received from Mattermost.",
        _webhook,
    ),
    Item(
        "end_to_end",
        "End-to-end tested",
        "A conversation with a root post, a threaded visitor reply and an agent reply routed back.",
        _end_to_end,
    ),
    *AGENT_ITEMS,
]

PRODUCTION_ITEMS = [
    Item(
        "separate_bot",
        "Separate bot account and token",
        "Verified, a bot, and not the test environment's bot.",
        _separate_bot,
    ),
    Item(
        "bot_member",
        "Bot is a member of the production channels",
        "Checked against Mattermost on Re-check.",
        _membership,
    ),
    Item("ids_filled", "Server URL and channel ids filled", "", _server_and_ids),
    Item(
        "inbound",
        "Inbound endpoint reachable and token set",
        "A valid webhook call received in production.",
        _webhook,
    ),
    Item("active_tested", "Integration active and test message verified", "", _active_and_tested),
    Item(
        "rollback",
        "Rollback known",
        "Deactivate on the configuration screen stops the "
        "mirroring in both directions at once: nothing is posted and replies are ignored.",
        None,
    ),
    *AGENT_ITEMS,
]

ITEMS = {"test": TEST_ITEMS, "production": PRODUCTION_ITEMS}


def item_for(env: str, key: str) -> Item | None:
    return next((item for item in ITEMS.get(env, []) if item.key == key), None)


def checklist(store: Store, env: str) -> EnvironmentChecklist:
    """The environment's checklist now; evidence that arrived ticks its item."""
    context = {name: store.environment(name) for name in ITEMS}
    settings = context[env]
    ticks = store.ticks(env)
    states = []
    for item in ITEMS[env]:
        evidence = item.evidence(store, settings, context) if item.evidence else None
        tick = ticks.get(item.key)
        if evidence and evidence.state == OK and tick is None:
            # Evidence ticks an item once; an admin's later untick is respected.
            store.set_tick(env, item.key, True, EVIDENCE_TICKER)
            tick = store.ticks(env)[item.key]
        states.append(
            ItemState(
                item=item,
                ticked=bool(tick and tick["ticked"]),
                ticked_by=tick["ticked_by"] if tick else "",
                ticked_at=tick["ticked_at"] if tick else None,
                evidence=evidence,
            )
        )
    return EnvironmentChecklist(env, states)


def recheck(store: Store, env: str, client: mm.MattermostClient) -> None:
    """Ask Mattermost again: who the token is, and is the bot in every channel."""
    settings = store.environment(env)
    try:
        settings = store.update_environment(env, **verify_bot(client).as_fields())
    except mm.MattermostError as exc:
        store.save_check(
            env,
            "bot_member",
            FAILING,
            f"cannot verify the token: {exc}",
            ",".join(watched_channels(settings)),
        )
        return
    channels = watched_channels(settings)
    if not channels:
        return
    missing, errors = [], []
    for channel_id in channels:
        try:
            if not client.is_member(channel_id, settings["bot_user_id"]):
                missing.append(channel_id)
        except mm.MattermostError as exc:
            errors.append(f"{channel_id}: {exc}")
    if missing or errors:
        names = settings["channel_names"]
        missing = [f"{names[c]} ({c})" if c in names else c for c in missing]
        detail = "; ".join(
            (
                [f"not a member of {', '.join(missing)} — add @{settings['bot_username']}"]
                if missing
                else []
            )
            + errors
        )
        store.save_check(env, "bot_member", FAILING, detail, ",".join(channels))
    else:
        store.save_check(
            env,
            "bot_member",
            OK,
            f"member of all {len(channels)} channel{'' if len(channels) == 1 else 's'}",
            ",".join(channels),
        )


def as_markdown(lists: list[EnvironmentChecklist], now: str, by: str) -> str:
    """The checklist for a change ticket."""
    lines = ["# Mattermost Bridge readiness checklist", "", f"Exported {now} by {by}.", ""]
    for checklist_ in lists:
        status = "READY" if checklist_.ready else "not ready"
        lines += [
            f"## {checklist_.env.capitalize()}: {checklist_.done}/{checklist_.total} ({status})",
            "",
        ]
        for state in checklist_.items:
            box = "x" if state.ticked else " "
            line = f"- [{box}] **{state.item.label}**"
            if state.ticked:
                line += f" — ticked by {state.ticked_by}"
            if state.evidence:
                line += f" — evidence: {state.evidence.state}: {state.evidence.detail}"
            if state.stale_tick:
                line += " — **ticked, but the evidence is failing**"
            lines.append(line)
        lines.append("")
    return "\n".join(lines)
