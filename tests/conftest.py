"""Fixtures: the app on a temporary database, its client and CLI runner."""

from __future__ import annotations

import pytest

from bridge import create_app
from bridge.store import Store

ADMIN_PASSWORD = "correct horse battery"


@pytest.fixture
def app(tmp_path):
    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "test-secret-key",
            "DATABASE": str(tmp_path / "bridge.db"),
            "WTF_CSRF_ENABLED": False,
            "SEND_RETRY_BUDGET": 0.5,
        }
    )
    with app.app_context():
        Store(app.config["DATABASE"]).migrate()
    return app


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def store(app):
    store = Store(app.config["DATABASE"])
    yield store
    store.close()


@pytest.fixture
def admin(client, runner):
    """A test client logged in as the admin."""
    runner.invoke(args=["set-password", "--password", ADMIN_PASSWORD])
    response = client.post("/login", data={"name": "Ada", "password": ADMIN_PASSWORD})
    assert response.status_code == 302
    return client


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """Debian's Chromium: Playwright's own browser download cannot work here."""
    return {
        **browser_type_launch_args,
        "executable_path": "/usr/bin/chromium",
        "args": [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ],
    }
