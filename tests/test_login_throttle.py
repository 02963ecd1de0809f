"""Login throttling per client address and in all, shared by every gunicorn worker."""

from __future__ import annotations

import re

import pytest
import requests

from bridge import create_app
from bridge.store import Store, close_shared_connection
from bridge.views.auth import LOGIN_TRIES_IN_ALL, LOGIN_TRIES_PER_ADDRESS, LOGIN_WINDOW_SECONDS
from tests.conftest import ADMIN_PASSWORD
from tests.live import LiveBridge

ENV_PASSWORD = "environment password"


def attempt(client, password: str, address: str = "203.0.113.7"):
    return client.post(
        "/login",
        data={"name": "Mallory", "password": password},
        environ_overrides={"REMOTE_ADDR": address},
    )


@pytest.fixture
def with_password(runner):
    runner.invoke(args=["set-password", "--password", ADMIN_PASSWORD])


def assert_throttled(response) -> None:
    assert response.status_code == 429
    wait = int(response.headers["Retry-After"])
    assert 1 <= wait <= LOGIN_WINDOW_SECONDS
    page = response.get_data(as_text=True)
    assert f"Too many login attempts. Wait {wait} second" in page
    assert 'name="password"' in page  # still the login page, readable


def test_an_address_gets_a_few_tries_a_minute_then_429_with_a_wait(client, with_password):
    for _ in range(LOGIN_TRIES_PER_ADDRESS):
        assert attempt(client, "wrong password").status_code == 200
    assert_throttled(attempt(client, "wrong password"))
    # Not even the right password is checked from there until the window ends.
    assert_throttled(attempt(client, ADMIN_PASSWORD))


@pytest.fixture
def env_client(tmp_path):
    """BRIDGE_ADMIN_PASSWORD (a plain comparison: fast, so many tries stay cheap)."""
    database = str(tmp_path / "b.db")
    Store(database).migrate()
    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "k",
            "DATABASE": database,
            "WTF_CSRF_ENABLED": False,
            "ADMIN_PASSWORD": ENV_PASSWORD,
        }
    )
    yield app.test_client()
    close_shared_connection(database)


def test_the_environment_password_is_throttled_as_well(env_client):
    for _ in range(LOGIN_TRIES_PER_ADDRESS):
        assert attempt(env_client, "wrong password").status_code == 200
    assert_throttled(attempt(env_client, ENV_PASSWORD))


def test_another_address_still_logs_in_while_one_is_throttled(env_client):
    for _ in range(LOGIN_TRIES_PER_ADDRESS + 3):
        attempt(env_client, "wrong password")
    assert attempt(env_client, ENV_PASSWORD, address="198.51.100.20").status_code == 302


def test_many_addresses_together_are_throttled_too(env_client):
    addresses = [f"192.0.2.{n}" for n in range(1, 100)]
    tries = iter(addresses * LOGIN_TRIES_PER_ADDRESS)  # never over one address's own limit
    for _ in range(LOGIN_TRIES_IN_ALL):
        assert attempt(env_client, "wrong password", next(tries)).status_code == 200
    assert_throttled(attempt(env_client, "wrong password", "198.51.100.99"))
    # The trade-off: meanwhile the admin waits too, for at most the window.
    assert_throttled(attempt(env_client, ENV_PASSWORD, "198.51.100.100"))


def test_tries_refused_by_the_overall_limit_do_not_count_against_the_address(env_client):
    addresses = [f"192.0.2.{n}" for n in range(1, 100)]
    tries = iter(addresses * LOGIN_TRIES_PER_ADDRESS)
    for _ in range(LOGIN_TRIES_IN_ALL):
        attempt(env_client, "wrong password", next(tries))
    for _ in range(LOGIN_TRIES_PER_ADDRESS + 2):  # all refused by the overall count
        assert_throttled(attempt(env_client, ENV_PASSWORD, "198.51.100.100"))
    store = Store(env_client.application.config["DATABASE"])
    assert store.db["rate_limits"].get("login:198.51.100.100")["hits"] == 0
    store.close()


def test_successful_logins_do_not_use_up_the_limits(env_client):
    for n in range(LOGIN_TRIES_IN_ALL + 1):
        assert attempt(env_client, ENV_PASSWORD, f"192.0.2.{n % 2}").status_code == 302
    for _ in range(LOGIN_TRIES_PER_ADDRESS):
        assert attempt(env_client, "wrong password", "192.0.2.0").status_code == 200


@pytest.mark.integration
def test_gunicorn_workers_share_the_count(tmp_path):
    """Two workers, BRIDGE_ADMIN_PASSWORD (the probe's 30 tries in 0.4 s): the sixth try is a 429."""
    with LiveBridge(tmp_path / "live", workers=2) as bridge:
        statuses = []
        for _ in range(LOGIN_TRIES_PER_ADDRESS + 1):
            session = requests.Session()  # a fresh connection: any worker may answer
            page = session.get(bridge.url + "/login", timeout=10).text
            token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
            response = session.post(
                bridge.url + "/login",
                data={"name": "Mallory", "password": "wrong", "csrf_token": token},
                timeout=10,
            )
            statuses.append(response.status_code)
            session.close()
        assert statuses == [200] * LOGIN_TRIES_PER_ADDRESS + [429]
