"""Head-of-line: the login page, the webhook and a host API read while sends wait on Mattermost.

The issue: with Mattermost taking 4 s per post and six host sends waiting on
it, these took 11 s (two sync workers, both busy). DESIGN section 9 wants each
within 1 s. The bridge runs under gunicorn.conf.py (2 gthread workers). First
unloaded: N requests of each kind, interleaved, one at a time. Then the
stand-in is made to take 4 s per post and six client threads keep six host
sends waiting on it all the time (each starts its next send when the last
answers); the same N requests of each kind are measured meanwhile. Each
request opens a new connection (``Connection: close``), as nginx does towards
its upstream by default.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from .common import (
    WEBHOOK_TOKEN,
    BenchBridge,
    Deadline,
    Figure,
    SectionResult,
    StandinProcess,
    client_session,
    summary_ms,
    worker_rss,
)
from .inbound import payload_for

WORKERS = 2
SLOW_POST_SECONDS = 4.0
SLOW_SENDS = 6
BUDGET_MS = 1000.0
KINDS = ("login page", "webhook", "host API read")


def run(workdir: Path, *, quick: bool, gunicorn_args: tuple[str, ...] = ()) -> SectionResult:
    rounds = 20 if quick else 60
    result = SectionResult()
    deadline = Deadline(90 if quick else 180)
    mm = StandinProcess()
    bridge = BenchBridge(
        workdir / "headofline-bridge", workers=WORKERS, gunicorn_args=gunicorn_args
    )
    stop_senders = threading.Event()
    senders: list[threading.Thread] = []
    sends = {"answered": 0, "errors": []}
    sends_lock = threading.Lock()
    try:
        mm.start()
        info = mm.info
        bridge.start()
        key = bridge.configure(info)
        started = bridge.api(
            "POST",
            "/api/v1/conversations",
            key,
            json={"visitor": {"name": "Vera"}, "text": "Hello"},
        ).json()
        conversation_id = started["id"]
        # One agent reply per webhook call, so each call is routed, not a duplicate.
        replies = mm.posts(
            [
                {"message": f"Reply {i}: see you at 11.", "root_id": started["root_post_id"]}
                for i in range(3 * rounds)
            ]
        )
        payloads = [payload_for(info, post) for post in replies]
        assert payloads[0]["token"] == WEBHOOK_TOKEN
        client = client_session()
        close = {"Connection": "close"}
        auth = {"Authorization": f"Bearer {key}", **close}
        requests_by_kind = {
            "login page": lambda i: client.get(f"{bridge.url}/login", headers=close, timeout=30),
            "webhook": lambda i: client.post(
                f"{bridge.url}/hooks/mattermost/test", data=payloads[i], headers=close, timeout=30
            ),
            "host API read": lambda i: client.get(
                f"{bridge.url}/api/v1/conversations/{conversation_id}", headers=auth, timeout=30
            ),
        }

        def measure(offset: int) -> dict[str, dict[str, Any]]:
            samples: dict[str, list[float]] = {kind: [] for kind in KINDS}
            failures: dict[str, int] = {kind: 0 for kind in KINDS}
            for i in range(rounds):
                if deadline.passed:
                    break
                for kind in KINDS:
                    begun = time.perf_counter()
                    response = requests_by_kind[kind](offset + i)
                    elapsed = time.perf_counter() - begun
                    if response.status_code == 200:
                        samples[kind].append(elapsed)
                    else:
                        failures[kind] += 1
            return {
                kind: {
                    **(summary_ms(samples[kind]) if samples[kind] else {}),
                    "failed": failures[kind],
                }
                for kind in KINDS
            }

        measure(0)  # warm-up: first requests per worker thread, user-name cache
        unloaded = measure(rounds)

        def keep_sending(n: int) -> None:
            session = client_session()
            try:
                while not stop_senders.is_set():
                    response = session.post(
                        f"{bridge.url}/api/v1/conversations/{conversation_id}/messages",
                        json={"text": f"slow send from host {n}"},
                        headers={"Authorization": f"Bearer {key}"},
                        timeout=60,
                    )
                    with sends_lock:
                        if response.status_code == 201 and response.json()["status"] == "sent":
                            sends["answered"] += 1
                        else:
                            sends["errors"].append(f"{response.status_code} {response.text[:100]}")
            finally:
                session.close()

        mm.call("set", {"post_delay": SLOW_POST_SECONDS})
        senders = [
            threading.Thread(target=keep_sending, args=(n,), daemon=True) for n in range(SLOW_SENDS)
        ]
        for thread in senders:
            thread.start()
        wait_for = Deadline(30)
        while mm.call("stats")["posts_in_flight"] < SLOW_SENDS and not wait_for.passed:
            time.sleep(0.05)
        in_flight_before = mm.call("stats")["posts_in_flight"]
        loaded = measure(2 * rounds)
        in_flight_after = mm.call("stats")["posts_in_flight"]
        result.memory.append(
            {
                "server": f"head-of-line: bridge ({WORKERS} workers)",
                "kind": "bridge",
                "rss_mb": worker_rss(bridge.pid),
            }
        )
    finally:
        stop_senders.set()
        for thread in senders:
            thread.join(timeout=2 * SLOW_POST_SECONDS + 30)
        bridge.stop()
        mm.stop()

    result.raw.update(
        {
            "workers": WORKERS,
            "gunicorn_args": list(gunicorn_args),
            "rounds": rounds,
            "slow_post_seconds": SLOW_POST_SECONDS,
            "slow_sends": SLOW_SENDS,
            "posts_in_flight": {"before": in_flight_before, "after": in_flight_after},
            "sends_answered": sends["answered"],
            "send_errors": sends["errors"][:5],
            "unloaded": unloaded,
            "loaded": loaded,
        }
    )
    section = "Head-of-line"
    f = result.figures
    for kind in KINDS:
        quiet, busy = unloaded[kind], loaded[kind]
        f.append(Figure(section, f"{kind}: p95 unloaded", quiet.get("p95_ms"), "ms"))
        p95 = busy.get("p95_ms")
        f.append(
            Figure(
                section,
                f"{kind}: p95 with {SLOW_SENDS} sends waiting",
                p95,
                "ms",
                f"< {BUDGET_MS:.0f} ms",
                p95 is not None and p95 < BUDGET_MS and busy["failed"] == 0,
                note=(
                    f"median {busy.get('median_ms', 0):.1f} ms, max {busy.get('max_ms', 0):.1f}"
                    f" ms, n={busy.get('n', 0)}, failed {busy['failed']}"
                ),
            )
        )
    f.append(
        Figure(
            section,
            f"sends waiting on the {SLOW_POST_SECONDS:g} s/post stand-in (start / end)",
            in_flight_after,
            "",
            f"= {SLOW_SENDS}",
            in_flight_before == in_flight_after == SLOW_SENDS,
            note=f"start {in_flight_before}; {sends['answered']} sends answered 'sent' in all",
        )
    )
    return result
