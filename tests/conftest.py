"""Fixtures: the app on a temporary database, its client and CLI runner; a requests
Session mocked with requests-mock and the call records a Mattermost client reports."""

from __future__ import annotations

import pytest
import requests
import requests_mock as rm

from bridge import create_app
from bridge.store import Store, close_shared_connection

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
    yield app
    close_shared_connection(app.config["DATABASE"])


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
def session():
    """A Session of its own for a MattermostClient under test (closed afterwards)."""
    with requests.Session() as session:
        yield session


@pytest.fixture
def mock(session):
    """requests-mock on that Session only."""
    with rm.Mocker(session=session) as mocker:
        yield mocker


@pytest.fixture
def records():
    """Where a client's ``on_call`` records go."""
    return []


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


# -- live integration: gunicorn + the Mattermost stand-in ------------------------------


@pytest.fixture(scope="module")
def mm():
    """A live Mattermost stand-in on 127.0.0.1 (fresh world per test module)."""
    from tests.standin import MattermostStandin

    standin = MattermostStandin().start()
    yield standin
    standin.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """The bridge under gunicorn (2 workers) with its own database."""
    from tests.live import LiveBridge

    bridge = LiveBridge(tmp_path_factory.mktemp("live"))
    with bridge:
        yield bridge


def configure_env(live, mm, env="test", *, bot=None, channel="support", extra=()):
    """Configure and activate an environment the way an admin's script would."""
    bot = bot or (mm.bot if env == "test" else mm.prod_bot)
    live.cli(
        "configure",
        env,
        "--server-url",
        mm.url,
        "--bot-token",
        bot["token"],
        "--webhook-token",
        f"{env}-webhook-token-0123456789"[:26],
        "--channel",
        mm.channels[channel]["id"],
        "--notify",
        f"booking.created={mm.channels['sales']['id']}",
        *extra,
        "--activate",
    )
    return live.api_key(env)
