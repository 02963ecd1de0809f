"""Inbound throughput: Mattermost's outgoing webhook calls into the bridge.

For 2 and then 4 gunicorn workers: conversations are started through the
host API (their root posts land in the stand-in), then distinct agent
replies are created in those threads in the stand-in (no hook registered,
so nothing fires by itself). This module delivers the form-encoded payloads
itself from ~8 concurrent clients to ``POST /hooks/mattermost/test``, and the
same number to the bare baseline route doing only ``GET /api/v4/posts/{id}``.
The bridge answers before it routes (the inbox): a bridge run's clock stops
when its last reply is routed, not at its last answer.
Rounds alternate which side goes first. Afterwards every delivered post must
be stored exactly once: checked through the host API (``GET
/api/v1/conversations/<id>/messages``) and the SQLite file (read-only).
"""

from __future__ import annotations

import collections
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

from .common import (
    WEBHOOK_TOKEN,
    BenchBridge,
    CpuMeter,
    Deadline,
    Figure,
    SectionResult,
    StandinProcess,
    baseline_server,
    client_session,
    worker_rss,
)

CONCURRENCY = 8
CONVERSATIONS = 16
BUDGET_RATIO = 0.7
REPLY = "Reply #{i}: yes, early check-in at 11 is fine, the room will be ready. See you then!"
MARKER = re.compile(r"^Reply #(\d+):")


def payload_for(info: dict[str, Any], post: dict[str, Any]) -> dict[str, str]:
    """What Mattermost sends for ``post`` (model.OutgoingWebhookPayload.ToFormValues)."""
    return {
        "token": WEBHOOK_TOKEN,
        "team_id": info["team_id"],
        "team_domain": info["team_name"],
        "channel_id": info["support_id"],
        "channel_name": info["support_name"],
        "timestamp": str(post["create_at"] // 1000),
        "user_id": info["agent_id"],
        "user_name": info["agent_username"],
        "post_id": post["id"],
        "text": post["message"],
        "trigger_word": "",
        "file_ids": "",
    }


def deliver(
    url: str,
    payloads: list[dict[str, str]],
    deadline: Deadline,
    *,
    concurrency: int = CONCURRENCY,
    settled: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """POST every payload from ``concurrency`` threads; wall time and status counts.

    :param settled: waits until the server has finished the work behind its
        answers. The bridge answers a webhook before it looks the post up and
        stores the reply; the clock stops when the last reply is routed, so
        the figure is the real path (store + lookup + route), not the answer.
    """
    local = threading.local()
    sessions = []
    lock = threading.Lock()

    def send(payload: dict[str, str]) -> tuple[str, int | str]:
        if deadline.passed:
            return payload["post_id"], "skipped: time bound"
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = client_session()
            with lock:
                sessions.append(session)
        try:
            response = session.post(url, data=payload, timeout=30)
            return payload["post_id"], response.status_code
        except Exception as exc:  # noqa: BLE001 - counted, not raised
            return payload["post_id"], f"{type(exc).__name__}"

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency, thread_name_prefix="bench-hook") as pool:
        outcomes = list(pool.map(send, payloads))
    if settled is not None:
        settled()
    elapsed = time.perf_counter() - started
    for session in sessions:
        session.close()
    statuses = collections.Counter(str(status) for _, status in outcomes)
    return {
        "sent": sum(1 for _, status in outcomes if not str(status).startswith("skipped")),
        "elapsed_s": elapsed,
        "statuses": dict(statuses),
        "delivered_ids": [
            post_id for post_id, status in outcomes if not str(status).startswith("skipped")
        ],
    }


def verify(
    bridge: BenchBridge, key: str, conversation_ids: list[str], delivered: list[dict[str, Any]]
) -> dict[str, Any]:
    """Lost (delivered, not stored) and doubled (stored twice), by API and by the db file."""
    by_api: collections.Counter = collections.Counter()
    for conversation_id in conversation_ids:
        after = 0
        for _ in range(1000):  # bounded paging, 100 per page
            response = bridge.api(
                "GET", f"/api/v1/conversations/{conversation_id}/messages?after={after}", key
            )
            messages = response.json()["messages"]
            for message in messages:
                found = MARKER.match(message["text"]) if message["direction"] == "agent" else None
                if found:
                    by_api[int(found.group(1))] += 1
            if len(messages) < 100:
                break
            after = messages[-1]["id"]
    wanted = collections.Counter(post["index"] for post in delivered)
    api_lost = sorted(i for i in wanted if by_api[i] == 0)
    api_doubled = sorted(i for i, n in by_api.items() if n > 1)

    db_path = bridge.instance / "bridge.db"
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT post_id, COUNT(*) FROM messages WHERE env = 'test'"
            " AND direction = 'agent' GROUP BY post_id"
        ).fetchall()
        log_rows = conn.execute(
            "SELECT outcome, error, COUNT(*) FROM log WHERE direction = 'inbound'"
            " AND action = 'webhook' GROUP BY outcome, error"
        ).fetchall()
    finally:
        conn.close()
    stored = dict(rows)
    ids = {post["id"] for post in delivered}
    db_lost = sorted(post_id for post_id in ids if post_id not in stored)
    db_doubled = sorted(post_id for post_id, n in stored.items() if n > 1)
    return {
        "delivered": len(ids),
        "lost": max(len(api_lost), len(db_lost)),
        "doubled": max(len(api_doubled), len(db_doubled)),
        "api": {
            "stored": sum(by_api.values()),
            "lost": len(api_lost),
            "doubled": len(api_doubled),
            "lost_sample": api_lost[:10],
        },
        "db": {
            "stored": sum(stored.values()),
            "lost": len(db_lost),
            "doubled": len(db_doubled),
            "lost_sample": db_lost[:10],
        },
        "log_outcomes": [{"outcome": o, "detail": e, "count": n} for o, e, n in log_rows],
    }


def run_workers(workers: int, workdir: Path, *, quick: bool, deadline: Deadline) -> dict[str, Any]:
    # Long rounds: each bridge round ends with its last few routings (a tail of
    # 5-20 ms); steady-state throughput is what the budget speaks of.
    rounds, per_round, warmup = (2, 80, 16) if quick else (12, 150, 24)
    mm = StandinProcess()
    bridge = BenchBridge(workdir / f"inbound-bridge-{workers}w", workers=workers)
    baseline = None
    try:
        mm.start()
        info = mm.info
        bridge.start()
        key = bridge.configure(info)
        baseline = baseline_server(workdir, workers, info)
        baseline.start()

        conversation_ids, roots = [], []
        for i in range(CONVERSATIONS):
            response = bridge.api(
                "POST",
                "/api/v1/conversations",
                key,
                json={"visitor": {"name": f"Visitor {i}"}, "text": f"Hi {i}"},
            )
            body = response.json()
            if response.status_code != 201 or not body.get("root_post_id"):
                raise RuntimeError(f"cannot start a conversation: {response.text[:300]}")
            conversation_ids.append(body["id"])
            roots.append(body["root_post_id"])
        total = warmup + rounds * per_round
        posts = mm.posts(
            [
                {"message": REPLY.format(i=i), "root_id": roots[i % CONVERSATIONS]}
                for i in range(total)
            ]
        )
        for i, post in enumerate(posts):
            post["index"] = i
        payloads = [payload_for(info, post) for post in posts]
        hook_url = f"{bridge.url}/hooks/mattermost/test"
        base_url = f"{baseline.url}/hooks/mattermost/test"

        # Warm-up: both sides, the bridge's first lookups (user cache) included.
        # Polled every 2 ms: the clock stops when the last reply is routed, not
        # up to a test's 50 ms poll later (a round of 100 calls takes ~0.4 s).
        routed = partial(bridge.wait_routed, timeout=60, interval=0.002)
        deliver(base_url, payloads[:warmup], deadline)
        warm = deliver(hook_url, payloads[:warmup], deadline, settled=routed)
        sides = {"bridge": [], "baseline": []}
        statuses = {
            "bridge": collections.Counter(warm["statuses"]),
            "baseline": collections.Counter(),
        }
        delivered_ids = set(warm["delivered_ids"])
        for round_no in range(rounds):
            chunk = payloads[warmup + round_no * per_round : warmup + (round_no + 1) * per_round]
            order = ("baseline", "bridge") if round_no % 2 == 0 else ("bridge", "baseline")
            for side in order:
                if side == "bridge":  # its worker too: it does the WAL checkpoints
                    meter = CpuMeter(*bridge.pids())
                    run = deliver(hook_url, chunk, deadline, settled=routed)
                    delivered_ids.update(run["delivered_ids"])
                else:
                    meter = CpuMeter(baseline.pid)
                    run = deliver(base_url, chunk, deadline)
                run["worker_cpu_s"] = meter.used()
                sides[side].append(run)
                statuses[side].update(run["statuses"])

        memory = [
            {
                "server": f"inbound: bridge ({workers} workers)",
                "kind": "bridge",
                "rss_mb": worker_rss(bridge.pid),
            },
            {
                "server": f"inbound: baseline ({workers} workers)",
                "kind": "baseline",
                "rss_mb": worker_rss(baseline.pid),
            },
        ]
        routed()  # every bridge run already waited for its routing; nothing should be left
        checked = verify(
            bridge, key, conversation_ids, [post for post in posts if post["id"] in delivered_ids]
        )
        standin = mm.call("stats")
    finally:
        if baseline is not None:
            baseline.stop()
        bridge.stop()
        mm.stop()

    def rate(runs: list[dict[str, Any]]) -> float | None:
        sent = sum(run["sent"] for run in runs)
        elapsed = sum(run["elapsed_s"] for run in runs)
        return sent / elapsed if elapsed and sent else None

    def cpu_ms(runs: list[dict[str, Any]]) -> float | None:
        sent = sum(run["sent"] for run in runs)
        return 1000 * sum(run["worker_cpu_s"] for run in runs) / sent if sent else None

    return {
        "workers": workers,
        "bridge_worker_cpu_ms_per_request": cpu_ms(sides["bridge"]),
        "baseline_worker_cpu_ms_per_request": cpu_ms(sides["baseline"]),
        "round_ratios": [
            round((b["sent"] / b["elapsed_s"]) / (a["sent"] / a["elapsed_s"]), 3)
            for b, a in zip(sides["bridge"], sides["baseline"], strict=True)
        ],
        "concurrency": CONCURRENCY,
        "rounds": rounds,
        "per_round": per_round,
        "warmup": warmup,
        "bridge_rps": rate(sides["bridge"]),
        "baseline_rps": rate(sides["baseline"]),
        "bridge_runs": [
            {k: v for k, v in run.items() if k != "delivered_ids"} for run in sides["bridge"]
        ],
        "baseline_runs": [
            {k: v for k, v in run.items() if k != "delivered_ids"} for run in sides["baseline"]
        ],
        "statuses": {side: dict(counter) for side, counter in statuses.items()},
        "check": checked,
        "standin": standin,
        "memory": memory,
    }


def run(workdir: Path, *, quick: bool) -> SectionResult:
    result = SectionResult()
    deadline = Deadline(60 if quick else 120)
    section = "Inbound"
    for workers in (2, 4):
        data = run_workers(workers, workdir, quick=quick, deadline=deadline)
        result.raw[f"{workers}_workers"] = data
        result.memory += data.pop("memory")
        bridge_rps, base_rps = data["bridge_rps"], data["baseline_rps"]
        f = result.figures
        f.append(Figure(section, f"{workers}w: baseline throughput", base_rps, "req/s"))
        f.append(Figure(section, f"{workers}w: bridge throughput", bridge_rps, "req/s"))
        base_cpu = data["baseline_worker_cpu_ms_per_request"]
        bridge_cpu = data["bridge_worker_cpu_ms_per_request"]
        if base_cpu and bridge_cpu:
            f.append(
                Figure(
                    section,
                    f"{workers}w: baseline worker CPU per request",
                    round(base_cpu, 3),
                    "ms",
                )
            )
            f.append(
                Figure(
                    section,
                    f"{workers}w: bridge worker CPU per request",
                    round(bridge_cpu, 3),
                    "ms",
                )
            )
        ratio = bridge_rps / base_rps if bridge_rps and base_rps else None
        data["ratio"] = ratio
        f.append(
            Figure(
                section,
                f"{workers}w: throughput ratio bridge/baseline",
                round(ratio, 3) if ratio else None,
                "x",
                f">= {BUDGET_RATIO}x",
                bool(ratio and ratio >= BUDGET_RATIO),
                note="per round: " + ", ".join(f"{r:.2f}" for r in data["round_ratios"]),
            )
        )
        non_200 = {
            side: sum(n for status, n in counts.items() if status != "200")
            for side, counts in data["statuses"].items()
        }
        check = data["check"]
        f.append(
            Figure(
                section,
                f"{workers}w: lost (delivered {check['delivered']}, not stored)",
                check["lost"],
                "",
                "0",
                check["lost"] == 0,
            )
        )
        f.append(
            Figure(
                section,
                f"{workers}w: doubled (stored twice)",
                check["doubled"],
                "",
                "0",
                check["doubled"] == 0,
            )
        )
        total_non_200 = non_200["bridge"] + non_200["baseline"]
        f.append(
            Figure(
                section,
                f"{workers}w: non-200 answers",
                total_non_200,
                "",
                "0",
                total_non_200 == 0,
                note=f"bridge {non_200['bridge']}, baseline {non_200['baseline']}",
            )
        )
    return result
