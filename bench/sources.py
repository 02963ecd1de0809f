"""A translated webhook: another system's JSON -> template -> one Mattermost post.

Bridge: ``POST /hooks/in/test/alertmanager`` with the Alertmanager example
payload and a Bearer token (secret check in constant time, JSON parse and depth
check, last payload kept, the example template rendered in the sandbox, the
notification stored, one ``POST /api/v4/posts``, outcome and log rows).
Baseline: ``bench.baseline_app``'s ``POST /hooks/in/<source>``, which reads the
same JSON and makes the same single post with a message formatted in Python.
Both under the same gunicorn command (2 sync workers), measured in interleaved
rounds from one client Session, sequentially, after a warm-up, like the
outbound benchmark. DESIGN.md sets no budget for it: the figures are reported.
"""

from __future__ import annotations

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
TOKEN = "bench-alertmanager-token-1"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(workdir: Path, *, quick: bool) -> SectionResult:
    rounds, per_round, warmup = (2, 30, 15) if quick else (8, 60, 30)
    result = SectionResult()
    deadline = Deadline(60 if quick else 120)
    body = (EXAMPLES / "alertmanager-firing.json").read_bytes()
    mm = StandinProcess()
    bridge = BenchBridge(workdir / "sources-bridge", workers=WORKERS)
    baseline = None
    client = client_session()
    try:
        mm.start()
        info = mm.info
        bridge.start()
        bridge.configure(info)  # maps booking.created to the stand-in's sales channel
        bridge.cli(
            "source", "add", "test", "alertmanager", "--type", "booking.created",
            "--template", str(EXAMPLES / "alertmanager.md.j2"), "--secret", TOKEN,
        )  # fmt: skip
        baseline = baseline_server(workdir, WORKERS, info)
        baseline.start()

        targets = {
            "bridge": (
                f"{bridge.url}/hooks/in/test/alertmanager",
                {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
            ),
            "baseline": (
                f"{baseline.url}/hooks/in/alertmanager",
                {"Content-Type": "application/json"},
            ),
        }
        errors = {"bridge": [], "baseline": []}
        samples = {"bridge": [], "baseline": []}

        def call(side: str, record: bool) -> None:
            url, headers = targets[side]
            timed_request(
                lambda: client.post(url, data=body, headers=headers, timeout=30),
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

        for side, server in (("bridge", bridge), ("baseline", baseline)):
            result.memory.append(
                {
                    "server": f"sources: {side} ({WORKERS} workers)",
                    "kind": side,
                    "rss_mb": worker_rss(server.pid),
                }
            )
        result.raw["standin"] = mm.call("stats")
    finally:
        client.close()
        if baseline is not None:
            baseline.stop()
        bridge.stop()
        mm.stop()

    stats = {side: summary_ms(values) if values else None for side, values in samples.items()}
    result.raw.update(
        {
            "workers": WORKERS,
            "rounds": rounds,
            "per_round": per_round,
            "warmup": warmup,
            "payload_bytes": len(body),
            **stats,
            "worker_cpu_ms_per_request": {
                side: round(1000 * cpu[side] / len(samples[side]), 3) if samples[side] else None
                for side in cpu
            },
            "errors": {side: len(v) for side, v in errors.items()},
            "error_samples": {side: v[:5] for side, v in errors.items()},
        }
    )
    section = "Sources"
    bridge_stats, base_stats = stats["bridge"], stats["baseline"]
    f = result.figures
    if not (bridge_stats and base_stats):
        f.append(Figure(section, "translated webhook", None, "", note="no successful samples"))
        return result
    ratio = bridge_stats["median_ms"] / base_stats["median_ms"]
    result.raw["ratio_median"] = round(ratio, 3)
    f.append(
        Figure(section, f"baseline median (n={base_stats['n']})", base_stats["median_ms"], "ms")
    )
    f.append(
        Figure(
            section,
            f"translated webhook median (n={bridge_stats['n']})",
            bridge_stats["median_ms"],
            "ms",
            note="Alertmanager example, Bearer token, sandboxed template",
        )
    )
    f.append(Figure(section, "translated webhook p95", bridge_stats["p95_ms"], "ms"))
    f.append(
        Figure(
            section,
            "translated - baseline, median",
            round(bridge_stats["median_ms"] - base_stats["median_ms"], 3),
            "ms",
        )
    )
    for side in ("baseline", "bridge"):
        value = result.raw["worker_cpu_ms_per_request"][side]
        f.append(Figure(section, f"{side} worker CPU per request", value, "ms"))
    f.append(
        Figure(
            section,
            "median ratio translated/baseline",
            round(ratio, 3),
            "x",
            note="no budget in DESIGN.md; same stand-in, same gunicorn flags",
        )
    )
    failed = sum(len(v) for v in errors.values())
    f.append(Figure(section, "failed requests (both sides)", failed, "", "0", failed == 0))
    return result
