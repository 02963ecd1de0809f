"""The bridge as it runs in production: gunicorn on 127.0.0.1, its own instance.

Used by the integration and browser tests. gunicorn reads the repository's
gunicorn.conf.py (the settings of ``make run`` and the Procfile); only the
port and the number of workers are given on its command line. Started and
stopped by PID; the CLI and the worker run as subprocesses against the same
database, as an admin would run them.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
GUNICORN_CONF = ROOT / "gunicorn.conf.py"
ADMIN_PASSWORD = "integration-password"


def gunicorn_command(app_spec: str, port: int, workers: int, *extra: str) -> list[str]:
    """gunicorn with the repository's gunicorn.conf.py, on 127.0.0.1:port.

    :param extra: more command-line settings, which win over the file's.
    """
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "--config",
        str(GUNICORN_CONF),
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        *extra,
        app_spec,
    ]


def child_pids(pid: int) -> list[int]:
    """Direct children of a process (the workers of a gunicorn master)."""
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def stop_process(process: subprocess.Popen | None, timeout: float = 15) -> int | None:
    """SIGTERM by PID, SIGKILL if it is still there after ``timeout``; its exit code."""
    if process is None:
        return None
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
    return process.returncode


# The lines `flask retry` prints (bridge/cli.py retry_command), each read exactly.
_RETRY_LINES = {
    "messages": re.compile(
        r"^Retried: (?P<sent>\d+) sent, (?P<failed>\d+) still failed, "
        r"(?P<skipped>\d+) left for an inactive environment\.$"
    ),
    "replies": re.compile(
        r"^Agent replies kept after a failed lookup: (?P<stored>\d+) stored, "
        r"(?P<ignored>\d+) ignored, (?P<failed>\d+) still failing\.$"
    ),
    "callbacks": re.compile(
        r"^Reply callbacks: (?P<delivered>\d+) delivered, (?P<failed>\d+) failed "
        r"\(tried again later\)\.$"
    ),
}


def retry_counts(stdout: str) -> dict[str, dict[str, int]]:
    """``flask retry``'s output as numbers: {"messages": {"sent": 2, ...}, ...}.

    A section the command did not print is absent; a line that matches no
    pattern fails the test, so a changed wording cannot pass unnoticed.
    """
    counts: dict[str, dict[str, int]] = {}
    for line in stdout.splitlines():
        for section, pattern in _RETRY_LINES.items():
            match = pattern.match(line.strip())
            if match:
                counts[section] = {key: int(value) for key, value in match.groupdict().items()}
                break
        else:
            raise AssertionError(f"unexpected line from flask retry: {line!r}")
    return counts


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveBridge:
    """gunicorn serving ``app:app`` with a fresh instance folder.

    :param instance: folder for the database and secret key.
    :param workers: gunicorn worker processes (threads as gunicorn.conf.py says).
    :param gunicorn_args: more gunicorn settings, which win over gunicorn.conf.py.
    """

    def __init__(
        self,
        instance: Path,
        *,
        workers: int = 2,
        extra_env: dict | None = None,
        gunicorn_args: tuple[str, ...] = (),
    ):
        self.instance = Path(instance)
        self.instance.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        self.gunicorn_args = tuple(gunicorn_args)
        self.env = {
            **os.environ,
            "BRIDGE_DATABASE": str(self.instance / "bridge.db"),
            "BRIDGE_SECRET_KEY": "integration-secret-key",
            "BRIDGE_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "BRIDGE_PUBLIC_URL": self.url,
            "PYTHONUNBUFFERED": "1",
            **(extra_env or {}),
        }
        self.process: subprocess.Popen | None = None
        self.log_path = self.instance / "gunicorn.log"
        self.session = requests.Session()

    def start(self) -> LiveBridge:
        self.cli("init")
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            gunicorn_command("app:app", self.port, self.workers, *self.gunicorn_args),
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            self._wait_until_up()
        except BaseException:
            self.stop()  # never leave a half-started gunicorn behind
            raise
        return self

    def _wait_until_up(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {self.log_path.read_text()[-2000:]}")
            try:
                requests.get(self.url + "/login", timeout=2).close()
                return
            except requests.RequestException:  # refused while binding, slow first answer
                time.sleep(0.1)
        raise RuntimeError("gunicorn did not start in time")

    def stop(self) -> None:
        self.session.close()
        stop_process(self.process)
        if getattr(self, "_log", None):
            self._log.close()

    def worker_pids(self) -> list[int]:
        """The PIDs of gunicorn's web workers (children of the master)."""
        return child_pids(self.process.pid) if self.process else []

    @property
    def db_path(self) -> Path:
        return Path(self.env["BRIDGE_DATABASE"])

    def query(self, sql: str, params: tuple | list = ()) -> list[dict[str, Any]]:
        """Rows of a read-only query on the bridge's database, as dicts."""
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=30)
        conn.row_factory = sqlite3.Row
        try:
            return [dict(row) for row in conn.execute(sql, params).fetchall()]
        finally:
            conn.close()

    def worker(self, **extra_env: str) -> LiveWorker:
        """A ``flask --app app worker`` process on this bridge's database (not started)."""
        return LiveWorker(self.instance, {**self.env, **extra_env})

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """``flask --app app ARGS`` against this instance's database."""
        result = subprocess.run(
            [sys.executable, "-m", "flask", "--app", "app", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"flask {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
            )
        return result

    def wait_routed(self, timeout: float = 10.0, interval: float = 0.05) -> None:
        """Wait until every webhook call kept so far has had its first routing.

        The webhook answers Mattermost first and routes right after; a test
        that checks the outcome of a call waits for this (a row still pending
        after a failed lookup counts as routed: it waits for a retry).
        """
        path = self.instance / "bridge.db"

        def routed() -> bool:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
            try:
                (unrouted,) = conn.execute(
                    "SELECT COUNT(*) FROM inbox WHERE state = 'routing'"
                ).fetchone()
            finally:
                conn.close()
            return unrouted == 0

        wait_until(routed, timeout, interval, what="every kept webhook call routed")

    def api_key(self, env: str = "test") -> str:
        return self.cli("api-key", env).stdout.strip().splitlines()[-1]

    def api(self, method: str, path: str, key: str, **kwargs) -> requests.Response:
        headers = {"Authorization": f"Bearer {key}", **kwargs.pop("headers", {})}
        return self.session.request(method, self.url + path, headers=headers, timeout=30, **kwargs)

    def login(self, session: requests.Session | None = None) -> requests.Session:
        """A requests session logged in to the admin screens (CSRF token included)."""
        import re

        session = session or requests.Session()
        page = session.get(self.url + "/login", timeout=10).text
        token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)
        token = token or re.search(r'name="csrf_token" value="([^"]+)"', page)
        response = session.post(
            self.url + "/login",
            data={"name": "Ada", "password": ADMIN_PASSWORD, "csrf_token": token.group(1)},
            timeout=10,
        )
        assert response.ok and "Log out" in response.text, response.text[:500]
        return session

    def __enter__(self) -> LiveBridge:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class LiveWorker:
    """``flask --app app worker`` in its own process, logging to a file.

    :param instance: folder for its log file.
    :param env: the process environment (the bridge's, plus the worker's settings).
    """

    def __init__(self, instance: Path, env: dict[str, str]):
        self.env = env
        self.process: subprocess.Popen | None = None
        self.log_path = Path(instance) / f"worker-{free_port()}.log"
        self._log = None

    def start(self) -> LiveWorker:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", "app", "worker"],
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        return self

    @property
    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def stop(self, timeout: float = 15) -> int | None:
        """SIGTERM, wait for it to finish its item and exit; its exit code."""
        code = stop_process(self.process, timeout=timeout)
        if self._log:
            self._log.close()
            self._log = None
        return code

    def __enter__(self) -> LiveWorker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def wait_until(condition, timeout: float = 20.0, interval: float = 0.05, what: str = ""):
    """Poll ``condition()`` until it returns something truthy; that value.

    :raises TimeoutError: naming ``what`` when the deadline passes.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"not within {timeout:g} s: {what or condition}")
        time.sleep(interval)
