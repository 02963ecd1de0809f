"""Running it: gunicorn.conf.py, and the Procfile that ``make run`` starts with honcho.

The Procfile test runs honcho the way ``make run`` does (the venv's programs
first on PATH, ``--port``), waits for the web server to answer and the worker
to write its heartbeat, then sends SIGINT to honcho's process group, as Ctrl-C
in a terminal does, and checks that both stop cleanly.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests

from bridge import sender
from tests.live import ROOT, free_port, wait_until

VENV_BIN = Path(sys.executable).parent


def load_gunicorn_conf(environ: dict[str, str]) -> dict:
    """The settings gunicorn.conf.py defines, read with ``environ`` as os.environ."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(environ)
    try:
        namespace: dict = {}
        source = (ROOT / "gunicorn.conf.py").read_text()
        exec(compile(source, "gunicorn.conf.py", "exec"), namespace)  # how gunicorn reads it
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return namespace


def test_gunicorn_conf_keeps_threads_free_while_six_sends_wait():
    conf = load_gunicorn_conf({})
    assert conf["worker_class"] == "gthread" and conf["workers"] == 2
    # Six slow sends landing on one worker still leave it a thread for everything else.
    assert conf["threads"] > 6
    assert conf["bind"] == "127.0.0.1:8000"
    assert conf["control_socket_disable"] is True
    assert conf["accesslog"] == "-"
    # No query strings in the access log: a source's ?token= secret would be in it.
    assert "%(U)s" in conf["access_log_format"]
    assert "%(r)s" not in conf["access_log_format"] and "%(q)s" not in conf["access_log_format"]


def test_gunicorn_conf_timeouts_fit_mattermost_and_the_longest_send():
    conf = load_gunicorn_conf({})
    assert conf["timeout"] <= 30  # Mattermost waits 30 s for a webhook answer
    longest_send = sender.RETRY_BUDGET_SECONDS + sum(sender.mm.DEFAULT_TIMEOUT)
    assert conf["graceful_timeout"] > longest_send  # a stop lets sends in flight finish


def test_gunicorn_conf_reads_port_and_worker_count_from_the_environment():
    conf = load_gunicorn_conf({"PORT": "9123", "WEB_CONCURRENCY": "3"})
    assert conf["bind"] == "127.0.0.1:9123" and conf["workers"] == 3


def test_make_run_starts_the_procfile_with_honcho_on_port():
    dry_run = subprocess.run(
        ["make", "-n", "run", "PORT=9123"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert re.search(r"honcho start --port 9123$", dry_run, re.MULTILINE), dry_run


@pytest.mark.integration
def test_procfile_under_honcho_runs_web_and_worker_and_ctrl_c_stops_both(tmp_path):
    port = free_port()
    database = tmp_path / "bridge.db"
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}",
        "BRIDGE_DATABASE": str(database),
        "BRIDGE_SECRET_KEY": "procfile-test-secret",
        "BRIDGE_ADMIN_PASSWORD": "procfile-password",
        "PYTHONUNBUFFERED": "1",
    }
    honcho = subprocess.Popen(
        [str(VENV_BIN / "honcho"), "--no-colour", "start", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, like a shell's foreground job
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(honcho.stdout), daemon=True)
    reader.start()
    try:

        def web_answers():
            try:
                return requests.get(f"http://127.0.0.1:{port}/login", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_until(web_answers, timeout=30, interval=0.2, what="the web server answers")
        wait_until(
            lambda: database.exists() and heartbeat(database),
            timeout=30,
            interval=0.2,
            what="the worker's heartbeat",
        )
        os.killpg(honcho.pid, signal.SIGINT)  # what Ctrl-C does
        assert honcho.wait(timeout=30) is not None
    finally:
        if honcho.poll() is None:
            os.killpg(honcho.pid, signal.SIGKILL)
            honcho.wait(timeout=10)
        reader.join(timeout=10)
        honcho.stdout.close()
        # honcho gives each process its own group: a failed run must not leave them behind.
        for pid in started_pids("".join(lines)).values():
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass  # stopped, as it should have
    output = "".join(lines)
    pids = started_pids(output)
    assert set(pids) == {"web", "worker"}, output
    assert re.search(r"web\.1\s+\| .*Listening at: http://127\.0\.0\.1:%d" % port, output)
    for name, pid in pids.items():
        assert re.search(rf"{name}\.1 stopped \(rc=0\)", output), output
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)  # nothing left of it


def started_pids(output: str) -> dict[str, int]:
    """The pid of each Procfile line, as honcho announces it ("web.1 started (pid=42)")."""
    return {name: int(pid) for name, pid in re.findall(r"(\w+)\.1 started \(pid=(\d+)\)", output)}


def heartbeat(database: Path) -> bool:
    import sqlite3

    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5)
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'worker_heartbeat'").fetchone()
    except sqlite3.OperationalError:  # the schema is not there yet
        return False
    finally:
        conn.close()
    return bool(row and row[0])
