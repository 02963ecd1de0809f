"""``python -m bench [--quick] [--only SECTION ...] [--keep]``: every benchmark, one table.

Prints each figure with its budget and PASS/MISS (informative rows have no
verdict) and writes ``bench/results/latest.json``. Benchmarks, not tests: the
exit status is 0 whatever the figures say (2 only if the harness itself broke).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from . import agents, headofline, inbound, logpage, memory, outbound, sources
from .common import RESULTS_DIR, Figure, SectionResult, machine_info

SECTIONS = {
    "outbound": outbound.run,
    "inbound": inbound.run,
    "headofline": headofline.run,
    "sources": sources.run,
    "agents": agents.run,
    "logpage": logpage.run,
}


def table(figures: list[Figure]) -> str:
    headers = ("Benchmark", "Figure", "Value", "Budget", "Result", "Note")
    lines = [(f.section, f.name, f.formatted(), f.budget, f.verdict, f.note) for f in figures]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(headers)]
    rule = "  ".join("-" * w for w in widths)

    def fmt(cells) -> str:
        return "  ".join(
            cell.rjust(w) if i == 2 else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    out = [fmt(headers), rule]
    previous = None
    for figure, line in zip(figures, lines, strict=True):
        if previous is not None and figure.section != previous:
            out.append("")
        out.append(fmt(line))
        previous = figure.section
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run the benchmarks of DESIGN.md section 8 and print one table.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a short smoke run (fewer requests, 250k log rows), under ~40 s",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=sorted(SECTIONS),
        metavar="SECTION",
        help=f"run only these sections: {', '.join(SECTIONS)}",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the temporary work folder (databases, gunicorn logs)",
    )
    args = parser.parse_args(argv)

    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="mmb-bench-"))
    machine = machine_info()
    print(
        f"Mattermost Bridge benchmarks{' (--quick)' if args.quick else ''}: "
        f"{machine['nproc']} CPUs, {machine['cpu_model']}, Python {machine['python']}, "
        f"SQLite {machine['sqlite']}",
        flush=True,
    )
    figures: list[Figure] = []
    raw: dict = {}
    samples: list[dict] = []
    broken = False
    try:
        for name, run in SECTIONS.items():
            if args.only and name not in args.only:
                continue
            print(f"  running {name} ...", flush=True)
            section_started = time.monotonic()
            try:
                result: SectionResult = run(workdir, quick=args.quick)
            except Exception:  # noqa: BLE001 - report it and go on with the next section
                broken = True
                trace = traceback.format_exc()
                print(trace, file=sys.stderr)
                result = SectionResult(
                    figures=[
                        Figure(
                            name,
                            "benchmark did not complete",
                            None,
                            "",
                            "runs",
                            False,
                            trace.strip().splitlines()[-1][:200],
                        )
                    ],
                    raw={"error": trace},
                )
            result.raw["seconds"] = round(time.monotonic() - section_started, 1)
            figures += result.figures
            raw[name] = result.raw
            samples += result.memory
        if samples:
            summary = memory.summarize(samples)
            figures += summary.figures
            raw["memory"] = summary.raw
    finally:
        if args.keep:
            print(f"work folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    elapsed = time.monotonic() - started
    print()
    print(table(figures))
    misses = [f for f in figures if f.ok is False]
    print()
    print(f"{len(misses)} budget miss(es); total {elapsed:.0f} s")

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "only": args.only,
        "seconds": round(elapsed, 1),
        "machine": machine,
        "figures": [f.as_dict() for f in figures],
        "misses": [f"{f.section}: {f.name}" for f in misses],
        "raw": raw,
    }
    out = RESULTS_DIR / "latest.json"
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"results: {out.relative_to(Path.cwd()) if out.is_relative_to(Path.cwd()) else out}")
    return 2 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
