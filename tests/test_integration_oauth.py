"""Sign in with Mattermost under gunicorn, against the stand-in as OAuth provider.

Each sign-in goes through real HTTP: the bridge's /login/mattermost, the
stand-in's /oauth/authorize (its "logged-in user" decides who authorizes), the
bridge's callback, the stand-in's /oauth/access_token and users/me.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from tests.live import LiveBridge

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def signed(mm, tmp_path_factory):
    """A bridge whose sign-in is set up with an OAuth app registered in the stand-in."""
    with LiveBridge(tmp_path_factory.mktemp("oauth"), workers=2) as live:
        app = mm.add_oauth_app([live.url + "/login/mattermost/callback"])
        live.cli(
            "oauth",
            "--server-url",
            mm.url,
            "--client-id",
            app["id"],
            "--client-secret",
            app["client_secret"],
        )
        yield live, app


def to_mattermost_and_back(live, mm, browser: requests.Session) -> str:
    """Press the button and let the stand-in authorize; the callback URL it sends back."""
    start = browser.get(live.url + "/login/mattermost", allow_redirects=False, timeout=10)
    assert start.status_code == 302
    authorize = start.headers["Location"]
    assert authorize.startswith(mm.url + "/oauth/authorize?")
    back = browser.get(authorize, allow_redirects=False, timeout=10)
    assert back.status_code == 302, back.text
    callback = back.headers["Location"]
    assert callback.startswith(live.url + "/login/mattermost/callback?")
    return callback


def token_exchanges(mm) -> int:
    return mm.requests_seen.count(("POST", "/oauth/access_token"))


def test_a_system_admin_signs_in(signed, mm):
    signed, _ = signed
    admin = mm.add_user("root-rita", roles="system_user system_admin", in_team=False)
    mm.oauth_user = admin
    browser = requests.Session()
    before = token_exchanges(mm)
    landed = browser.get(to_mattermost_and_back(signed, mm, browser), timeout=10)
    assert landed.status_code == 200 and landed.url == signed.url + "/"
    assert re.search(r"<button class=\"link\">Log out root-rita</button>", landed.text)
    assert token_exchanges(mm) == before + 1
    assert ("GET", "/api/v4/users/me") in mm.requests_seen
    row = signed.query("SELECT value FROM meta WHERE key = 'oauth_last_sign_in'")
    assert '"username": "root-rita"' in row[0]["value"]


def test_a_plain_user_is_refused(signed, mm):
    signed, _ = signed
    mm.oauth_user = mm.add_user("plain-paul")
    browser = requests.Session()
    refused = browser.get(to_mattermost_and_back(signed, mm, browser), timeout=10)
    assert refused.status_code == 403
    assert "@plain-paul signed in to Mattermost, but only system admins may" in refused.text
    dashboard = browser.get(signed.url + "/", allow_redirects=False, timeout=10)
    assert dashboard.status_code == 302 and "/login" in dashboard.headers["Location"]


def test_a_replayed_state_is_refused(signed, mm):
    signed, _ = signed
    mm.oauth_user = mm.add_user("root-rolf", roles="system_user system_admin")
    browser = requests.Session()
    callback = to_mattermost_and_back(signed, mm, browser)
    old_cookie = browser.cookies.get("session")
    assert browser.get(callback, timeout=10).url == signed.url + "/"
    exchanges = token_exchanges(mm)
    # The attacker's copy: a fresh browser with the cookie from before the callback.
    replay = requests.Session()
    replay.cookies.set("session", old_cookie)
    refused = replay.get(callback, allow_redirects=False, timeout=10)
    assert refused.status_code == 400
    assert "This sign-in answer was used already" in refused.text
    # The same browser again (its session holds no state any more).
    again = browser.get(callback, allow_redirects=False, timeout=10)
    assert again.status_code == 400
    assert token_exchanges(mm) == exchanges  # never got as far as the code
    dashboard = replay.get(signed.url + "/", allow_redirects=False, timeout=10)
    assert dashboard.status_code == 302


def test_a_code_spent_elsewhere_and_an_unreachable_server_let_nobody_in(signed, mm):
    live, app = signed
    mm.oauth_user = mm.add_user("root-rosa", roles="system_user system_admin")
    browser = requests.Session()
    callback = to_mattermost_and_back(live, mm, browser)
    code = parse_qs(urlsplit(callback).query)["code"][0]
    assert len(code) == 52  # model.NewId() + model.NewId()
    exchange = {
        "grant_type": "authorization_code",
        "code": code,
        "client_id": app["id"],
        "client_secret": "wrong",
        "redirect_uri": live.url + "/login/mattermost/callback",
    }
    # The provider checks the secret, then spends the code once.
    assert (
        requests.post(mm.url + "/oauth/access_token", data=exchange, timeout=10).status_code == 403
    )
    exchange["client_secret"] = app["client_secret"]
    spent = requests.post(mm.url + "/oauth/access_token", data=exchange, timeout=10)
    assert spent.status_code == 200 and spent.json()["token_type"] == "bearer"
    refused = browser.get(callback, timeout=10)
    assert refused.status_code == 502
    assert "refused to exchange the sign-in code (HTTP 400)" in refused.text
    assert "invalid_grant: Invalid or expired authorization code." in refused.text
    assert browser.get(live.url + "/", allow_redirects=False, timeout=10).status_code == 302

    callback = to_mattermost_and_back(live, mm, browser)
    mm.stop()
    try:
        unreachable = browser.get(callback, timeout=30)
    finally:
        mm.restart()
    assert unreachable.status_code == 502
    assert "cannot reach 127.0.0.1" in unreachable.text
    assert browser.get(live.url + "/", allow_redirects=False, timeout=10).status_code == 302
