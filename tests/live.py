"""The bridge as it runs in production: gunicorn on 127.0.0.1, its own instance.

Used by the integration and browser tests. Started and stopped by PID; the
CLI is run as a subprocess against the same database, as an admin would.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
ADMIN_PASSWORD = "integration-password"


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
    :param workers: gunicorn sync workers.
    """

    def __init__(self, instance: Path, *, workers: int = 2, extra_env: dict | None = None):
        self.instance = Path(instance)
        self.instance.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
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
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--workers",
                str(self.workers),
                "--bind",
                f"127.0.0.1:{self.port}",
                "--no-control-socket",
                "--timeout",
                "60",
                "app:app",
            ],
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
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if getattr(self, "_log", None):
            self._log.close()

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
