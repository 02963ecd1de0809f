"""deploy/: the systemd units and the nginx snippet for the Mattermost box.

``systemd-analyze verify`` checks the units where it is installed (Debian's
``systemd`` package); it needs the programs they start to exist, so the test
points copies of the units at this checkout and its .venv. ``nginx -t``
checks the snippet inside a server block where nginx is installed.
"""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.live import ROOT
from tests.test_run import load_gunicorn_conf

DEPLOY = ROOT / "deploy"
UNITS = ("mattermost-bridge-web.service", "mattermost-bridge-worker.service")
INSTALL_DIR = "/opt/mattermost-bridge"
ENV_FILE = "/etc/mattermost-bridge/bridge.env"


def service_section(name: str) -> dict[str, list[str]]:
    """The [Service] keys of a unit, each with all its values (systemd allows repeats)."""
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # systemd keys are case-sensitive
    values: dict[str, list[str]] = {}
    section = ""
    for line in (DEPLOY / name).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        if section == "Service":
            values.setdefault(key.strip(), []).append(value.strip())
    return values


@pytest.mark.parametrize("name", UNITS)
def test_units_run_as_their_own_user_with_umask_0077_and_restart_on_failure(name):
    service = service_section(name)
    assert service["User"] == ["mattermost-bridge"] and service["Group"] == ["mattermost-bridge"]
    assert service["UMask"] == ["0077"]
    assert service["Restart"] == ["on-failure"]
    assert service["WorkingDirectory"] == [INSTALL_DIR]
    assert service["EnvironmentFile"] == [ENV_FILE]
    assert service["ReadWritePaths"] == [f"{INSTALL_DIR}/instance"]
    assert service["ProtectSystem"] == ["strict"]


def test_units_start_what_the_procfile_starts():
    procfile = dict(
        line.split(":", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line
    )
    assert procfile["web"].strip().endswith("exec gunicorn app:app")
    assert procfile["worker"].strip().endswith("exec flask --app app worker")
    web, worker = (service_section(name) for name in UNITS)
    assert web["ExecStart"] == [f"{INSTALL_DIR}/.venv/bin/gunicorn app:app"]
    assert worker["ExecStart"] == [f"{INSTALL_DIR}/.venv/bin/flask --app app worker"]
    for unit in (web, worker):
        assert unit["ExecStartPre"] == [f"{INSTALL_DIR}/.venv/bin/flask --app app init"]


def test_stop_timeouts_leave_room_for_what_is_in_flight():
    web, worker = (service_section(name) for name in UNITS)
    conf = load_gunicorn_conf({})
    # gunicorn's graceful stop must end before systemd kills it.
    assert int(web["TimeoutStopSec"][0]) > conf["graceful_timeout"]
    assert web["KillMode"] == ["mixed"] and web["Type"] == ["notify"]
    # The worker's item in hand: a look for posted parts plus the post, 2 x 13.05 s.
    assert int(worker["TimeoutStopSec"][0]) > 2 * 13.05
    assert worker["KillSignal"] == ["SIGTERM"]


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (Debian package 'systemd')",
)
def test_units_pass_systemd_analyze_verify(tmp_path):
    venv_bin = Path(sys.executable).parent
    env_file = tmp_path / "bridge.env"
    shutil.copy(DEPLOY / "bridge.env.example", env_file)
    copies = []
    for name in UNITS:
        text = (DEPLOY / name).read_text()
        text = text.replace(f"{INSTALL_DIR}/.venv/bin", str(venv_bin))
        text = text.replace(INSTALL_DIR, str(ROOT)).replace(ENV_FILE, str(env_file))
        (tmp_path / name).write_text(text)
        copies.append(str(tmp_path / name))
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *copies],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # verify exits 0 on keys it ignores (a typo, a bad value): those print a line.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")
def test_nginx_snippet_is_valid_inside_a_server_block(tmp_path):
    (tmp_path / "logs").mkdir()
    config = tmp_path / "nginx.conf"
    config.write_text(
        f"pid {tmp_path}/nginx.pid;\n"
        f"error_log {tmp_path}/logs/error.log;\n"
        "events {}\n"
        "http {\n"
        f"  access_log {tmp_path}/logs/access.log;\n"
        "  server {\n"
        "    listen 127.0.0.1:8443;\n"
        f"    include {DEPLOY / 'nginx-mattermost-bridge.conf'};\n"
        "  }\n"
        "}\n"
    )
    result = subprocess.run(
        ["nginx", "-t", "-p", str(tmp_path), "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
