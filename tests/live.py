"""The bridge as it runs in production: gunicorn on 127.0.0.1, its own instance.

Used by the integration and browser tests. Started and stopped by PID; the
CLI is run as a subprocess against the same database, as an admin would.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
ADMIN_PASSWORD = "integration-password"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition, timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``condition()`` until it is true; TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached after {timeout} s")
        time.sleep(0.02)


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

    def wait_routed(self, timeout: float = 10.0) -> None:
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

        wait_until(routed, timeout, "every kept webhook call routed")

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
