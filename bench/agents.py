"""Agents in Mattermost: a button click and a ``/bridge list`` answer beside a bare route.

Bridge: ``POST /hooks/mattermost/test/action`` with the JSON Mattermost sends
for a click on *Claim* (HMAC checked in constant time, the conversation and
its root post read, the assignee and a log row written in one transaction,
the root post's update built), and ``POST /hooks/mattermost/test/command``
with the form of ``/bridge list`` (token compared, 12 open conversations
listed, a log row). Neither calls Mattermost while Mattermost waits.
Baseline: ``bench.baseline_app``'s routes of the same paths, which read the
same body and answer a fixed ephemeral text. Same gunicorn command (2
workers), interleaved rounds from one client Session, sequentially, after a
warm-up, like the sources benchmark. Budget: the webhook's, at least 0.7x
(baseline median / bridge median).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from bridge.buttons import signature

from .common import (
    BenchBridge,
    Deadline,
    Figure,
    SectionResult,
    StandinProcess,
    baseline_server,
    client_session,
    interleaved_rounds,
    summary_ms,
    timed_request,
)

WORKERS = 2
COMMAND_TOKEN = "benchcommandtoken012345678"
CONVERSATIONS = 12
BUDGET_RATIO = 0.7


def _answered(kind: str, side: str, response) -> bool:
    """A 200 with the answer that side gives: the bridge's click rewrites the root
    post, the bare route's only says so; both answer a command ephemerally."""
    if response.status_code != 200:
        return False
    if kind == "click":
        return ("update" if side == "bridge" else "ephemeral_text") in response.json()
    return response.json()["response_type"] == "ephemeral"


def run(workdir: Path, *, quick: bool) -> SectionResult:
    rounds, per_round, warmup = (2, 30, 15) if quick else (8, 60, 30)
    result = SectionResult()
    deadline = Deadline(60 if quick else 150)
    mm = StandinProcess()
    bridge = BenchBridge(workdir / "agents-bridge", workers=WORKERS)
    baseline = None
    client = client_session()
    samples: dict[str, list[float]] = {}
    errors: dict[str, list[str]] = {}
    try:
        mm.start()
        info = mm.info
        bridge.start()
        key = bridge.configure(info)
        bridge.cli("configure", "test", "--command-token", COMMAND_TOKEN)
        started = [
            bridge.api(
                "POST",
                "/api/v1/conversations",
                key,
                json={"visitor": {"name": f"Guest {i}"}, "text": "Is breakfast included?"},
            ).json()
            for i in range(CONVERSATIONS)
        ]
        target = started[-1]
        secret = bridge.env["BRIDGE_SECRET_KEY"]
        click = {
            "user_id": info["agent_id"],
            "user_name": info["agent_username"],
            "channel_id": info["support_id"],
            "channel_name": info["support_name"],
            "team_id": info["team_id"],
            "team_domain": info["team_name"],
            "post_id": target["root_post_id"],
            "trigger_id": "x" * 26,
            "type": "button",
            "context": {
                "conversation_id": target["id"],
                "action": "claim",
                "signature": signature(secret, target["id"], "claim"),
            },
        }
        form = {
            "token": COMMAND_TOKEN,
            "team_id": info["team_id"],
            "team_domain": info["team_name"],
            "channel_id": info["support_id"],
            "channel_name": info["support_name"],
            "user_id": info["agent_id"],
            "user_name": info["agent_username"],
            "command": "/bridge",
            "text": "list",
            "trigger_id": "x" * 26,
            "response_url": f"{info['url']}/hooks/commands/x",
        }
        baseline = baseline_server(workdir, WORKERS, info)
        baseline.start()
        servers = {"bridge": bridge.url, "baseline": baseline.url}
        for kind in ("click", "command"):
            samples.update({f"{kind} {side}": [] for side in servers})
            errors.update({f"{kind} {side}": [] for side in servers})

        def call(kind: str, side: str, record: bool) -> None:
            url = f"{servers[side]}/hooks/mattermost/test/{'action' if kind == 'click' else 'command'}"
            if kind == "click":
                send = partial(client.post, url, json=click, timeout=30)
            else:
                headers = {"Authorization": f"Token {COMMAND_TOKEN}"}
                send = partial(client.post, url, data=form, headers=headers, timeout=30)
            timed_request(
                send,
                partial(_answered, kind, side),
                record=record,
                samples=samples[f"{kind} {side}"],
                errors=errors[f"{kind} {side}"],
            )

        cpu = {}
        for kind in ("click", "command"):
            cpu[kind] = interleaved_rounds(
                lambda side, record, kind=kind: call(kind, side, record),
                {"baseline": baseline.pid, "bridge": bridge.pids()},
                rounds=rounds,
                per_round=per_round,
                warmup=warmup,
                deadline=deadline,
            )
        listed = client.post(
            f"{bridge.url}/hooks/mattermost/test/command",
            data=form,
            headers={"Authorization": f"Token {COMMAND_TOKEN}"},
            timeout=30,
        ).json()["text"]
        result.raw["listed_lines"] = len(listed.splitlines()) - 1
    finally:
        client.close()
        if baseline is not None:
            baseline.stop()
        bridge.stop()
        mm.stop()

    stats = {name: summary_ms(values) if values else None for name, values in samples.items()}
    result.raw.update(
        {
            "workers": WORKERS,
            "rounds": rounds,
            "per_round": per_round,
            "warmup": warmup,
            **stats,
            "worker_cpu_ms": {
                kind: {side: round(1000 * seconds, 1) for side, seconds in sides.items()}
                for kind, sides in cpu.items()
            },
            "errors": {name: len(v) for name, v in errors.items()},
            "error_samples": {name: v[:5] for name, v in errors.items()},
        }
    )
    section = "Agents"
    f = result.figures
    for kind, label in (("click", "button click (Claim)"), ("command", "/bridge list answer")):
        bridge_stats, base_stats = stats[f"{kind} bridge"], stats[f"{kind} baseline"]
        if not (bridge_stats and base_stats):
            f.append(Figure(section, label, None, "", note="no successful samples"))
            continue
        ratio = base_stats["median_ms"] / bridge_stats["median_ms"]
        f.append(Figure(section, f"{label}: bare route median", base_stats["median_ms"], "ms"))
        f.append(
            Figure(
                section,
                f"{label}: bridge median (n={bridge_stats['n']})",
                bridge_stats["median_ms"],
                "ms",
            )
        )
        f.append(
            Figure(
                section,
                f"{label}: added cost, median",
                round(bridge_stats["median_ms"] - base_stats["median_ms"], 3),
                "ms",
            )
        )
        f.append(
            Figure(
                section,
                f"{label}: bare/bridge median",
                round(ratio, 3),
                "x",
                f">= {BUDGET_RATIO}",
                ratio >= BUDGET_RATIO,
                "the bare route reads the body and answers; no database",
            )
        )
    failed = sum(len(v) for v in errors.values())
    f.append(Figure(section, "failed requests (all sides)", failed, "", "0", failed == 0))
    return result
