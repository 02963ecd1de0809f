"""The stand-in as an OAuth 2.0 provider behaves as server/channels/web/oauth.go and
app/oauth.go: authorize redirects, the token endpoint's checks, order and errors."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
import requests

CALLBACK = "http://127.0.0.1:9/login/mattermost/callback"


@pytest.fixture
def app(mm):
    mm.oauth_user = None
    return mm.add_oauth_app([CALLBACK])


def authorize(mm, app, **extra):
    params = {
        "response_type": "code",
        "client_id": app["id"],
        "redirect_uri": CALLBACK,
        "state": "st4te",
        **extra,
    }
    return requests.get(
        mm.url + "/oauth/authorize", params=params, allow_redirects=False, timeout=10
    )


def code_for(mm, app) -> str:
    mm.oauth_user = mm.agent
    location = authorize(mm, app).headers["Location"]
    assert location.startswith(CALLBACK + "?")
    query = parse_qs(urlsplit(location).query)
    assert query["state"] == ["st4te"]
    return query["code"][0]


def token(mm, **form):
    return requests.post(mm.url + "/oauth/access_token", data=form, timeout=10)


def test_authorize_sends_a_logged_out_browser_to_login_and_checks_the_callback(mm, app):
    answer = authorize(mm, app)
    assert answer.status_code == 302
    location = urlsplit(answer.headers["Location"])
    assert location.path == "/login"
    assert parse_qs(location.query)["redirect_to"][0].startswith("/oauth/authorize?")
    mm.oauth_user = mm.agent
    wrong = authorize(mm, app, redirect_uri="http://127.0.0.1:9/elsewhere")
    assert urlsplit(wrong.headers["Location"]).path == "/error"
    assert parse_qs(urlsplit(wrong.headers["Location"]).query)["type"] == [
        "oauth_invalid_redirect_url"
    ]
    unknown = authorize(mm, {"id": "x" * 26})
    assert urlsplit(unknown.headers["Location"]).path == "/error"


def test_the_token_endpoint_checks_in_the_servers_order_and_spends_the_code_once(mm, app):
    code = code_for(mm, app)
    good = {
        "grant_type": "authorization_code",
        "code": code,
        "client_id": app["id"],
        "client_secret": app["client_secret"],
        "redirect_uri": CALLBACK,
    }
    for changed, status, error_id in (
        ({"grant_type": "password"}, 400, "api.oauth.get_access_token.bad_grant.app_error"),
        ({"code": ""}, 400, "api.oauth.get_access_token.missing_code.app_error"),
        ({"client_id": "short"}, 400, "api.oauth.get_access_token.bad_client_id.app_error"),
        ({"client_id": "y" * 26}, 404, "api.oauth.get_access_token.credentials.app_error"),
        ({"client_secret": "wrong"}, 403, "api.oauth.get_access_token.credentials.app_error"),
        ({"code": "z" * 52}, 400, "api.oauth.get_access_token.expired_code.app_error"),
        (
            {"redirect_uri": CALLBACK + "x"},
            400,
            "api.oauth.get_access_token.redirect_uri.app_error",
        ),
    ):
        refused = token(mm, **{**good, **changed})
        assert (refused.status_code, refused.json()["id"]) == (status, error_id), changed
    answer = token(mm, **good)  # none of the refusals spent the code
    assert answer.status_code == 200
    assert answer.headers["Cache-Control"] == "no-store"
    body = answer.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope", "refresh_token"}
    assert body["token_type"] == "bearer" and body["expires_in"] == 720 * 3600
    me = requests.get(
        mm.url + "/api/v4/users/me",
        headers={"Authorization": f"Bearer {body['access_token']}"},
        timeout=10,
    )
    assert me.json()["username"] == mm.agent["username"]
    again = token(mm, **good)
    assert (again.status_code, again.json()["id"]) == (
        400,
        "api.oauth.get_access_token.expired_code.app_error",
    )


def test_an_untrusted_app_gets_the_consent_page_not_a_code(mm):
    app = mm.add_oauth_app([CALLBACK], trusted=False)
    mm.oauth_user = mm.agent
    answer = authorize(mm, app)
    assert answer.status_code == 200 and "text/html" in answer.headers["Content-Type"]
