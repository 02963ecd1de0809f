"""Outbound latency: host API -> one Mattermost post, against a bare Flask route.

Bridge: ``POST /api/v1/conversations/<id>/messages`` (API key check, store the
message, claim it, one ``POST /api/v4/posts`` as a reply in the thread, log
the call, mark it sent). Baseline: ``bench.baseline_app`` doing only that one
``requests.Session.post`` to the same stand-in. Both under the same gunicorn
command (gunicorn.conf.py, 2 workers), both up at once, measured in interleaved blocks
(alternating which goes first) from one client Session, sequentially, after
a warm-up.
"""

from __future__ import annotations

import time
from pathlib import Path

from .common import (
    BenchBridge,
    Deadline,
    Figure,
    SectionResult,
    StandinProcess,
    baseline_server,
    client_session,
    interleaved_rounds,
    sent,
    summary_ms,
    timed_request,
    worker_rss,
)

WORKERS = 2
CONVERSATIONS = 10
BUDGET_RATIO = 1.3
TEXT = (
    "Hi, we booked the family room for next weekend. Could we check in early, "
    "around 11? Booking ref 4711-{i}."
)


def run(workdir: Path, *, quick: bool) -> SectionResult:
    rounds, per_round, warmup = (2, 30, 15) if quick else (8, 60, 30)
    result = SectionResult()
    deadline = Deadline(60 if quick else 120)
    mm = StandinProcess()
    bridge = BenchBridge(workdir / "outbound-bridge", workers=WORKERS)
    baseline = None
    client = client_session()
    try:
        mm.start()
        info = mm.info
        bridge.start()
        key = bridge.configure(info)
        baseline = baseline_server(workdir, WORKERS, info)
        baseline.start()

        # Threads to post into: conversations through the bridge, plain root posts for the
        # baseline (both end up as replies with root_id in the same stand-in channel).
        conversation_ids = []
        for i in range(CONVERSATIONS):
            response = bridge.api(
                "POST",
                "/api/v1/conversations",
                key,
                json={"visitor": {"name": "Hans Host"}, "text": f"Hello {i}"},
            )
            if response.status_code != 201 or response.json().get("status") != "sent":
                raise RuntimeError(f"cannot start a conversation: {response.text[:300]}")
            conversation_ids.append(response.json()["id"])
        roots = [
            post["id"]
            for post in mm.posts(
                [
                    {"user": "bot", "message": f"**Hans Host** started a web chat:\nHello {i}"}
                    for i in range(CONVERSATIONS)
                ]
            )
        ]

        bridge_headers = {"Authorization": f"Bearer {key}"}
        errors = {"bridge": [], "baseline": []}
        samples = {"bridge": [], "baseline": []}
        counter = {"n": 0}

        def call(side: str, record: bool) -> None:
            i = counter["n"]
            counter["n"] += 1
            body = {"text": TEXT.format(i=i)}
            if side == "bridge":
                conversation_id = conversation_ids[i % CONVERSATIONS]
                url = f"{bridge.url}/api/v1/conversations/{conversation_id}/messages"
                headers = bridge_headers
            else:
                url = f"{baseline.url}/conversations/{roots[i % CONVERSATIONS]}/messages"
                headers = {}
            timed_request(
                lambda: client.post(url, json=body, headers=headers, timeout=30),
                sent,
                record=record,
                samples=samples[side],
                errors=errors[side],
            )

        cpu = interleaved_rounds(
            call,
            {"baseline": baseline.pid, "bridge": bridge.pids()},
            rounds=rounds,
            per_round=per_round,
            warmup=warmup,
            deadline=deadline,
        )

        # Reference: the stand-in alone, straight from this process (no gunicorn hop).
        direct = []
        for i in range(30 if quick else 100):
            started = time.perf_counter()
            response = client.post(
                f"{info['url']}/api/v4/posts",
                json={
                    "channel_id": info["support_id"],
                    "message": TEXT.format(i=i),
                    "root_id": roots[0],
                    "pending_post_id": f"direct-{i}:0",
                },
                headers={"Authorization": f"Bearer {info['bot_token']}"},
                timeout=30,
            )
            if response.status_code == 201:
                direct.append(time.perf_counter() - started)

        result.memory.append(
            {
                "server": f"outbound: bridge ({WORKERS} workers)",
                "kind": "bridge",
                "rss_mb": worker_rss(bridge.pid),
            }
        )
        result.memory.append(
            {
                "server": f"outbound: baseline ({WORKERS} workers)",
                "kind": "baseline",
                "rss_mb": worker_rss(baseline.pid),
            }
        )
        result.raw["standin"] = mm.call("stats")
    finally:
        client.close()
        if baseline is not None:
            baseline.stop()
        bridge.stop()
        mm.stop()

    bridge_stats = summary_ms(samples["bridge"]) if samples["bridge"] else None
    base_stats = summary_ms(samples["baseline"]) if samples["baseline"] else None
    direct_stats = summary_ms(direct) if direct else None
    result.raw.update(
        {
            "workers": WORKERS,
            "rounds": rounds,
            "per_round": per_round,
            "warmup": warmup,
            "bridge": bridge_stats,
            "baseline": base_stats,
            "standin_direct_post": direct_stats,
            "worker_cpu_ms_per_request": {
                side: round(1000 * cpu[side] / len(samples[side]), 3) if samples[side] else None
                for side in cpu
            },
            "errors": {side: len(v) for side, v in errors.items()},
            "error_samples": {side: v[:5] for side, v in errors.items()},
        }
    )
    section = "Outbound"
    if not (bridge_stats and base_stats):
        result.figures.append(
            Figure(
                section,
                "median latency ratio bridge/baseline",
                None,
                "x",
                f"<= {BUDGET_RATIO}x",
                False,
                "no successful samples",
            )
        )
        return result
    ratio = bridge_stats["median_ms"] / base_stats["median_ms"]
    ratio_p95 = bridge_stats["p95_ms"] / base_stats["p95_ms"]
    result.raw["ratio_median"] = round(ratio, 3)
    result.raw["ratio_p95"] = round(ratio_p95, 3)
    n = bridge_stats["n"]
    f = result.figures
    f.append(
        Figure(section, f"baseline median (n={base_stats['n']})", base_stats["median_ms"], "ms")
    )
    f.append(Figure(section, "baseline p95", base_stats["p95_ms"], "ms"))
    f.append(Figure(section, f"bridge median (n={n})", bridge_stats["median_ms"], "ms"))
    f.append(Figure(section, "bridge p95", bridge_stats["p95_ms"], "ms"))
    f.append(
        Figure(
            section,
            "bridge - baseline, median",
            round(bridge_stats["median_ms"] - base_stats["median_ms"], 3),
            "ms",
        )
    )
    for side in ("baseline", "bridge"):
        value = result.raw["worker_cpu_ms_per_request"][side]
        f.append(Figure(section, f"{side} worker CPU per request", value, "ms"))
    if direct_stats:
        f.append(
            Figure(
                section,
                "stand-in alone: POST /api/v4/posts median",
                direct_stats["median_ms"],
                "ms",
                note="new TCP connection per call",
            )
        )
    f.append(
        Figure(
            section,
            "median ratio bridge/baseline",
            round(ratio, 3),
            "x",
            f"<= {BUDGET_RATIO}x",
            ratio <= BUDGET_RATIO,
            note="same stand-in, same gunicorn flags, interleaved rounds",
        )
    )
    f.append(Figure(section, "p95 ratio bridge/baseline", round(ratio_p95, 3), "x"))
    failed = sum(len(v) for v in errors.values())
    f.append(Figure(section, "failed requests (both sides)", failed, "", "0", failed == 0))
    return result
