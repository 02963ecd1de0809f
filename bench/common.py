"""Shared pieces: gunicorn launching, the stand-in process, statistics, result rows.

Both the bridge and the bare baseline app are started by
:func:`tests.live.gunicorn_command`, which reads the repository's
gunicorn.conf.py (the settings of ``make run``: gthread workers, timeouts,
access log) and sets only the port and the number of workers, so "the same
gunicorn settings" holds by construction.
"""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Self

import requests

from tests.live import ROOT, LiveBridge, free_port, gunicorn_command

RESULTS_DIR = ROOT / "bench" / "results"
WEBHOOK_TOKEN = "bench-webhook-token-012345"  # 26 characters, like Mattermost's
PAGE_SIZE_KB = os.sysconf("SC_PAGE_SIZE") / 1024


# -- statistics ------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: list[float]) -> float:
    return percentile(values, 50)


def summary_ms(seconds: list[float]) -> dict[str, float]:
    """median / p95 / min / max in milliseconds of a list of durations in seconds."""
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "median_ms": round(median(ms), 3),
        "p95_ms": round(percentile(ms, 95), 3),
        "min_ms": round(min(ms), 3),
        "max_ms": round(max(ms), 3),
    }


class Deadline:
    """A wall-clock bound for a loop: ``while not deadline.passed: ...``."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    @property
    def passed(self) -> bool:
        return time.monotonic() >= self.end

    def left(self) -> float:
        return max(0.0, self.end - time.monotonic())


# -- result rows -------------------------------------------------------------------------


@dataclass
class Figure:
    """One row of the table: a figure, its budget and whether it is met.

    ``ok`` None means an informative row without a budget.
    """

    section: str
    name: str
    value: float | int | None
    unit: str
    budget: str = ""
    ok: bool | None = None
    note: str = ""

    @property
    def verdict(self) -> str:
        if self.ok is None:
            return ""
        return "PASS" if self.ok else "MISS"

    def formatted(self) -> str:
        if self.value is None:
            return "n/a"
        if isinstance(self.value, int):
            return f"{self.value:,} {self.unit}".strip()
        digits = 2 if self.unit in ("x",) else 1
        if self.unit == "ms" and self.value < 10:
            digits = 2
        return f"{self.value:.{digits}f} {self.unit}".strip()

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict}


@dataclass
class SectionResult:
    """What one benchmark module hands back: its rows and its raw data."""

    figures: list[Figure] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    memory: list[dict[str, Any]] = field(default_factory=list)  # RSS samples, see memory.py


# -- machine ------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for name in ("flask", "werkzeug", "gunicorn", "requests", "sqlite-utils"):
        try:
            from importlib.metadata import version

            versions[name] = version(name)
        except Exception:  # noqa: BLE001 - informative only
            versions[name] = "?"
    import sqlite3

    git = {}
    for key, command in (
        ("commit", ["git", "rev-parse", "--short", "HEAD"]),
        ("changed_files", ["git", "status", "--porcelain", "--", "bridge", "app.py", "templates"]),
    ):
        try:
            out = subprocess.run(
                command, check=False, cwd=ROOT, capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = "?"
        git[key] = out if key == "commit" else len(out.splitlines())
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
        "versions": versions,
        "git": git,
    }


# -- processes ------------------------------------------------------------------------------


def child_pids(pid: int) -> list[int]:
    """Direct children of a process (gunicorn's workers of its master)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        return [int(p) for p in text.split()]
    except OSError:
        pass
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            children.append(int(entry.name))
    return sorted(children)


def rss_mb(pid: int) -> float | None:
    """VmRSS of a process in MiB, or None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def worker_rss(master_pid: int) -> dict[int, float]:
    return {
        pid: round(value, 1) for pid in child_pids(master_pid) if (value := rss_mb(pid)) is not None
    }


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the given processes, in seconds (gone processes count 0)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / ticks


class CpuMeter:
    """CPU time the workers of a gunicorn master (and optionally other PIDs) spend."""

    def __init__(self, master_pid: int, extra: list[int] | None = None):
        self.pids = child_pids(master_pid) + list(extra or [])
        self.start = cpu_seconds(self.pids)

    def used(self) -> float:
        return cpu_seconds(self.pids) - self.start


def sent(response: requests.Response) -> bool:
    """A 201 saying the message or notification was posted (outbound, sources)."""
    return response.status_code == 201 and response.json().get("status") == "sent"


def timed_request(
    send: Callable[[], requests.Response],
    accepted: Callable[[requests.Response], bool],
    *,
    record: bool,
    samples: list[float],
    errors: list[str],
) -> None:
    """Make one request; keep its wall time (when ``record``) if ``accepted``, else its error."""
    started = time.perf_counter()
    response = send()
    elapsed = time.perf_counter() - started
    if not accepted(response):
        errors.append(f"{response.status_code} {response.text[:200]}")
    elif record:
        samples.append(elapsed)


def interleaved_rounds(
    call: Callable[[str, bool], None],
    masters: dict[str, int | tuple[int, list[int]]],
    *,
    rounds: int,
    per_round: int,
    warmup: int,
    deadline: Deadline,
) -> dict[str, float]:
    """Warm every side up, then time them request by request, in turn.

    Each side's request follows the other's, in rounds that alternate which
    goes first: both meet the same moment of a shared machine, so a burst
    of load elsewhere (a neighbour VM, a CI job) slows both alike instead of
    whichever side's block it fell on. Blocks of one side at a time moved a
    click's ratio by 0.1 between runs; by turns, two copies of the same
    bridge measure within 0.5 % of each other.

    :param call: ``call(side, record)`` makes one request (and keeps its time if ``record``).
    :param masters: side -> the PID of its gunicorn master, in the order of the first round;
        or (master PID, other PIDs of that side: the bridge's worker process).
    :returns: the CPU seconds each side's workers spent in the measured rounds
        (each side's meter counts only its own processes).
    """
    pids = {side: pid if isinstance(pid, tuple) else (pid, []) for side, pid in masters.items()}
    for _ in range(warmup):
        for side in masters:
            call(side, False)
    cpu = dict.fromkeys(masters, 0.0)
    for round_no in range(rounds):
        order = list(masters) if round_no % 2 == 0 else list(reversed(masters))
        meters = {side: CpuMeter(*pids[side]) for side in order}
        for _ in range(per_round):
            if deadline.passed:
                break
            for side in order:
                call(side, True)
        for side, meter in meters.items():
            cpu[side] += meter.used()
    return cpu


def _wait_http(url: str, process: subprocess.Popen, log_path: Path, timeout: float = 20.0) -> None:
    deadline = Deadline(timeout)
    with requests.Session() as session:
        session.trust_env = False
        while not deadline.passed:
            if process.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {log_path.read_text()[-2000:]}")
            try:
                session.get(url, timeout=5).close()
                return
            except requests.RequestException:  # refused while binding, a slow first answer
                time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up in {timeout:.0f} s")


def _stop_process(process: subprocess.Popen | None) -> None:
    """SIGTERM by PID, then SIGKILL if it does not go within 15 s."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


class GunicornServer:
    """Any WSGI app under :func:`gunicorn_command` (used for the bare baseline app)."""

    def __init__(
        self,
        app_spec: str,
        workdir: Path,
        *,
        workers: int,
        env: dict[str, str],
        health_path: str = "/healthz",
    ):
        self.app_spec = app_spec
        self.workers = workers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
        self.health_path = health_path
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"gunicorn-{app_spec.split(':')[0]}-{self.port}.log"
        self.process: subprocess.Popen | None = None
        self._log = None

    def start(self) -> GunicornServer:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            gunicorn_command(self.app_spec, self.port, self.workers),
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        _wait_http(self.url + self.health_path, self.process, self.log_path)
        return self

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def stop(self) -> None:
        _stop_process(self.process)
        if self._log:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def baseline_server(workdir: Path, workers: int, standin_info: dict[str, Any]) -> GunicornServer:
    """The bare Flask baseline under the bridge's gunicorn flags, aimed at the stand-in."""
    return GunicornServer(
        "bench.baseline_app:app",
        workdir,
        workers=workers,
        env={
            "BENCH_MM_URL": standin_info["url"],
            "BENCH_MM_TOKEN": standin_info["bot_token"],
            "BENCH_MM_CHANNEL": standin_info["support_id"],
        },
    )


class BenchBridge(LiveBridge):
    """The tests' LiveBridge (own instance, CLI, login), started with :func:`gunicorn_command`,
    with its ``flask --app app worker`` beside it, as ``make run`` starts them."""

    def __init__(
        self,
        instance: Path,
        *,
        workers: int = 2,
        extra_env: dict | None = None,
        gunicorn_args: tuple[str, ...] = (),
    ):
        super().__init__(
            instance, workers=workers, extra_env=extra_env, gunicorn_args=gunicorn_args
        )
        self.session.trust_env = False

    def start(self) -> BenchBridge:
        self.cli("init")
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            gunicorn_command("app:app", self.port, self.workers, *self.gunicorn_args),
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        _wait_http(self.url + "/login", self.process, self.log_path)
        # The worker does the WAL checkpoints (bridge/store/base.py): without it
        # the web workers would be measured without a cost they carry in use.
        self.background = self.worker().start()
        return self

    def pids(self) -> tuple[int, list[int]]:
        """The gunicorn master and the worker process: what a CPU meter counts for it."""
        return self.pid, [self.background.process.pid]

    def stop(self) -> None:
        background = getattr(self, "background", None)
        if background is not None:
            background.stop()
            self.background = None
        super().stop()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def configure(self, mm: dict[str, Any], env: str = "test") -> str:
        """What tests.conftest.configure_env does, against the stand-in process; the API key."""
        self.cli(
            "configure",
            env,
            "--server-url",
            mm["url"],
            "--bot-token",
            mm["bot_token"],
            "--webhook-token",
            WEBHOOK_TOKEN,
            "--channel",
            mm["support_id"],
            "--notify",
            f"booking.created={mm['sales_id']}",
            "--activate",
        )
        return self.api_key(env)


# -- the Mattermost stand-in, in its own process ------------------------------------------


class StandinProcess:
    """tests.standin.MattermostStandin on 127.0.0.1 in a child process (its own GIL).

    The child is ``python -m bench.standin_server``, driven by JSON lines on its
    stdin/stdout. The stand-in is werkzeug's threaded server and answers
    ``Connection: close``: every call to it opens a new TCP connection, for the
    bridge and the baseline alike.
    """

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        self.info: dict[str, Any] = {}

    def start(self) -> StandinProcess:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.standin_server"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.info = self._read(timeout=30)
        return self

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def _read(self, timeout: float) -> Any:
        import json
        import select

        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError(f"the stand-in process did not answer within {timeout} s")
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the stand-in process exited")
        answer = json.loads(line)
        if isinstance(answer, dict) and "error" in answer and len(answer) == 1:
            raise RuntimeError(f"stand-in: {answer['error']}")
        return answer

    def call(self, command: str, args: Any = None, timeout: float = 60) -> Any:
        import json

        self.process.stdin.write(json.dumps([command, args]) + "\n")
        self.process.stdin.flush()
        return self._read(timeout)

    def posts(self, specs: list[dict[str, str]]) -> list[dict[str, Any]]:
        """Create posts (default: alice in support) in batches; returns id/create_at/message."""
        created = []
        for start in range(0, len(specs), 500):
            created += self.call("posts", specs[start : start + 500])
        return created

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        try:
            if process.poll() is None:
                process.stdin.write('["stop", null]\n')
                process.stdin.flush()
                process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            pass
        _stop_process(process)
        for stream in (process.stdin, process.stdout):
            try:
                stream.close()
            except OSError:
                pass

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def client_session() -> requests.Session:
    """A client Session that never routes 127.0.0.1 through an environment proxy."""
    session = requests.Session()
    session.trust_env = False
    return session
