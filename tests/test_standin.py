"""The Mattermost stand-in answers like the real server, over real HTTP."""

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs

import pytest
import requests
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from tests.standin import MAX_POST_SIZE, VERSION_ID, AppError, MattermostStandin

TIMEOUT = 5
APP_ERROR_KEYS = {"id", "message", "detailed_error", "request_id", "status_code"}


class _QuietHandler(WSGIRequestHandler):
    def log(self, type, message, *args):  # noqa: A002 - werkzeug's signature
        pass


class Receiver:
    """A tiny webhook receiver on 127.0.0.1: records each call, answers ``reply_body``."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.reply_body = ""
        self.reply_status = 200
        self._server = make_server(
            "127.0.0.1", 0, self._app, threaded=True, request_handler=_QuietHandler
        )
        self.url = f"http://127.0.0.1:{self._server.server_port}/hook"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def _app(self, environ, start_response):
        request = Request(environ)
        self.calls.append(
            {
                "content_type": request.content_type,
                "user_agent": request.headers.get("User-Agent"),
                "body": request.get_data(as_text=True),
                "authorization": request.headers.get("Authorization"),
            }
        )
        response = Response(self.reply_body, self.reply_status, content_type="application/json")
        return response(environ, start_response)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@pytest.fixture
def mm():
    with MattermostStandin() as standin:
        yield standin
        assert standin.internal_errors == []


@pytest.fixture
def http():
    with requests.Session() as session:
        yield session


@pytest.fixture
def receiver():
    hook_receiver = Receiver()
    yield hook_receiver
    hook_receiver.close()


def bearer(user):
    return {"Authorization": f"Bearer {user['token']}"}


def create_post(http, mm, user, channel_name, message, **extra):
    body = {"channel_id": mm.channels[channel_name]["id"], "message": message, **extra}
    return http.post(f"{mm.url}/api/v4/posts", json=body, headers=bearer(user), timeout=TIMEOUT)


def assert_app_error(response, status, error_id):
    assert response.status_code == status
    body = response.json()
    assert set(body) == APP_ERROR_KEYS
    assert body["id"] == error_id
    assert body["status_code"] == status
    assert body["request_id"] == response.headers["X-Request-Id"]
    assert len(body["request_id"]) == 26


def test_requests_without_a_valid_token_get_401_session_expired(mm, http):
    url = f"{mm.url}/api/v4/users/me"
    missing = http.get(url, timeout=TIMEOUT)
    unknown = http.get(url, headers={"Authorization": "Bearer " + "x" * 26}, timeout=TIMEOUT)
    assert_app_error(missing, 401, "api.context.session_expired.app_error")
    assert missing.json()["message"] == "Invalid or expired session, please login again."
    assert_app_error(unknown, 401, "api.context.session_expired.app_error")

    token_scheme = {"Authorization": f"Token {mm.bot['token']}"}
    assert http.get(url, headers=token_scheme, timeout=TIMEOUT).status_code == 200
    mm.revoke_token(mm.bot["token"])
    assert_app_error(
        http.get(url, headers=bearer(mm.bot), timeout=TIMEOUT),
        401,
        "api.context.session_expired.app_error",
    )
    assert http.get(f"{mm.url}/api/v4/system/ping", timeout=TIMEOUT).json()["status"] == "OK"


def test_login_hands_out_a_session_token_in_the_token_header(mm, http):
    relay = mm.add_account("relay", "relay-password-1")
    login = http.post(
        f"{mm.url}/api/v4/users/login",
        json={"login_id": "Relay@acme.example", "password": "relay-password-1"},
        timeout=TIMEOUT,
    )
    assert login.status_code == 200
    assert login.json()["id"] == relay["id"] and "is_bot" not in login.json()
    assert "relay-password-1" not in login.text and relay["token"] not in login.text
    assert "Set-Cookie" not in login.headers  # only for X-Requested-With: XMLHttpRequest
    session = {"Authorization": f"Bearer {login.headers['Token']}"}
    me = http.get(f"{mm.url}/api/v4/users/me", headers=session, timeout=TIMEOUT)
    assert me.json()["username"] == "relay"
    assert mm.logins == [("Relay@acme.example", True)] and mm.sessions_of(relay) == 1

    mm.expire_sessions(relay)
    expired = http.get(f"{mm.url}/api/v4/users/me", headers=session, timeout=TIMEOUT)
    assert_app_error(expired, 401, "api.context.session_expired.app_error")
    assert expired.json()["message"] == "Invalid or expired session, please login again."


def test_a_wrong_password_or_a_bot_gets_the_masked_credentials_error(mm, http):
    mm.add_account("relay", "relay-password-1")
    url = f"{mm.url}/api/v4/users/login"
    for body in (
        {"login_id": "relay", "password": "wrong"},
        {"login_id": "nobody", "password": "relay-password-1"},
        {"login_id": "bridge-bot", "password": ""},
    ):
        refused = http.post(url, json=body, timeout=TIMEOUT)
        assert_app_error(refused, 401, "api.user.login.invalid_credentials_email_username")
        assert refused.json()["message"] == "Enter a valid email or username and/or password."
        assert "Token" not in refused.headers
    assert [ok for _, ok in mm.logins] == [False, False, False]


def test_logout_revokes_the_session_it_carries(mm, http):
    mm.add_account("relay", "relay-password-1")
    login = http.post(
        f"{mm.url}/api/v4/users/login",
        json={"login_id": "relay", "password": "relay-password-1"},
        timeout=TIMEOUT,
    )
    session = {"Authorization": f"Bearer {login.headers['Token']}"}
    logout = http.post(f"{mm.url}/api/v4/users/logout", headers=session, timeout=TIMEOUT)
    assert logout.status_code == 200 and logout.json() == {"status": "OK"}
    assert_app_error(
        http.get(f"{mm.url}/api/v4/users/me", headers=session, timeout=TIMEOUT),
        401,
        "api.context.session_expired.app_error",
    )


def test_users_me_returns_the_bot_with_version_header_and_no_token(mm, http):
    response = http.get(f"{mm.url}/api/v4/users/me", headers=bearer(mm.bot), timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.headers["X-Version-Id"] == VERSION_ID
    me = response.json()
    assert (me["id"], me["username"], me["is_bot"]) == (mm.bot["id"], "bridge-bot", True)
    assert mm.bot["token"] not in response.text

    alice = http.get(
        f"{mm.url}/api/v4/users/{mm.agent['id']}", headers=bearer(mm.bot), timeout=TIMEOUT
    ).json()
    assert (alice["first_name"], alice["last_name"]) == ("Alice", "Agent")
    assert "is_bot" not in alice  # Go omitempty
    unknown = http.get(f"{mm.url}/api/v4/users/{'a' * 26}", headers=bearer(mm.bot), timeout=TIMEOUT)
    assert_app_error(unknown, 404, "app.user.missing_account.const")
    assert all(mm.bot["token"] not in path for _, path in mm.requests_seen)


def test_channel_list_includes_the_dm_but_not_archived_or_unjoined_channels(mm, http):
    url = f"{mm.url}/api/v4/users/me/teams/{mm.team['id']}/channels"
    channels = http.get(url, headers=bearer(mm.bot), timeout=TIMEOUT).json()
    by_name = {channel["name"]: channel for channel in channels}
    assert set(by_name) == {
        "town-square",
        "support",
        "sales",
        "billing",
        "private-ops",
        mm.dm_channel["name"],
    }
    assert by_name[mm.dm_channel["name"]]["type"] == "D"
    assert by_name[mm.dm_channel["name"]]["team_id"] == ""
    assert mm.dm_channel["name"] == f"{mm.bot['id']}__{mm.agent['id']}"

    with_deleted = http.get(
        url, params={"include_deleted": "true"}, headers=bearer(mm.bot), timeout=TIMEOUT
    ).json()
    assert "archived" in {channel["name"] for channel in with_deleted}
    other = url.replace("/me/", f"/{mm.agent['id']}/")
    assert_app_error(
        http.get(other, headers=bearer(mm.bot), timeout=TIMEOUT),
        403,
        "api.context.permissions.app_error",
    )


def test_channel_member_is_404_when_the_bot_has_not_joined(mm, http):
    def member(channel_name):
        channel_id = mm.channels[channel_name]["id"]
        return http.get(
            f"{mm.url}/api/v4/channels/{channel_id}/members/me",
            headers=bearer(mm.bot),
            timeout=TIMEOUT,
        )

    assert member("support").json()["user_id"] == mm.bot["id"]
    assert_app_error(member("not-joined"), 404, "app.channel.get_member.missing.app_error")


def test_bot_post_is_created_with_201_and_from_bot_prop(mm, http):
    response = create_post(http, mm, mm.bot, "support", "hello")
    assert response.status_code == 201
    post = response.json()
    assert len(post["id"]) == 26
    assert (post["user_id"], post["root_id"], post["message"]) == (mm.bot["id"], "", "hello")
    assert post["props"]["from_bot"] == "true"
    assert mm.posts_in(mm.channels["support"]["id"])[-1]["id"] == post["id"]

    fetched = http.get(
        f"{mm.url}/api/v4/posts/{post['id']}", headers=bearer(mm.bot), timeout=TIMEOUT
    )
    assert fetched.json()["create_at"] == post["create_at"]


def test_thread_lists_root_and_replies_newest_first(mm, http):
    root = create_post(http, mm, mm.bot, "support", "root").json()
    first = mm.user_post(mm.agent, mm.channels["support"]["id"], "one", root_id=root["id"])
    second = mm.user_post(mm.agent, mm.channels["support"]["id"], "two", root_id=root["id"])
    thread = http.get(
        f"{mm.url}/api/v4/posts/{first['id']}/thread", headers=bearer(mm.bot), timeout=TIMEOUT
    ).json()
    assert thread["order"] == [second["id"], first["id"], root["id"]]
    assert thread["posts"][root["id"]]["reply_count"] == 2
    assert (thread["next_post_id"], thread["prev_post_id"], thread["has_next"]) == ("", "", False)


def test_post_to_a_channel_the_bot_has_not_joined_is_403(mm, http):
    response = create_post(http, mm, mm.bot, "not-joined", "hello")
    assert_app_error(response, 403, "api.context.permissions.app_error")
    assert response.json()["message"] == "You do not have the appropriate permissions."
    assert mm.posts == []


def test_reply_to_an_unknown_or_reply_root_is_400(mm, http):
    root = create_post(http, mm, mm.bot, "support", "root").json()
    reply = create_post(http, mm, mm.bot, "support", "reply", root_id=root["id"])
    assert reply.status_code == 201

    unknown = create_post(http, mm, mm.bot, "support", "x", root_id="b" * 26)
    nested = create_post(http, mm, mm.bot, "support", "x", root_id=reply.json()["id"])
    assert_app_error(unknown, 400, "api.post.create_post.root_id.app_error")
    assert_app_error(nested, 400, "api.post.create_post.root_id.app_error")
    mm.delete_post(root["id"])
    deleted = create_post(http, mm, mm.bot, "support", "x", root_id=root["id"])
    assert_app_error(deleted, 400, "api.post.create_post.root_id.app_error")


def test_post_to_an_archived_channel_is_400(mm, http):
    response = create_post(http, mm, mm.bot, "archived", "hello")
    assert_app_error(response, 400, "api.post.create_post.can_not_post_to_deleted.error")


def test_message_over_the_post_size_limit_is_400(mm, http):
    assert create_post(http, mm, mm.bot, "support", "x" * MAX_POST_SIZE).status_code == 201
    too_long = create_post(http, mm, mm.bot, "support", "x" * (MAX_POST_SIZE + 1))
    assert_app_error(too_long, 400, "model.post.is_valid.message_length.app_error")


def test_message_attachments_in_props_are_kept_as_sent(mm, http):
    attachments = [
        {
            "fallback": "Payment failed",
            "color": "danger",
            "title": "Payment failed",
            "text": "Card declined",
            "fields": [{"title": "Order", "value": "42", "short": True}],
        }
    ]
    created = create_post(http, mm, mm.bot, "sales", "", props={"attachments": attachments})
    assert created.status_code == 201
    fetched = http.get(
        f"{mm.url}/api/v4/posts/{created.json()['id']}", headers=bearer(mm.bot), timeout=TIMEOUT
    ).json()
    assert fetched["props"]["attachments"] == attachments
    assert fetched["message"] == ""


def test_props_over_the_servers_limit_are_400(mm, http):
    huge = {"attachments": [{"text": "x" * 800_000}]}
    response = create_post(http, mm, mm.bot, "sales", "hi", props=huge)
    assert_app_error(response, 400, "model.post.is_valid.props.app_error")
    assert mm.posts == []


def test_rate_limited_request_gets_plain_text_429_with_headers(mm, http):
    mm.fail_next(1, 429)
    url = f"{mm.url}/api/v4/users/me"
    limited = http.get(url, headers=bearer(mm.bot), timeout=TIMEOUT)
    assert limited.status_code == 429
    assert limited.headers["Content-Type"].startswith("text/plain")
    assert limited.text.strip() == "limit exceeded"
    assert limited.headers["X-RateLimit-Limit"] == "10"
    assert limited.headers["X-RateLimit-Remaining"] == "0"
    assert limited.headers["X-RateLimit-Reset"] == "1"
    assert limited.headers["Retry-After"] == "1"
    assert http.get(url, headers=bearer(mm.bot), timeout=TIMEOUT).status_code == 200


def test_injected_500_and_unknown_route_are_app_errors(mm, http):
    mm.fail_next(1, 500)
    failed = http.get(f"{mm.url}/api/v4/system/ping", timeout=TIMEOUT)
    assert failed.status_code == 500
    assert set(failed.json()) == APP_ERROR_KEYS
    missing = http.get(f"{mm.url}/api/v4/nope", headers=bearer(mm.bot), timeout=TIMEOUT)
    assert_app_error(missing, 404, "api.context.404.app_error")


def test_repeated_pending_post_id_returns_the_same_post(mm, http):
    first = create_post(http, mm, mm.bot, "support", "once", pending_post_id="p1")
    again = create_post(http, mm, mm.bot, "support", "once", pending_post_id="p1")
    assert (first.status_code, again.status_code) == (201, 201)
    assert first.json()["id"] == again.json()["id"]
    assert len(mm.posts) == 1


def test_pending_post_id_still_in_flight_gets_500_pending(mm):
    body = {"channel_id": mm.channels["support"]["id"], "message": "slow", "pending_post_id": "p2"}

    def post():
        return requests.post(
            f"{mm.url}/api/v4/posts", json=body, headers=bearer(mm.bot), timeout=TIMEOUT
        )

    gate = mm.hold("create_post")
    with ThreadPoolExecutor(max_workers=1) as pool:
        slow = pool.submit(post)
        gate.wait_for_arrivals(1)  # the first request has reserved the pending id
        retry = post()  # the second reaches the reservation check before the gate
        gate.release()
        first = slow.result()
    assert_app_error(retry, 500, "api.post.deduplicate_create_post.pending")
    assert first.status_code == 201
    assert post().json()["id"] == first.json()["id"]
    assert len(mm.posts) == 1


def test_pending_post_id_is_forgotten_after_the_instances_window():
    with MattermostStandin(pending_post_ttl=0.2) as mm, requests.Session() as http:
        first = create_post(http, mm, mm.bot, "support", "once", pending_post_id="p3").json()
        assert (
            create_post(http, mm, mm.bot, "support", "once", pending_post_id="p3").json()["id"]
            == first["id"]
        )
        mm.wait_for_pending_windows_to_close(timeout=5)
        again = create_post(http, mm, mm.bot, "support", "once", pending_post_id="p3").json()
        assert again["id"] != first["id"]
        assert [p["message"] for p in mm.posts] == ["once", "once"]


def test_lost_answer_saves_the_post_but_cuts_the_connection(mm, http):
    mm.lose_next_answers(1)
    with pytest.raises(requests.ConnectionError):
        create_post(http, mm, mm.bot, "support", "saved, never answered", pending_post_id="p4")
    assert [p["message"] for p in mm.posts] == ["saved, never answered"]
    # Within the window the repeat is answered with the post the server already has.
    repeat = create_post(http, mm, mm.bot, "support", "saved, never answered", pending_post_id="p4")
    assert (repeat.status_code, repeat.json()["id"]) == (201, mm.posts[0]["id"])
    assert len(mm.posts) == 1 and mm.faults_left() == 0


def test_faults_apply_in_the_order_queued_then_failing_status_holds(mm, http):
    ping = f"{mm.url}/api/v4/system/ping"
    mm.fail_next(1, 503)
    mm.lose_next_answers(1)
    mm.slow_next(1, 0.01)
    mm.failing_status = 500
    assert http.get(ping, timeout=TIMEOUT).status_code == 503
    with pytest.raises(requests.ConnectionError):
        http.get(ping, timeout=TIMEOUT)
    assert http.get(ping, timeout=TIMEOUT).status_code == 200  # slow, but served
    assert [http.get(ping, timeout=TIMEOUT).status_code for _ in range(3)] == [500] * 3
    mm.failing_status = None
    assert http.get(ping, timeout=TIMEOUT).status_code == 200


def test_posts_since_follow_the_servers_get_posts_since(mm, http):
    support = mm.channels["support"]["id"]
    root = mm.user_post(mm.bot, support, "root")
    old = mm.user_post(mm.agent, support, "old top-level")
    cut = 1_000_000  # both "happened" at this millisecond
    for post in (root, old):
        post["create_at"] = post["update_at"] = cut
    reply = mm.user_post(mm.agent, support, "reply", root_id=root["id"])
    gone = mm.user_post(mm.agent, support, "deleted later")
    mm.delete_post(gone["id"])
    assert root["update_at"] == reply["create_at"] > cut  # the reply bumped its root

    def since(ms):
        return http.get(
            f"{mm.url}/api/v4/channels/{support}/posts",
            params={"since": ms},
            headers=bearer(mm.bot),
            timeout=TIMEOUT,
        ).json()

    listed = since(cut)
    # UpdateAt > since: "old" (UpdateAt == since) is out; the deleted post is in, with
    # delete_at; the root is in because the reply bumped its UpdateAt.
    assert old["id"] not in listed["posts"] and old["id"] not in listed["order"]
    assert listed["posts"][gone["id"]]["delete_at"] > 0
    assert {reply["id"], gone["id"], root["id"]} <= set(listed["order"])
    created = [listed["posts"][post_id]["create_at"] for post_id in listed["order"]]
    assert created == sorted(created, reverse=True)
    assert old["id"] in since(cut - 1)["order"]
    assert_app_error(
        http.get(
            f"{mm.url}/api/v4/channels/{support}/posts",
            params={"since": "yesterday"},
            headers=bearer(mm.bot),
            timeout=TIMEOUT,
        ),
        400,
        "api.context.invalid_url_param.app_error",
    )


def test_posts_since_are_capped_at_one_thousand(mm, http):
    sales = mm.channels["sales"]["id"]
    for n in range(1003):
        mm.user_post(mm.agent, sales, f"post {n}")
    listed = http.get(
        f"{mm.url}/api/v4/channels/{sales}/posts",
        params={"since": 1},
        headers=bearer(mm.bot),
        timeout=TIMEOUT,
    ).json()
    assert len(listed["order"]) == len(listed["posts"]) == 1000


def test_webhook_fires_for_the_bots_own_post_form_encoded_without_root_id(mm, http, receiver):
    token = mm.add_outgoing_webhook(mm.channels["support"]["id"], receiver.url)
    root = create_post(http, mm, mm.bot, "support", "root").json()
    reply = create_post(http, mm, mm.bot, "support", "in thread", root_id=root["id"]).json()
    mm.wait_for_webhooks()

    assert len(receiver.calls) == 2
    # Each delivery runs on its own thread, so they may arrive in either order.
    (call,) = [c for c in receiver.calls if f"post_id={reply['id']}" in c["body"]]
    assert call["content_type"] == "application/x-www-form-urlencoded"
    assert call["user_agent"] == "Mattermost-Bot/1.1"
    fields = parse_qs(call["body"], keep_blank_values=True)
    form = {key: values[0] for key, values in fields.items()}
    assert set(form) == {
        "token",
        "team_id",
        "team_domain",
        "channel_id",
        "channel_name",
        "timestamp",
        "user_id",
        "user_name",
        "post_id",
        "text",
        "trigger_word",
        "file_ids",
    }
    assert form["token"] == token and len(token) == 26
    assert form["timestamp"] == str(reply["create_at"] // 1000)
    assert (form["post_id"], form["user_name"], form["text"]) == (
        reply["id"],
        "bridge-bot",
        "in thread",
    )
    assert mm.webhook_deliveries[1]["payload"] == form
    assert mm.webhook_deliveries[1]["status"] == 200


def test_json_webhook_timestamp_is_in_milliseconds(mm, receiver):
    mm.add_outgoing_webhook(
        mm.channels["sales"]["id"], receiver.url, content_type="application/json"
    )
    post = mm.user_post(mm.agent, mm.channels["sales"]["id"], "hi from alice")
    mm.wait_for_webhooks()
    payload = json.loads(receiver.calls[0]["body"])
    assert receiver.calls[0]["content_type"] == "application/json"
    assert payload["timestamp"] == post["create_at"]
    assert "root_id" not in payload
    assert (payload["user_name"], payload["trigger_word"]) == ("alice", "")


def test_webhooks_do_not_fire_in_private_channels_or_without_trigger_word(mm, receiver):
    mm.add_outgoing_webhook("", receiver.url, trigger_words=["#ticket"])
    mm.user_post(mm.agent, mm.channels["private-ops"]["id"], "#ticket secret")
    mm.user_post(mm.agent, mm.channels["billing"]["id"], "no trigger here")
    mm.user_post(mm.agent, mm.channels["billing"]["id"], "#ticket open")
    mm.wait_for_webhooks()
    assert [parse_qs(call["body"])["trigger_word"] for call in receiver.calls] == [["#ticket"]]


def test_webhook_comment_reply_is_threaded_and_does_not_fire_again(mm, http, receiver):
    mm.add_outgoing_webhook(mm.channels["support"]["id"], receiver.url)
    receiver.reply_body = json.dumps({"text": "got it", "response_type": "comment"})
    root = create_post(http, mm, mm.bot, "support", "visitor says hi").json()
    mm.wait_for_webhooks()

    comment = mm.get_post(mm.webhook_deliveries[0]["response_post_id"])
    assert (comment["root_id"], comment["message"]) == (root["id"], "got it")
    assert comment["props"]["from_webhook"] == "true"
    assert len(receiver.calls) == 1 and len(mm.webhook_deliveries) == 1

    # As in app/webhook.go: a comment on a reply gets the reply as root_id and fails.
    mm.user_post(mm.agent, mm.channels["support"]["id"], "agent answer", root_id=root["id"])
    mm.wait_for_webhooks()
    assert "root_id" in mm.webhook_deliveries[1]["error"]
    assert len(mm.posts) == 3


def test_empty_webhook_response_creates_nothing(mm, receiver):
    mm.add_outgoing_webhook(mm.channels["support"]["id"], receiver.url)
    mm.user_post(mm.agent, mm.channels["support"]["id"], "hello")
    mm.wait_for_webhooks()
    assert mm.webhook_deliveries[0]["response_post_id"] is None
    assert len(mm.posts) == 1


def test_stop_refuses_connections_and_restart_serves_the_same_port(mm, http):
    ping = f"{mm.url}/api/v4/system/ping"
    assert http.get(ping, timeout=TIMEOUT).status_code == 200
    url = mm.url
    mm.stop()
    with pytest.raises(requests.ConnectionError):
        http.get(ping, timeout=TIMEOUT)
    with pytest.raises(requests.ConnectionError):
        requests.get(ping, timeout=TIMEOUT)
    mm.restart()
    assert mm.url == url
    assert http.get(ping, timeout=TIMEOUT).status_code == 200


def test_stop_resets_a_request_still_in_flight(mm):
    gate = mm.hold("ping")
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(requests.get, f"{mm.url}/api/v4/system/ping", timeout=TIMEOUT)
        gate.wait_for_arrivals(1)  # inside the server, not answered yet
        mm.stop()
        with pytest.raises(requests.ConnectionError):
            pending.result()


def test_held_posts_are_in_flight_until_released_and_then_saved(mm):
    mm.hold_posts()
    with ThreadPoolExecutor(max_workers=3) as pool:
        held = [
            pool.submit(
                create_post, requests, mm, mm.bot, "support", f"held {n}", pending_post_id=f"h{n}"
            )
            for n in range(3)
        ]
        mm.wait_for_posts_in_flight(3)
        assert mm.posts == [] and not any(future.done() for future in held)
        mm.release_posts()
        answers = [future.result() for future in held]
    assert [answer.status_code for answer in answers] == [201, 201, 201]
    assert sorted(post["message"] for post in mm.posts) == ["held 0", "held 1", "held 2"]
    assert mm.posts_in_flight == 0


def test_a_held_post_released_unsaved_frees_its_pending_id(mm, http):
    mm.hold_posts()
    with ThreadPoolExecutor(max_workers=1) as pool:
        held = pool.submit(
            create_post, requests, mm, mm.bot, "support", "lost", pending_post_id="l1"
        )
        mm.wait_for_posts_in_flight(1)
        mm.release_posts(save=False)
        assert_app_error(held.result(), 500, "app.post.save.app_error")
    assert mm.posts == []
    # The retry with the same pending id is a new post, not "still pending".
    again = create_post(http, mm, mm.bot, "support", "lost", pending_post_id="l1")
    assert again.status_code == 201 and len(mm.posts) == 1


def test_a_post_held_after_saving_is_saved_before_its_answer(mm, http):
    mm.hold_posts(after_save=True)
    with ThreadPoolExecutor(max_workers=1) as pool:
        held = pool.submit(
            create_post, requests, mm, mm.bot, "support", "kept", pending_post_id="k1"
        )
        mm.wait_for_posts_in_flight(1)
        assert [post["message"] for post in mm.posts] == ["kept"] and not held.done()
        mm.release_posts()
        assert held.result().json()["id"] == mm.posts[0]["id"]


# -- slash commands, buttons, post patches (issue 10) -------------------------------------


COMMAND_FIELDS = {
    "token",
    "team_id",
    "team_domain",
    "channel_id",
    "channel_name",
    "user_id",
    "user_name",
    "command",
    "text",
    "trigger_id",
    "response_url",
}


def test_slash_command_posts_the_form_with_a_token_header_and_answers_ephemerally(mm, receiver):
    token = mm.add_slash_command("bridge", receiver.url)
    receiver.reply_body = json.dumps({"response_type": "ephemeral", "text": "two open"})
    support = mm.channels["support"]["id"]
    answer = mm.run_slash_command(mm.agent, support, "/bridge list  now")
    assert answer == {"response_type": "ephemeral", "text": "two open"}
    (call,) = receiver.calls
    assert call["content_type"] == "application/x-www-form-urlencoded"
    assert call["authorization"] == f"Token {token}"
    form = {key: values[0] for key, values in parse_qs(call["body"]).items()}
    assert set(form) == COMMAND_FIELDS
    assert (form["token"], form["command"], form["text"]) == (token, "/bridge", "list  now")
    assert form["user_name"] == "alice" and form["channel_id"] == support
    assert mm.ephemeral_posts == [
        {"user_id": mm.agent["id"], "channel_id": support, "message": "two open"}
    ]
    assert mm.posts_in(support) == []


def test_slash_command_in_channel_answer_is_posted_and_a_refusal_fails_it(mm, receiver):
    mm.add_slash_command("bridge", receiver.url)
    support = mm.channels["support"]["id"]
    receiver.reply_body = json.dumps({"response_type": "in_channel", "text": "for all"})
    mm.run_slash_command(mm.agent, support, "/bridge list")
    (post,) = mm.posts_in(support)
    assert (post["message"], post["user_id"]) == ("for all", mm.agent["id"])
    assert post["props"]["from_webhook"] == "true"
    receiver.reply_status = 403
    with pytest.raises(AppError, match="returned response 403"):
        mm.run_slash_command(mm.agent, support, "/bridge list")
    assert mm.command_calls[-1]["status"] == 403


def button_post(http, mm, url, context):
    attachment = {
        "text": "state",
        "actions": [
            {"id": "claim", "type": "button", "name": "Claim",
             "integration": {"url": url, "context": context}},
        ],
    }  # fmt: skip
    response = create_post(
        http, mm, mm.bot, "support", "root text", props={"attachments": [attachment]}
    )
    assert response.status_code == 201
    return response.json()


def test_clients_never_see_an_actions_integration(mm, http, receiver):
    post = button_post(http, mm, receiver.url, {"secret": "s3"})
    assert "integration" not in post["props"]["attachments"][0]["actions"][0]
    read = http.get(f"{mm.url}/api/v4/posts/{post['id']}", headers=bearer(mm.agent), timeout=5)
    assert read.json()["props"]["attachments"][0]["actions"][0] == {
        "id": "claim",
        "type": "button",
        "name": "Claim",
    }
    stored = mm.get_post(post["id"])["props"]["attachments"][0]["actions"][0]
    assert stored["integration"]["context"] == {"secret": "s3"}  # the server keeps it


def test_click_posts_the_integration_request_and_applies_the_update(mm, http, receiver):
    post = button_post(http, mm, receiver.url, {"conversation_id": "c1"})
    # An update without a message empties the post, as the server does.
    receiver.reply_body = json.dumps(
        {"update": {"props": {"kept": "yes"}}, "ephemeral_text": "done"}
    )
    answer = mm.click_action(mm.agent, post["id"], "claim")
    assert answer["ephemeral_text"] == "done"
    (call,) = receiver.calls
    assert call["content_type"] == "application/json"
    sent = json.loads(call["body"])
    assert set(sent) == {
        "user_id", "user_name", "channel_id", "channel_name", "team_id",
        "team_domain", "post_id", "trigger_id", "type", "context",
    }  # fmt: skip
    assert sent["context"] == {"conversation_id": "c1"} and sent["post_id"] == post["id"]
    updated = mm.get_post(post["id"])
    assert updated["message"] == ""
    assert updated["props"] == {"kept": "yes"}  # from_bot was not one of the retained keys
    assert mm.ephemeral_posts[-1]["message"] == "done"
    # The update replaced the props: the button is gone, as in the server's GetAction.
    with pytest.raises(AppError, match="Action not found"):
        mm.click_action(mm.agent, post["id"], "claim")
    receiver.reply_status = 500
    other = button_post(http, mm, receiver.url, {})
    with pytest.raises(AppError, match="Unable to do the action") as refused:
        mm.click_action(mm.agent, other["id"], "claim")
    assert refused.value.status == 400


def test_patch_replaces_message_and_props_for_the_author_only(mm, http):
    post = create_post(http, mm, mm.bot, "support", "before").json()
    url = f"{mm.url}/api/v4/posts/{post['id']}/patch"
    body = {"message": "after", "props": {"a": "b"}}
    assert_app_error(
        http.put(url, json=body, headers=bearer(mm.agent), timeout=5),
        403,
        "api.context.permissions.app_error",
    )
    patched = http.put(url, json=body, headers=bearer(mm.bot), timeout=5)
    assert patched.status_code == 200
    assert (patched.json()["message"], patched.json()["props"]) == ("after", {"a": "b"})
    assert patched.json()["edit_at"] > 0
