"""Profile the bridge where the budgets are measured: inside a gunicorn worker.

``python -m bench.profile outbound|inbound [--requests N] [--workers W]
[--concurrency C]`` starts the bridge under gunicorn (default: one gthread worker)
wrapped by :func:`bridge_app` (pyinstrument per request, after a warm-up),
drives the benchmark's traffic (inbound: from C concurrent clients), and
prints each worker's combined profile plus the median time inside the WSGI
call. pyinstrument samples wall-clock time, so waiting (network, SQLite busy
handler sleeps, fsync) shows up too. Needs ``pip install pyinstrument``.

The wrapper is configured by environment: ``BENCH_PROFILE_DIR`` (each worker
writes ``profile-<pid>.json`` there at exit), ``BENCH_PROFILE_WARMUP``
(requests per worker left unprofiled).
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

_state: dict = {"count": 0, "durations": [], "profiler": None}


def _write_profile() -> None:
    profiler = _state["profiler"]
    directory = os.environ.get("BENCH_PROFILE_DIR")
    if profiler is None or not directory or not _state["durations"]:
        return
    out = Path(directory) / f"profile-{os.getpid()}.json"
    durations = sorted(_state["durations"])
    text = profiler.output_text(unicode=False, color=False, show_all=False)
    out.write_text(
        json.dumps(
            {
                "requests": len(durations),
                "wsgi_median_ms": durations[len(durations) // 2] * 1000,
                "profile": text,
            }
        )
    )


def bridge_app(environ, start_response):
    """The bridge's WSGI app, each request after the warm-up profiled."""
    from pyinstrument import Profiler

    from app import app

    _state["count"] += 1
    if _state["count"] <= int(os.environ.get("BENCH_PROFILE_WARMUP", "30")):
        return app(environ, start_response)
    if _state["profiler"] is None:
        _state["profiler"] = Profiler(interval=0.0005, async_mode="disabled")
        atexit.register(_write_profile)
    profiler = _state["profiler"]
    started = time.perf_counter()
    profiler.start()
    try:
        body = app(environ, start_response)
        chunks = list(body)  # render the whole body inside the profile
        if hasattr(body, "close"):
            body.close()
        return chunks
    finally:
        profiler.stop()
        _state["durations"].append(time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", choices=("outbound", "inbound"))
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=1, help="inbound only")
    args = parser.parse_args()
    try:
        import pyinstrument  # noqa: F401
    except ImportError:
        sys.exit("bench.profile needs pyinstrument: .venv/bin/pip install pyinstrument")

    from .common import BenchBridge, StandinProcess, client_session

    workdir = Path(tempfile.mkdtemp(prefix="mmb-profile-"))
    warmup = 30
    mm = StandinProcess()
    bridge = BenchBridge(
        workdir / "bridge",
        workers=args.workers,
        extra_env={
            "BENCH_PROFILE_DIR": str(workdir),
            "BENCH_PROFILE_WARMUP": str(warmup // args.workers),
        },
    )
    client = client_session()
    try:
        mm.start()
        bridge.cli("init")
        key = bridge.configure(mm.info)
        # LiveBridge serves app:app; swap in the profiling wrapper for this one run.
        from . import common

        original = common.gunicorn_command
        common.gunicorn_command = lambda spec, port, workers, *extra: original(
            "bench.profile:bridge_app", port, workers, *extra
        )
        try:
            bridge.start()
        finally:
            common.gunicorn_command = original
        headers = {"Authorization": f"Bearer {key}"}
        conversation = bridge.api(
            "POST",
            "/api/v1/conversations",
            key,
            json={"visitor": {"name": "Hans Host"}, "text": "Hello"},
        ).json()
        total = warmup + args.requests
        if args.scenario == "outbound":
            url = f"{bridge.url}/api/v1/conversations/{conversation['id']}/messages"
            for i in range(total - 1):
                client.post(url, json={"text": f"message {i}"}, headers=headers, timeout=30)
        else:
            from .common import Deadline
            from .inbound import deliver, payload_for

            posts = mm.posts(
                [
                    {"message": f"Reply #{i}", "root_id": conversation["root_post_id"]}
                    for i in range(total)
                ]
            )
            payloads = [payload_for(mm.info, post) for post in posts]
            url = f"{bridge.url}/hooks/mattermost/test"
            if args.concurrency > 1:
                run = deliver(url, payloads, Deadline(120), concurrency=args.concurrency)
                print(
                    f"{run['sent']} deliveries, {run['sent'] / run['elapsed_s']:.1f} req/s, "
                    f"statuses {run['statuses']}"
                )
            else:
                for payload in payloads:
                    client.post(url, data=payload, timeout=30)
    finally:
        client.close()
        bridge.stop()
        mm.stop()
    outputs = sorted(workdir.glob("profile-*.json"))
    for out in outputs:
        data = json.loads(out.read_text())
        print(
            f"{data['requests']} requests profiled in gunicorn worker {out.stem[8:]}; "
            f"median time inside the WSGI call {data['wsgi_median_ms']:.2f} ms"
        )
        print(data["profile"])
    if not outputs:
        print("no profile written (is pyinstrument installed?)", file=sys.stderr)
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
