"""Worker memory: VmRSS of every gunicorn worker, read after each server's run.

Each benchmark samples ``/proc/<pid>/status`` of the children of its gunicorn
master (see :func:`bench.common.worker_rss`) just before stopping it: the
outbound bridge, the inbound bridges (2 and 4 workers) and the bridge that
served log pages of the 1M-row database. The budget applies to the largest
bridge worker; the bare baseline's workers are shown for scale.
"""

from __future__ import annotations

from typing import Any

from .common import Figure, SectionResult

BUDGET_MB = 80.0


def summarize(samples: list[dict[str, Any]]) -> SectionResult:
    result = SectionResult(raw={"samples": samples})
    section = "Memory"
    bridge_values = [
        mb for sample in samples if sample["kind"] == "bridge" for mb in sample["rss_mb"].values()
    ]
    for sample in samples:
        values = list(sample["rss_mb"].values())
        if not values:
            continue
        result.figures.append(
            Figure(
                section,
                f"{sample['server']}: largest worker",
                max(values),
                "MB",
                note="workers: " + ", ".join(f"{mb:.1f}" for mb in values),
            )
        )
    if bridge_values:
        largest = max(bridge_values)
        result.figures.append(
            Figure(
                section,
                "largest bridge worker RSS, all runs",
                largest,
                "MB",
                f"< {BUDGET_MB:.0f} MB",
                largest < BUDGET_MB,
            )
        )
    else:
        result.figures.append(
            Figure(
                section,
                "largest bridge worker RSS, all runs",
                None,
                "MB",
                f"< {BUDGET_MB:.0f} MB",
                False,
                "no sample taken",
            )
        )
    return result
