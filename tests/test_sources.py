"""The translation layer (bridge/translate.py, POST /hooks/in/<env>/<source>) and its
template sandbox (bridge/sandbox.py), Mattermost mocked."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from bridge import translate
from bridge.sandbox import TemplateFailure, render
from bridge.translate import check_secret, preview
from tests.mocked import POSTS, configure, created, example, posted

ALERTS = "alertschannelid00000000000"
CI = "cichannelid000000000000000"
SECRET = "s3cret-token-for-alerts"
GITHUB_SECRET = "github-webhook-secret-42"


@pytest.fixture
def env(store):
    return configure(store, notify_map={"monitoring.alert": ALERTS, "ci.result": CI})


@pytest.fixture
def mattermost(requests_mock, env):
    requests_mock.post(POSTS, json=created)
    return requests_mock


@pytest.fixture
def alerts(store, env):
    """Alertmanager: a token source (Alertmanager sends it as a Bearer header)."""
    return store.add_source(
        "test",
        "alertmanager",
        notification_type="monitoring.alert",
        template=example("alertmanager.md.j2"),
        secret=SECRET,
    )


@pytest.fixture
def github(store, env):
    """GitHub Actions: an HMAC source, signed in X-Hub-Signature-256."""
    return store.add_source(
        "test",
        "github",
        notification_type="ci.result",
        template=example("github-workflow-run.md.j2"),
        secret=GITHUB_SECRET,
        hmac_header="X-Hub-Signature-256",
    )


def sign(body: bytes, secret: str = GITHUB_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def call(client, source, body, *, query="", headers=None, content_type="application/json"):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(
        f"/hooks/in/test/{source}{query}",
        data=data,
        headers=headers or {},
        content_type=content_type,
    )


def bearer(secret: str = SECRET) -> dict:
    return {"Authorization": f"Bearer {secret}"}


def nothing_stored(store, name="alertmanager"):
    source = store.source("test", name)
    messages = store.db.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
    kept = store.db.execute("SELECT COUNT(*) FROM source_payloads").fetchone()[0]
    return source["last_payload"] is None and source["received"] == 0 and not messages and not kept


# -- the secret -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query, headers",
    [(f"?token={SECRET}", {}), ("", {"Authorization": f"Bearer {SECRET}"})],
    ids=["query-token", "bearer"],
)
def test_the_token_in_the_query_or_a_bearer_header_is_accepted(
    client, mattermost, alerts, query, headers
):
    response = call(
        client,
        "alertmanager",
        json.loads(example("alertmanager-firing.json")),
        query=query,
        headers=headers,
    )
    assert response.status_code == 201, response.json
    assert response.json["status"] == "sent"
    assert response.json["channel_id"] == ALERTS
    assert [p["channel_id"] for p in posted(mattermost)] == [ALERTS]


@pytest.mark.parametrize(
    "query, headers",
    [
        ("?token=wrong-token-for-alerts", {}),
        ("", {"Authorization": "Bearer wrong-token-for-alerts"}),
        ("", {"Authorization": f"Basic {SECRET}"}),
        ("", {}),
        ("?token=", {}),
        (f"?token={SECRET[:-1]}", {}),
    ],
    ids=["wrong-query", "wrong-bearer", "basic-scheme", "none", "empty", "prefix"],
)
def test_a_wrong_or_missing_token_is_403_and_stores_nothing(
    client, store, mattermost, alerts, query, headers
):
    response = call(
        client,
        "alertmanager",
        json.loads(example("alertmanager-firing.json")),
        query=query,
        headers=headers,
    )
    assert response.status_code == 403
    assert response.json["code"] == "forbidden"
    assert mattermost.call_count == 0
    assert nothing_stored(store)
    assert store.source("test", "alertmanager")["rejected"] == 1


def test_a_good_hmac_signature_is_accepted(client, mattermost, github):
    body = example("github-workflow-run-failure.json").encode()
    response = call(client, "github", body, headers={"X-Hub-Signature-256": sign(body)})
    assert response.status_code == 201, response.json
    assert [p["channel_id"] for p in posted(mattermost)] == [CI]


@pytest.mark.parametrize(
    "headers, why",
    [
        ({}, "missing signature header X-Hub-Signature-256"),
        ({"X-Hub-Signature-256": "sha256=" + "0" * 64}, "does not match"),
        ({"X-Hub-Signature-256": None}, "does not match"),  # signed with another secret
        ({"X-Hub-Signature-256": "sha1=abc"}, "is not 'sha256=<hex>'"),
        ({"Authorization": f"Bearer {GITHUB_SECRET}"}, "missing signature header"),
    ],
    ids=["missing", "zeros", "other-secret", "sha1", "token-instead"],
)
def test_a_bad_or_missing_hmac_signature_is_403_and_stores_nothing(
    client, store, mattermost, github, headers, why
):
    body = example("github-workflow-run-failure.json").encode()
    if headers.get("X-Hub-Signature-256", "") is None:
        headers = {"X-Hub-Signature-256": sign(body, "another-secret-entirely")}
    response = call(client, "github", body, headers=headers, query=f"?token={GITHUB_SECRET}")
    assert response.status_code == 403
    assert why in response.json["error"]
    assert mattermost.call_count == 0
    assert nothing_stored(store, "github")


def test_a_signature_over_another_body_is_refused(client, store, mattermost, github):
    body = example("github-workflow-run-failure.json").encode()
    tampered = body.replace(b'"failure"', b'"success"')
    response = call(client, "github", tampered, headers={"X-Hub-Signature-256": sign(body)})
    assert response.status_code == 403
    assert nothing_stored(store, "github")


def test_check_secret_compares_in_constant_time(monkeypatch):
    compared = []
    real = hmac.compare_digest

    def spy(a, b):
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(translate.hmac, "compare_digest", spy)
    source = {"secret": SECRET, "hmac_header": ""}
    assert check_secret(source, body=b"{}", query_token=SECRET) == ""
    assert check_secret(source, body=b"{}", query_token="nope") == "the token does not match"
    assert len(compared) == 2


def test_repeated_refusals_are_counted_on_the_source_not_logged_one_row_each(
    client, store, mattermost, alerts
):
    for _ in range(40):
        assert call(client, "alertmanager", {"a": 1}, query="?token=nope").status_code == 403
    rows = store.db.execute(
        "SELECT COUNT(*) FROM log WHERE action = 'source' AND outcome = 'rejected'"
    ).fetchone()[0]
    assert rows == 1
    source = store.source("test", "alertmanager")
    assert source["rejected"] == 40
    assert source["last_rejection"] == "the token does not match"
    assert nothing_stored(store)


def test_an_unknown_source_or_environment_is_404_and_stores_nothing(client, store, alerts):
    assert call(client, "nosuch", {"a": 1}, headers=bearer()).status_code == 404
    assert client.post("/hooks/in/staging/alertmanager", json={}).status_code == 404
    assert store.db.execute("SELECT COUNT(*) FROM log").fetchone()[0] == 0


# -- the body -------------------------------------------------------------------------------


def test_a_body_that_is_not_json_is_415(client, store, mattermost, alerts):
    response = call(
        client,
        "alertmanager",
        b"status=firing",
        headers=bearer(),
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 415
    assert response.json["code"] == "unsupported_media_type"
    assert nothing_stored(store)


def test_the_secret_is_checked_before_the_body(client, store, alerts):
    response = call(client, "alertmanager", b"<xml/>", content_type="text/xml")
    assert response.status_code == 403


@pytest.mark.parametrize(
    "body, why",
    [
        (b"{oops", "not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "nested"),
        (json.dumps(json.loads("[" * 70 + "]" * 70)).encode(), "deeper than 64"),
        (b"\xff\xfe{", "not valid JSON"),
    ],
    ids=["broken", "very-deep", "65-deep", "bad-bytes"],
)
def test_invalid_or_deeply_nested_json_is_400(client, store, mattermost, alerts, body, why):
    response = call(client, "alertmanager", body, headers=bearer())
    assert response.status_code == 400
    assert why in response.json["error"]
    assert nothing_stored(store)


def test_a_body_over_one_mebibyte_is_413(client, store, alerts):
    body = b'{"a": "' + b"x" * (1024 * 1024) + b'"}'
    response = call(client, "alertmanager", body, headers=bearer())
    assert response.status_code == 413
    assert nothing_stored(store)


# -- rendering --------------------------------------------------------------------------------


def test_an_alertmanager_alert_is_rendered_by_its_template(client, store, mattermost, alerts):
    payload = json.loads(example("alertmanager-resolved.json"))
    response = call(client, "alertmanager", payload, headers=bearer())
    assert response.status_code == 201
    [post] = posted(mattermost)
    assert post["message"] == (
        ":white_check_mark: **RESOLVED** HighErrorRate\n"
        "\n"
        "- **HighErrorRate** `critical` on `shop-api-1:9100`: 5xx rate above 5% for 10 minutes\n"
        "  resolved at 2026-03-14 09:58:23 UTC · [graph](http://prometheus.example.com:9090/"
        "graph?g0.expr=job%3Ashop_api_5xx%3Aratio5m+%3E+0.05&g0.tab=1)\n"
        "\n"
        "[Open Alertmanager](http://alertmanager.example.com:9093)"
    )
    source = store.source("test", "alertmanager")
    assert json.loads(source["last_payload"]) == payload
    assert source["received"] == 1


def test_a_firing_alert_lists_every_alert(mattermost, alerts):
    text = render(example("alertmanager.md.j2"), json.loads(example("alertmanager-firing.json")))
    lines = text.splitlines()
    assert lines[0] == ":rotating_light: **FIRING** HighErrorRate (2 alerts)"
    assert [line for line in lines if line.startswith("- ")] == [
        "- **HighErrorRate** `critical` on `shop-api-1:9100`: 5xx rate above 5% for 10 minutes",
        "- **HighErrorRate** `critical` on `shop-api-2:9100`: 5xx rate above 5% for 10 minutes",
    ]
    assert "  since 2026-03-14 09:26:53 UTC" in lines[3]


def test_a_ci_result_is_rendered_and_payload_text_cannot_mention_anyone(client, mattermost, github):
    body = example("github-workflow-run-failure.json").encode()
    call(client, "github", body, headers={"X-Hub-Signature-256": sign(body)})
    [post] = posted(mattermost)
    assert post["message"].splitlines()[0] == (
        ":x: **CI** #412 **failure** on `main` in [acme/shop](https://github.com/acme/shop)"
    )
    assert "[View the run](https://github.com/acme/shop/actions/runs/8243194452)" in post["message"]


def test_mentions_in_payload_values_are_neutralized_but_the_templates_own_are_kept():
    text = render("@oncall: {{ payload.msg }}", {"msg": "@channel deploy by @alice"})
    assert text.startswith("@oncall: ")
    assert "@channel" not in text and "@alice" not in text
    assert text == "@oncall: @\u200bchannel deploy by @\u200balice"


def test_a_template_that_renders_nothing_sends_nothing(client, store, mattermost, github):
    payload = json.loads(example("github-workflow-run-failure.json"))
    payload["action"] = "in_progress"
    body = json.dumps(payload).encode()
    response = call(client, "github", body, headers={"X-Hub-Signature-256": sign(body)})
    assert response.status_code == 200
    assert response.json["status"] == "ignored"
    assert mattermost.call_count == 0
    assert store.db.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 0


def test_an_unmapped_type_is_skipped_like_a_host_notification(client, store, mattermost):
    store.add_source(
        "test", "forms", notification_type="form.sent", template="{{ payload.a }}", secret=SECRET
    )
    response = call(client, "forms", {"a": "hello"}, headers=bearer())
    assert response.status_code == 201
    assert response.json["status"] == "skipped"
    assert "form.sent" in response.json["reason"]
    assert mattermost.call_count == 0


def test_long_rendered_text_is_split_by_the_sender(client, store, mattermost, env):
    store.update_environment("test", max_post_size=4000)
    store.add_source(
        "test",
        "big",
        notification_type="ci.result",
        template="{% for line in payload.lines %}{{ line }}\n{% endfor %}",
        secret=SECRET,
    )
    lines = [f"line {n:04d} of the build log" for n in range(400)]  # ~10,800 characters
    response = call(client, "big", {"lines": lines}, headers=bearer())
    assert response.json["status"] == "sent"
    sent = posted(mattermost)
    assert len(sent) == 3 and all(len(p["message"]) <= 4000 for p in sent)
    assert "".join(p["message"] for p in sent).count("of the build log") == 400


# -- the sandbox -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__ }}",
        "{{ payload.__class__.__init__.__globals__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ lipsum.__globals__['os'] }}",
        "{{ payload|attr('__class__') }}",
        "{{ payload['__class__'] }}",
        "{{ '{0.__class__}'.format(payload) }}",
        "{{ payload.items.__self__ }}",
        "{% set x = payload.alerts.append(1) %}",
        "{{ payload.update({'a': 1}) }}",
    ],
)
def test_sandbox_escapes_are_refused_with_a_readable_error(template):
    with pytest.raises(TemplateFailure) as failure:
        render("Alert\n" + template, {"alerts": [], "a": 1})
    assert failure.value.message.startswith("access to attribute ")
    assert failure.value.message.endswith("object is not allowed in a template")
    assert failure.value.line == 2
    assert str(failure.value).startswith("line 2: access to attribute")


@pytest.mark.parametrize(
    "template, why",
    [
        ("{{ 'x' * 10000000 }}", "may not build anything longer"),
        ("{{ [1] * 10000000 }}", "may not build anything longer"),
        ("{{ 9 ** 9999 }}", "exponents that large"),
        ("{{ range(10000000)|list }}", "Range too big"),
        ("{% for i in range(100000) %}{{ 'x' * 100 }}{% endfor %}", "longer than 100000"),
    ],
)
def test_runaway_templates_are_stopped(template, why):
    with pytest.raises(TemplateFailure) as failure:
        render(template, {})
    assert why in str(failure.value)


def test_a_slow_template_is_stopped_at_its_deadline():
    with pytest.raises(TemplateFailure) as failure:
        render("{% for i in range(100000) %}{{ i }}{% endfor %}", {}, seconds=0)
    assert "ran longer than" in str(failure.value)


def test_a_syntax_error_names_its_line():
    result = preview("Alert {{ payload.status }}\n{% if payload.x %}\nno endif", {"status": "ok"})
    assert not result.ok
    assert result.line == 3 and result.source_line == "no endif"
    assert result.error.startswith("syntax error: Unexpected end of template.")


def test_a_runtime_error_names_its_line_and_shows_it():
    result = preview("first\nsecond {{ payload.alerts[0].labels.name }}\n", {"alerts": []})
    assert not result.ok
    assert result.line == 2
    assert result.source_line == "second {{ payload.alerts[0].labels.name }}"


# -- template errors: kept, re-sent once ---------------------------------------------------------


def test_a_failing_template_keeps_the_payload_and_a_resend_after_the_fix_posts_it_once(
    client, runner, store, mattermost, alerts
):
    store.update_source("test", "alertmanager", template="{{ payload.alerts[0].nope.deeper }}")
    payload = json.loads(example("alertmanager-firing.json"))
    response = call(client, "alertmanager", payload, headers=bearer())
    assert response.status_code == 202
    assert response.json["status"] == "kept"
    assert "line 1" in response.json["error"]
    assert mattermost.call_count == 0
    [kept] = store.kept_payloads("test", "alertmanager")
    assert json.loads(kept["payload"]) == payload
    assert "no attribute 'nope'" in kept["error"]
    log = store.log_page(outcome="error")[0]
    assert log["action"] == "source" and "template error" in log["error"]

    # Still broken: the re-send keeps it, posts nothing, and says so (exit 1).
    result = runner.invoke(args=["source", "resend", "test", "alertmanager"])
    assert result.exit_code == 1 and "1 still failing" in result.output
    assert mattermost.call_count == 0

    store.update_source("test", "alertmanager", template=example("alertmanager.md.j2"))
    result = runner.invoke(args=["source", "resend", "test", "alertmanager"])
    assert result.exit_code == 0, result.output
    assert "1 sent" in result.output
    [post] = posted(mattermost)
    assert post["message"].startswith(":rotating_light: **FIRING** HighErrorRate")
    assert store.kept_payloads("test", "alertmanager") == []

    again = runner.invoke(args=["source", "resend", "test", "alertmanager"])
    assert "0 sent" in again.output
    assert len(posted(mattermost)) == 1


def test_a_kept_payload_can_be_claimed_for_a_resend_only_once(store, alerts):
    kept_id = store.keep_source_payload("test", "alertmanager", "{}", "broken")
    assert store.claim_kept_payload(kept_id) is True
    assert store.claim_kept_payload(kept_id) is False


def test_a_resend_records_its_message_and_a_second_one_posts_nothing(store, mattermost, alerts):
    from bridge.sender import Sender
    from bridge.translate import Translator

    kept_id = store.keep_source_payload(
        "test", "alertmanager", example("alertmanager-resolved.json"), "broken"
    )
    translator = Translator(Sender(store, retry_budget=0.5))
    result = translator.resend(kept_id)
    assert result.http_status == 201
    second = translator.resend(kept_id)
    assert second.http_status == 409
    row = store.kept_payload(kept_id)
    assert row["status"] == "resent"
    assert row["message_id"] == result.message["id"]
    assert len(posted(mattermost)) == 1


def test_kept_payloads_are_bounded_per_source(client, store, mattermost, alerts, monkeypatch):
    monkeypatch.setattr(translate, "MAX_KEPT", 2)
    store.update_source("test", "alertmanager", template="{{ payload.x.y.z }}")
    statuses = [
        call(client, "alertmanager", {"n": n}, headers=bearer()).status_code for n in range(3)
    ]
    assert statuses == [202, 202, 503]
    assert store.count_kept_payloads("test", "alertmanager") == 2


# -- Slack-compatible payloads pass through ---------------------------------------------------


@pytest.fixture
def slack(store, env):
    return store.add_source(
        "test", "grafana", notification_type="monitoring.alert", template="", secret=SECRET
    )


def test_a_slack_compatible_payload_passes_through_with_its_attachments(client, mattermost, slack):
    payload = {
        "text": "Disk almost full on <https://grafana.example.com/d/abc|db-1>",
        "username": "Grafana",
        "attachments": [
            {
                "fallback": "db-1 disk 93%",
                "color": "danger",
                "title": "db-1: /var 93% full",
                "title_link": "https://grafana.example.com/d/abc",
                "text": "Free space left: 7 GB",
                "fields": [
                    {"title": "Host", "value": "db-1", "short": True},
                    {"title": "Used", "value": 93, "short": "true"},
                ],
                "mrkdwn_in": ["text"],  # Slack-only: dropped
                "ts": 1710408000,
            }
        ],
    }
    response = call(client, "grafana", payload, headers=bearer())
    assert response.status_code == 201, response.json
    [post] = posted(mattermost)
    assert post["message"] == "Disk almost full on [db-1](https://grafana.example.com/d/abc)"
    assert post["props"]["attachments"] == [
        {
            "fallback": "db-1 disk 93%",
            "color": "danger",
            "title": "db-1: /var 93% full",
            "title_link": "https://grafana.example.com/d/abc",
            "text": "Free space left: 7 GB",
            "fields": [
                {"title": "Host", "value": "db-1", "short": True},
                {"title": "Used", "value": "93", "short": True},
            ],
            "ts": 1710408000,
        }
    ]


@pytest.mark.parametrize(
    "payload, why",
    [
        ({"status": "firing"}, "Slack-compatible"),
        ({"text": "", "attachments": []}, "both empty"),
        ({"attachments": [{"color": "red"}]}, "'attachments[0].color'"),
        ({"text": "x", "attachments": [{"actions": []}]}, "'attachments[0].actions'"),
    ],
)
def test_a_bad_payload_for_a_pass_through_source_is_400(
    client, store, mattermost, slack, payload, why
):
    response = call(client, "grafana", payload, headers=bearer())
    assert response.status_code == 400
    assert why in response.json["error"]
    assert mattermost.call_count == 0


def test_sources_calls_say_nothing_about_mattermosts_webhook_on_the_checklist(
    client, store, mattermost, alerts
):
    from bridge import checklist

    store.update_environment("test", webhook_token="w" * 26)
    payload = json.loads(example("alertmanager-resolved.json"))
    assert call(client, "alertmanager", payload, headers=bearer()).status_code == 201
    assert call(client, "alertmanager", payload, query="?token=nope").status_code == 403
    assert store.last_valid_inbound("test") is None
    [item] = [i for i in checklist.checklist(store, "test").items if i.item.key == "webhook"]
    assert item.evidence.state == checklist.NOT_YET
