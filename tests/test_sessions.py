"""Admin sessions: ended by logout and by a new password, idle expiry, Secure cookie, proxy path."""

from __future__ import annotations

import time
from datetime import timedelta

import itsdangerous
import pytest

from bridge import create_app
from bridge.store import Store, close_shared_connection
from tests.conftest import ADMIN_PASSWORD


def saved_cookie(client) -> str:
    return client.get_cookie("session").value


def with_cookie(app, value: str):
    """Another browser that replays a saved session cookie."""
    other = app.test_client()
    other.set_cookie("session", value)
    return other


def opens_dashboard(client) -> bool:
    response = client.get("/")
    if response.status_code == 302:
        assert "/login" in response.headers["Location"] or "/setup" in response.headers["Location"]
        return False
    assert response.status_code == 200
    return True


def test_a_cookie_saved_before_logout_no_longer_opens_the_dashboard(app, admin):
    cookie = saved_cookie(admin)
    assert opens_dashboard(with_cookie(app, cookie))
    admin.post("/logout")
    assert not opens_dashboard(with_cookie(app, cookie))
    assert not opens_dashboard(admin)


def test_logout_ends_the_sessions_of_every_browser(app, admin):
    second = app.test_client()
    second.post("/login", data={"name": "Bo", "password": ADMIN_PASSWORD})
    assert opens_dashboard(second)
    admin.post("/logout")
    assert not opens_dashboard(second)


def test_a_logout_without_a_session_ends_nobody_elses(app, admin):
    stranger = app.test_client()
    stranger.get("/login")
    stranger.post("/logout")
    assert opens_dashboard(admin)


def test_set_password_ends_every_earlier_session(app, admin, runner):
    cookie = saved_cookie(admin)
    result = runner.invoke(args=["set-password", "--password", "another password"])
    assert result.exit_code == 0, result.output
    assert not opens_dashboard(with_cookie(app, cookie))
    assert not opens_dashboard(admin)
    admin.post("/login", data={"name": "Ada", "password": "another password"})
    assert opens_dashboard(admin)


def test_sessions_opened_with_the_environment_password_end_when_it_changes(tmp_path):
    database = str(tmp_path / "b.db")
    Store(database).migrate()

    def bridge(password: str):
        config = {"TESTING": True, "SECRET_KEY": "k", "DATABASE": database}
        return create_app({**config, "WTF_CSRF_ENABLED": False, "ADMIN_PASSWORD": password})

    first = bridge("first password")
    client = first.test_client()
    client.post("/login", data={"name": "Ada", "password": "first password"})
    assert opens_dashboard(client)
    second = bridge("second password")  # the same bridge restarted with a new password
    assert not opens_dashboard(with_cookie(second, saved_cookie(client)))
    close_shared_connection(database)


def test_the_setup_page_ends_sessions_of_an_earlier_password(tmp_path):
    """A bridge that ran on BRIDGE_ADMIN_PASSWORD, restarted without it: the setup page."""
    database = str(tmp_path / "b.db")
    Store(database).migrate()
    config = {"TESTING": True, "SECRET_KEY": "k", "DATABASE": database, "WTF_CSRF_ENABLED": False}
    before = create_app({**config, "ADMIN_PASSWORD": "environment password"})
    client = before.test_client()
    client.post("/login", data={"name": "Ada", "password": "environment password"})
    cookie = saved_cookie(client)
    after = create_app(config)
    setup = after.test_client().post(
        "/setup", data={"password": "chosen password", "confirm": "chosen password"}
    )
    assert setup.status_code == 302
    assert not opens_dashboard(with_cookie(after, cookie))
    close_shared_connection(database)


# -- idle expiry ---------------------------------------------------------------------------


@pytest.fixture
def clock(monkeypatch):
    """Move the clock that signs and checks session cookies (itsdangerous) forward."""
    offset = {"seconds": 0}
    real = time.time
    monkeypatch.setattr(
        itsdangerous.TimestampSigner,
        "get_timestamp",
        lambda self: int(real() + offset["seconds"]),
    )
    return offset


def test_a_session_ends_after_12_hours_idle_but_not_while_used(app, admin, clock):
    assert app.config["PERMANENT_SESSION_LIFETIME"] == timedelta(hours=12)
    clock["seconds"] = 11 * 3600
    assert opens_dashboard(admin)  # used: the 12 hours start again
    clock["seconds"] = 22 * 3600
    assert opens_dashboard(admin)  # 22 h after login, 11 h idle
    clock["seconds"] = 34 * 3600 + 60
    assert not opens_dashboard(admin)  # 12 h and a minute idle


def test_the_idle_time_is_configurable(tmp_path, monkeypatch):
    monkeypatch.setenv("BRIDGE_SESSION_IDLE_HOURS", "0.5")
    app = create_app({"TESTING": True, "SECRET_KEY": "k", "DATABASE": str(tmp_path / "b.db")})
    assert app.config["PERMANENT_SESSION_LIFETIME"] == timedelta(minutes=30)
    for bad in ("0", "twelve", "nan"):
        monkeypatch.setenv("BRIDGE_SESSION_IDLE_HOURS", bad)
        with pytest.raises(ValueError, match="BRIDGE_SESSION_IDLE_HOURS"):
            create_app({"TESTING": True, "SECRET_KEY": "k", "DATABASE": str(tmp_path / "b.db")})


# -- the cookie: Secure on HTTPS, path = the proxy prefix --------------------------------


def login_cookie_header(client, **kwargs) -> str:
    response = client.post("/login", data={"name": "Ada", "password": ADMIN_PASSWORD}, **kwargs)
    assert response.status_code == 302, response.get_data(as_text=True)[:300]
    (header,) = [h for h in response.headers.getlist("Set-Cookie") if h.startswith("session=")]
    return header


def cookie_attributes(header: str) -> dict[str, str]:
    parts = [part.strip() for part in header.split(";")[1:]]
    return {k.lower(): v for k, _, v in (part.partition("=") for part in parts)}


def test_cookie_is_secure_on_https_and_not_on_plain_http(app, client, runner):
    runner.invoke(args=["set-password", "--password", ADMIN_PASSWORD])
    plain = cookie_attributes(login_cookie_header(client))
    assert "secure" not in plain and plain["path"] == "/" and "httponly" in plain
    https = cookie_attributes(
        login_cookie_header(app.test_client(), environ_overrides={"wsgi.url_scheme": "https"})
    )
    assert "secure" in https and https["samesite"] == "Lax"


def test_cookie_path_is_the_mount_point(app, client, runner):
    runner.invoke(args=["set-password", "--password", ADMIN_PASSWORD])
    header = login_cookie_header(client, environ_overrides={"SCRIPT_NAME": "/bridge"})
    assert cookie_attributes(header)["path"] == "/bridge"


def test_behind_nginx_the_cookie_follows_x_forwarded_proto_and_prefix(tmp_path, monkeypatch):
    monkeypatch.setenv("BRIDGE_BEHIND_PROXY", "1")
    database = str(tmp_path / "b.db")
    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "k",
            "DATABASE": database,
            "WTF_CSRF_ENABLED": False,
            "ADMIN_PASSWORD": ADMIN_PASSWORD,
        }
    )
    Store(database).migrate()
    header = login_cookie_header(
        app.test_client(),
        headers={"X-Forwarded-Proto": "https", "X-Forwarded-Prefix": "/bridge"},
    )
    attributes = cookie_attributes(header)
    assert attributes["path"] == "/bridge" and "secure" in attributes
    close_shared_connection(database)
