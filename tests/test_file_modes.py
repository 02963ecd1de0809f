"""The instance folder, the database (-wal, -shm) and the secret key are owner-only.

They hold the bot token, the webhook token and the callback secret in plain
text. Each test runs under the umasks a shell commonly has (0022, 0002).
"""

from __future__ import annotations

import os
import stat

import pytest

from bridge import create_app, instance_secret_key
from bridge.store import Store, close_shared_connection
from tests.live import LiveBridge

UMASKS = [0o022, 0o002]


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(params=UMASKS, ids=lambda value: f"umask{value:04o}")
def umask(request):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def test_new_database_and_its_wal_and_shm_are_owner_only(tmp_path, umask):
    path = tmp_path / "bridge.db"
    store = Store(str(path))
    try:
        store.migrate()
        store.set_meta("probe", "x")  # a write, so -wal and -shm exist while open
        files = [path, tmp_path / "bridge.db-wal", tmp_path / "bridge.db-shm"]
        assert {f.name: oct(mode(f)) for f in files} == {f.name: oct(0o600) for f in files}
    finally:
        store.close()


def test_a_database_left_readable_by_others_is_tightened_when_opened(tmp_path, umask):
    path = tmp_path / "bridge.db"
    Store(str(path)).close()
    files = [path, tmp_path / "bridge.db-wal", tmp_path / "bridge.db-shm"]
    for name in files:
        name.touch()
        os.chmod(name, 0o644)  # as an older version (or a copy) left them
    store = Store(str(path))
    try:
        store.migrate()
        store.set_meta("probe", "x")
        assert {f.name: oct(mode(f)) for f in files} == {f.name: oct(0o600) for f in files}
    finally:
        store.close()


def test_secret_key_and_instance_folder_are_owner_only(tmp_path, umask):
    instance = tmp_path / "instance"
    key = instance_secret_key(str(instance))
    assert len(key) == 64
    assert oct(mode(instance)) == oct(0o700)
    assert oct(mode(instance / "secret_key")) == oct(0o600)


def test_an_existing_open_instance_folder_and_key_are_tightened(tmp_path, umask):
    instance = tmp_path / "instance"
    instance.mkdir()
    os.chmod(instance, 0o755)  # as a git checkout leaves instance/
    (instance / "secret_key").write_text("k" * 64)
    os.chmod(instance / "secret_key", 0o644)
    assert instance_secret_key(str(instance)) == "k" * 64
    assert oct(mode(instance)) == oct(0o700)
    assert oct(mode(instance / "secret_key")) == oct(0o600)


def test_flask_init_makes_a_private_database_outside_the_instance_folder(
    tmp_path, umask, monkeypatch
):
    """BRIDGE_DATABASE may point elsewhere: init creates that folder 0700 and the file 0600."""
    monkeypatch.delenv("BRIDGE_SECRET_KEY", raising=False)
    database = tmp_path / "data" / "bridge" / "bridge.db"
    app = create_app({"TESTING": True, "SECRET_KEY": "k", "DATABASE": str(database)})
    app.instance_path = str(tmp_path / "instance")
    result = app.test_cli_runner().invoke(args=["init"])
    close_shared_connection(str(database))
    assert result.exit_code == 0, result.output
    assert oct(mode(database.parent)) == oct(0o700)
    assert oct(mode(database)) == oct(0o600)
    assert oct(mode(tmp_path / "instance")) == oct(0o700)
    assert oct(mode(tmp_path / "instance" / "secret_key")) == oct(0o600)


@pytest.mark.integration
def test_gunicorn_started_with_umask_0002_keeps_the_database_private(tmp_path):
    """`flask init` and the gunicorn workers inherit the shell's umask; the files stay 0600."""
    previous = os.umask(0o002)
    try:
        bridge = LiveBridge(tmp_path / "live").start()
    finally:
        os.umask(previous)
    try:
        bridge.login()  # a write from a worker: -wal and -shm exist while it runs
        database = bridge.instance / "bridge.db"
        files = [database, database.with_name("bridge.db-wal"), database.with_name("bridge.db-shm")]
        assert {f.name: oct(mode(f)) for f in files} == {f.name: oct(0o600) for f in files}
    finally:
        bridge.stop()
