"""bridge/mattermost.py: the REST client and its typed errors, against requests-mock."""

from __future__ import annotations

import dataclasses

import pytest
import requests

from bridge import mattermost as mm
from tests.ids import mm_id

SERVER = "https://chat.example.com"
TOKEN = "sekrittoken0123456789abcdef"
VERSION_ID = "9.11.0.9.11.0.abc123.false"
JSON = {"Content-Type": "application/json", "X-Version-Id": VERSION_ID}
POSTS = f"{SERVER}/api/v4/posts"
ME = f"{SERVER}/api/v4/users/me"
# Real-shaped ids: a real server answers 400 to any other shape in a URL.
CHANNEL, BOT, USER, TEAM = mm_id("ch1"), mm_id("bot1"), mm_id("u1"), mm_id("t1")
POST, NEW_POST, ROOT, GONE_ROOT = mm_id("p1"), mm_id("p2"), mm_id("root1"), mm_id("gone")


def app_error(status: int, error_id: str, message: str) -> dict:
    """A Mattermost AppError body as the server sends it."""
    return {
        "id": error_id,
        "message": message,
        "detailed_error": "",
        "request_id": "r3qu3st1d",
        "status_code": status,
    }


@pytest.fixture
def client(session, records):
    return mm.MattermostClient(SERVER, TOKEN, session=session, on_call=records.append)


def _fail_post(mock, status, body, headers=None):
    mock.post(POSTS, status_code=status, json=body, headers=headers or JSON)


# -- successful calls ------------------------------------------------------------


def test_me_returns_the_user_and_the_short_server_version(mock, client):
    mock.get(ME, json={"id": BOT, "username": "bridgebot", "is_bot": True}, headers=JSON)
    user, version = client.me()
    assert user["username"] == "bridgebot"
    assert version == "9.11.0"


def test_create_post_sends_the_fields_and_returns_the_post(mock, client, records):
    mock.post(POSTS, status_code=201, json={"id": NEW_POST, "channel_id": CHANNEL}, headers=JSON)
    post = client.create_post(
        CHANNEL, "hello", root_id=ROOT, pending_post_id="pend:0", props={"k": "v"}
    )
    assert post["id"] == NEW_POST
    sent = mock.request_history[0].json()
    assert sent == {
        "channel_id": CHANNEL,
        "message": "hello",
        "root_id": ROOT,
        "pending_post_id": "pend:0",
        "props": {"k": "v"},
    }
    assert records[0].ok
    assert records[0].post_id == NEW_POST
    assert records[0].status == 201


def test_create_post_without_root_id_sends_no_root_id(mock, client):
    mock.post(POSTS, status_code=201, json={"id": NEW_POST}, headers=JSON)
    client.create_post(CHANNEL, "hello")
    assert "root_id" not in mock.request_history[0].json()


def test_bearer_token_is_sent_in_the_authorization_header(mock, client):
    mock.get(ME, json={"id": BOT}, headers=JSON)
    client.me()
    assert mock.request_history[0].headers["Authorization"] == f"Bearer {TOKEN}"


def test_every_call_passes_a_connect_and_read_timeout(mock, session):
    mock.get(ME, json={"id": BOT}, headers=JSON)
    mock.get(f"{SERVER}/api/v4/users/{USER}", json={"id": USER}, headers=JSON)
    mock.get(f"{SERVER}/api/v4/users/me/teams", json=[], headers=JSON)
    mock.get(f"{SERVER}/api/v4/users/{BOT}/teams/{TEAM}/channels", json=[], headers=JSON)
    mock.get(f"{SERVER}/api/v4/channels/{CHANNEL}", json={"id": CHANNEL}, headers=JSON)
    mock.get(f"{SERVER}/api/v4/channels/{CHANNEL}/members/{BOT}", json={}, headers=JSON)
    mock.get(f"{SERVER}/api/v4/posts/{POST}", json={"id": POST}, headers=JSON)
    mock.post(POSTS, status_code=201, json={"id": NEW_POST}, headers=JSON)
    client = mm.MattermostClient(SERVER, TOKEN, session=session, timeout=(1.5, 4.0))
    client.me()
    client.user(USER)
    client.teams()
    client.channels_for_team(BOT, TEAM)
    client.channel(CHANNEL)
    client.is_member(CHANNEL, BOT)
    client.post(POST)
    client.create_post(CHANNEL, "hi")
    assert len(mock.request_history) == 8
    assert all(request.timeout == (1.5, 4.0) for request in mock.request_history)


def test_default_timeout_has_connect_and_read_parts(mock, session):
    mock.get(ME, json={"id": BOT}, headers=JSON)
    mm.MattermostClient(SERVER, TOKEN, session=session).me()
    timeout = mock.request_history[0].timeout
    assert isinstance(timeout, tuple) and len(timeout) == 2
    assert all(part > 0 for part in timeout)


def test_is_member_is_false_on_404(mock, client):
    mock.get(
        f"{SERVER}/api/v4/channels/{CHANNEL}/members/{BOT}",
        status_code=404,
        json=app_error(404, "app.channel.get_member.missing.app_error", "No channel member found."),
        headers=JSON,
    )
    assert client.is_member(CHANNEL, BOT) is False


def test_client_accepts_a_server_url_with_api_path(mock, session):
    mock.get(ME, json={"id": BOT}, headers=JSON)
    client = mm.MattermostClient("chat.example.com/api/v4/", TOKEN, session=session)
    client.me()
    assert mock.request_history[0].url == ME


# -- Mattermost's AppError bodies become typed errors ----------------------------


def test_401_is_unauthorized_and_says_the_token_is_invalid_or_revoked(mock, client):
    _fail_post(
        mock,
        401,
        app_error(
            401,
            "api.context.session_expired.app_error",
            "Invalid or expired session, please login again.",
        ),
    )
    with pytest.raises(mm.Unauthorized) as caught:
        client.create_post(CHANNEL, "hi")
    message = str(caught.value)
    assert "token" in message
    assert "invalid" in message and "revoked" in message
    assert caught.value.status == 401
    assert caught.value.error_id == "api.context.session_expired.app_error"
    assert not caught.value.retryable


def test_403_is_forbidden_and_keeps_the_server_message(mock, client):
    _fail_post(
        mock,
        403,
        app_error(
            403, "api.context.permissions.app_error", "You do not have the appropriate permissions."
        ),
    )
    with pytest.raises(mm.Forbidden) as caught:
        client.create_post(CHANNEL, "hi")
    assert "member of the channel" in str(caught.value)
    assert "appropriate permissions" in str(caught.value)
    assert not caught.value.retryable


def test_400_is_bad_request(mock, client):
    _fail_post(
        mock,
        400,
        app_error(400, "api.post.create_post.root_id.app_error", "Invalid RootId parameter."),
    )
    with pytest.raises(mm.BadRequest) as caught:
        client.create_post(CHANNEL, "hi", root_id=GONE_ROOT)
    assert "Invalid RootId" in str(caught.value)
    assert caught.value.error_id == "api.post.create_post.root_id.app_error"
    assert not caught.value.retryable


def test_404_is_not_found(mock, client):
    mock.get(
        f"{SERVER}/api/v4/posts/{POST}",
        status_code=404,
        json=app_error(404, "app.post.get.app_error", "Unable to get the post."),
        headers=JSON,
    )
    with pytest.raises(mm.NotFound) as caught:
        client.post(POST)
    assert caught.value.status == 404


@pytest.mark.parametrize("status", [500, 503])
def test_5xx_is_a_retryable_server_error(mock, client, status):
    _fail_post(
        mock, status, app_error(status, "app.post.save.app_error", "Unable to save the post.")
    )
    with pytest.raises(mm.ServerError) as caught:
        client.create_post(CHANNEL, "hi")
    assert caught.value.retryable
    assert caught.value.status == status


@pytest.mark.parametrize(
    "headers, expected",
    [
        ({"Retry-After": "7", "X-RateLimit-Reset": "3"}, 7.0),
        ({"X-RateLimit-Reset": "3"}, 3.0),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT", "X-RateLimit-Reset": "4"}, 4.0),
        ({}, 1.0),
    ],
)
def test_429_with_a_plain_text_body_is_rate_limited_with_retry_after(
    mock, client, headers, expected
):
    mock.post(
        POSTS,
        status_code=429,
        text="limit exceeded\n",
        headers={
            "Content-Type": "text/plain; charset=utf-8",
            "X-RateLimit-Limit": "10",
            "X-RateLimit-Remaining": "0",
            **headers,
        },
    )
    with pytest.raises(mm.RateLimited) as caught:
        client.create_post(CHANNEL, "hi")
    assert caught.value.retry_after == expected
    assert caught.value.retryable
    assert caught.value.status == 429


def test_429_with_an_epoch_reset_becomes_seconds_from_now(mock, client):
    import time

    before = time.time()
    reset = int(before) + 5
    mock.post(
        POSTS, status_code=429, text="limit exceeded\n", headers={"X-RateLimit-Reset": str(reset)}
    )
    with pytest.raises(mm.RateLimited) as caught:
        client.create_post(CHANNEL, "hi")
    after = time.time()
    # Read at some moment between before and after: no guess about how long that took.
    assert reset - after <= caught.value.retry_after <= reset - before


@pytest.mark.parametrize(
    "exc",
    [
        requests.exceptions.ConnectionError,
        requests.exceptions.ConnectTimeout,
        requests.exceptions.ReadTimeout,
    ],
)
def test_no_answer_is_unreachable_and_retryable(mock, client, exc):
    mock.post(POSTS, exc=exc)
    with pytest.raises(mm.Unreachable) as caught:
        client.create_post(CHANNEL, "hi")
    assert "chat.example.com" in str(caught.value)
    assert caught.value.retryable


def test_timeout_says_timeout(mock, client):
    mock.get(ME, exc=requests.exceptions.ReadTimeout)
    with pytest.raises(mm.Unreachable, match="timeout"):
        client.me()


def test_tls_error_is_a_tls_failure(mock, client):
    mock.get(ME, exc=requests.exceptions.SSLError)
    with pytest.raises(mm.TLSFailure) as caught:
        client.me()
    assert "certificate" in str(caught.value)
    assert not caught.value.retryable


@pytest.mark.parametrize("status", [200, 404])
def test_html_page_without_version_header_is_not_mattermost(mock, client, status):
    mock.get(
        ME,
        status_code=status,
        text="<html><body>Welcome to nginx!</body></html>",
        headers={"Content-Type": "text/html"},
    )
    with pytest.raises(mm.NotMattermost) as caught:
        client.me()
    assert "server URL" in str(caught.value)


def test_scheme_alone_is_not_a_server_url():
    # "https://" must not become "https://https:" (a host named "https").
    with pytest.raises(ValueError):
        mm.normalize_server_url("https://")


def test_redirect_is_not_followed_and_reported(mock, client):
    mock.get(ME, status_code=301, headers={"Location": "https://elsewhere.example.com/"})
    with pytest.raises(mm.MattermostError):
        client.me()
    assert len(mock.request_history) == 1


def test_proxy_502_page_while_mattermost_restarts_is_a_retryable_server_error(mock, client):
    # nginx in front of Mattermost answers 502 with its own HTML page (no
    # X-Version-Id) while Mattermost restarts: a passing outage, not a wrong URL.
    mock.post(
        POSTS,
        status_code=502,
        text="<html><h1>502 Bad Gateway</h1></html>",
        headers={"Content-Type": "text/html"},
    )
    with pytest.raises(mm.MattermostError) as caught:
        client.create_post(CHANNEL, "hi")
    assert isinstance(caught.value, mm.ServerError)
    assert caught.value.retryable


def test_json_content_type_with_a_body_that_is_not_json_is_not_mattermost(mock, client):
    mock.post(
        POSTS,
        status_code=201,
        text="<html>oops</html>",
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(mm.NotMattermost):
        client.create_post(CHANNEL, "hi")


# -- the token never leaks ----------------------------------------------------------


@pytest.mark.parametrize(
    "setup",
    [
        lambda m: _fail_post(m, 401, app_error(401, "x", "Invalid or expired session")),
        lambda m: _fail_post(m, 403, app_error(403, "x", "no")),
        lambda m: _fail_post(m, 500, app_error(500, "x", "boom")),
        lambda m: m.post(POSTS, status_code=429, text="limit exceeded"),
        lambda m: m.post(POSTS, exc=requests.exceptions.ConnectionError(f"Bearer {TOKEN}")),
        lambda m: m.post(POSTS, exc=requests.exceptions.SSLError(f"token {TOKEN}")),
        lambda m: m.post(POSTS, status_code=200, text="<html></html>"),
        lambda m: m.post(POSTS, status_code=201, json={"id": NEW_POST}, headers=JSON),
    ],
)
def test_token_never_appears_in_errors_or_call_records(mock, client, records, setup):
    setup(mock)
    try:
        client.create_post(CHANNEL, "hi")
    except mm.MattermostError as exc:
        assert TOKEN not in str(exc)
        assert TOKEN not in repr(exc)
        assert TOKEN not in exc.detail
    assert len(records) == 1
    assert TOKEN not in repr(dataclasses.asdict(records[0]))


def test_failed_call_is_recorded_with_status_and_error(mock, client, records):
    _fail_post(mock, 403, app_error(403, "x", "no"))
    with pytest.raises(mm.Forbidden):
        client.create_post(CHANNEL, "hi", action="test_message")
    record = records[0]
    assert not record.ok
    assert record.action == "test_message"
    assert record.method == "POST"
    assert record.target == CHANNEL
    assert record.status == 403
    assert record.error.startswith("403")
    assert record.duration_ms >= 0


def test_unreachable_call_is_recorded_without_status(mock, client, records):
    mock.get(ME, exc=requests.exceptions.ConnectionError)
    with pytest.raises(mm.Unreachable):
        client.me()
    assert records[0].status is None
    assert records[0].action == "verify"
    assert not records[0].ok


# -- helpers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "given, expected",
    [
        ("chat.example.com", "https://chat.example.com"),
        ("chat.example.com/", "https://chat.example.com"),
        ("  https://chat.example.com/  ", "https://chat.example.com"),
        ("http://localhost:8065", "http://localhost:8065"),
        ("https://chat.example.com/api/v4", "https://chat.example.com"),
        ("https://chat.example.com/api/v4/", "https://chat.example.com"),
        ("https://example.com/mattermost/", "https://example.com/mattermost"),
        ("localhost:8065", "https://localhost:8065"),
    ],
)
def test_normalize_server_url(given, expected):
    assert mm.normalize_server_url(given) == expected


@pytest.mark.parametrize("junk", ["", "   ", "ftp://chat.example.com", "https:///path"])
def test_normalize_server_url_rejects_junk(junk):
    with pytest.raises(ValueError):
        mm.normalize_server_url(junk)


@pytest.mark.parametrize(
    "header, expected",
    [("9.11.0.9.11.0.abc.false", "9.11.0"), ("10.0.1", "10.0.1"), ("", "")],
)
def test_server_version(header, expected):
    assert mm.server_version(header) == expected
