"""Other systems' webhooks and rich notifications, end to end: gunicorn + the live stand-in."""

from __future__ import annotations

import hashlib
import hmac
import json
import re

import pytest
import requests

from tests.conftest import configure_env
from tests.live import ROOT

pytestmark = pytest.mark.integration

EXAMPLES = ROOT / "examples"
ALERT_TOKEN = "alertmanager-bearer-token-1"
GITHUB_SECRET = "github-webhook-secret-2"


@pytest.fixture(scope="module")
def key(live, mm):
    key = configure_env(
        live,
        mm,
        extra=(
            "--notify",
            f"monitoring.alert={mm.channels['billing']['id']}",
            "--notify",
            f"ci.result={mm.channels['town-square']['id']}",
            "--notify",
            f"grafana.alert={mm.channels['billing']['id']}",
        ),
    )
    live.cli(
        "source",
        "add",
        "test",
        "alertmanager",
        "--type",
        "monitoring.alert",
        "--template",
        "examples/alertmanager.md.j2",
        "--secret",
        ALERT_TOKEN,
    )
    live.cli(
        "source",
        "add",
        "test",
        "github",
        "--type",
        "ci.result",
        "--template",
        "examples/github-workflow-run.md.j2",
        "--secret",
        GITHUB_SECRET,
        "--hmac-header",
        "X-Hub-Signature-256",
    )
    return key


def hook(live, source, body: bytes, headers=None) -> requests.Response:
    return live.session.post(
        f"{live.url}/hooks/in/test/{source}",
        data=body,
        headers={"Content-Type": "application/json", **(headers or {})},
        timeout=30,
    )


def messages_in(mm, channel: str) -> list[str]:
    return [post["message"] for post in mm.posts_in(mm.channels[channel]["id"])]


def test_an_alert_with_a_bad_token_gets_403_and_a_good_one_reaches_the_mapped_channel(
    live, mm, key
):
    body = (EXAMPLES / "alertmanager-firing.json").read_bytes()
    before = len(mm.posts)
    refused = hook(live, "alertmanager", body, {"Authorization": "Bearer not-the-token"})
    assert refused.status_code == 403
    assert refused.json()["code"] == "forbidden"
    assert len(mm.posts) == before

    accepted = hook(live, "alertmanager", body, {"Authorization": f"Bearer {ALERT_TOKEN}"})
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["status"] == "sent"
    post = mm.get_post(accepted.json()["post_id"])
    assert post["channel_id"] == mm.channels["billing"]["id"]
    assert post["user_id"] == mm.bot["id"]
    lines = post["message"].splitlines()
    assert lines[0] == ":rotating_light: **FIRING** HighErrorRate (2 alerts)"
    assert lines[2] == (
        "- **HighErrorRate** `critical` on `shop-api-1:9100`: 5xx rate above 5% for 10 minutes"
    )
    assert len(mm.posts) == before + 1

    resolved = hook(
        live,
        "alertmanager",
        (EXAMPLES / "alertmanager-resolved.json").read_bytes(),
        {"Authorization": f"Bearer {ALERT_TOKEN}"},
    )
    assert mm.get_post(resolved.json()["post_id"])["message"].startswith(
        ":white_check_mark: **RESOLVED** HighErrorRate"
    )


def test_a_ci_result_with_a_bad_signature_gets_403_and_a_signed_one_is_posted(live, mm, key):
    body = (EXAMPLES / "github-workflow-run-failure.json").read_bytes()
    good = "sha256=" + hmac.new(GITHUB_SECRET.encode(), body, hashlib.sha256).hexdigest()
    bad = "sha256=" + hmac.new(b"guessed-secret", body, hashlib.sha256).hexdigest()
    before = len(mm.posts)
    assert hook(live, "github", body, {"X-Hub-Signature-256": bad}).status_code == 403
    assert hook(live, "github", body).status_code == 403
    assert len(mm.posts) == before

    response = hook(live, "github", body, {"X-Hub-Signature-256": good})
    assert response.status_code == 201, response.text
    post = mm.get_post(response.json()["post_id"])
    assert post["channel_id"] == mm.channels["town-square"]["id"]
    assert post["message"].startswith(":x: **CI** #412 **failure** on `main`")
    assert "@channel" not in post["message"]


def test_a_template_error_keeps_the_payload_and_a_resend_after_the_fix_posts_it_once(
    live, mm, key, tmp_path
):
    broken = tmp_path / "broken.md.j2"
    broken.write_text("{{ payload.alerts[0].labels.alertname }} {{ payload.nope.deeper }}\n")
    live.cli("source", "edit", "test", "alertmanager", "--template", str(broken))
    payload = json.loads((EXAMPLES / "alertmanager-resolved.json").read_text())
    payload["groupLabels"]["alertname"] = "DiskFull-kept-then-resent"
    before = len(mm.posts)
    response = hook(
        live,
        "alertmanager",
        json.dumps(payload).encode(),
        {"Authorization": f"Bearer {ALERT_TOKEN}"},
    )
    assert response.status_code == 202
    assert response.json()["status"] == "kept"
    assert "line 1" in response.json()["error"]
    assert len(mm.posts) == before

    still_broken = live.cli("source", "resend", "test", "alertmanager", check=False)
    assert still_broken.returncode == 1
    assert len(mm.posts) == before

    live.cli("source", "edit", "test", "alertmanager", "--template", "examples/alertmanager.md.j2")
    fixed = live.cli("source", "resend", "test", "alertmanager")
    assert "1 sent" in fixed.stdout
    resent = [m for m in messages_in(mm, "billing") if "DiskFull-kept-then-resent" in m]
    assert len(resent) == 1
    assert resent[0].startswith(":white_check_mark: **RESOLVED** DiskFull-kept-then-resent")

    again = live.cli("source", "resend", "test", "alertmanager")
    assert "0 sent" in again.stdout
    assert len([m for m in messages_in(mm, "billing") if "DiskFull-kept-then-resent" in m]) == 1
    assert len(mm.posts) == before + 1


def test_a_slack_compatible_payload_keeps_its_attachments_on_the_post(live, mm, key):
    live.cli(
        "source",
        "add",
        "test",
        "grafana",
        "--type",
        "grafana.alert",
        "--secret",
        "grafana-token-123",
    )
    payload = {
        "text": "[Alerting] Disk usage",
        "attachments": [
            {
                "color": "danger",
                "title": "db-1 /var",
                "text": "93% used",
                "fields": [{"title": "Host", "value": "db-1", "short": True}],
            }
        ],
    }
    response = hook(
        live, "grafana", json.dumps(payload).encode(), {"Authorization": "Bearer grafana-token-123"}
    )
    assert response.status_code == 201, response.text
    post = mm.get_post(response.json()["post_id"])
    assert post["message"] == "[Alerting] Disk usage"
    assert post["props"]["attachments"] == [
        {
            "color": "danger",
            "title": "db-1 /var",
            "text": "93% used",
            "fields": [{"title": "Host", "value": "db-1", "short": True}],
        }
    ]


def test_a_host_notification_with_a_styled_type_arrives_as_an_attachment(live, mm, key):
    session = live.login()
    page = session.get(f"{live.url}/env/test/config", timeout=10).text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    sales = mm.channels["sales"]["id"]
    saved = session.post(
        f"{live.url}/env/test/config",
        data={
            "csrf_token": token,
            "mirror_channel_id": mm.channels["support"]["id"],
            "notify_type": ["booking.created", "monitoring.alert", "ci.result", "grafana.alert"],
            "notify_channel": [
                sales,
                mm.channels["billing"]["id"],
                mm.channels["town-square"]["id"],
                mm.channels["billing"]["id"],
            ],
            "notify_color": ["#2389d7", "", "", ""],
            "notify_title": ["New booking", "", "", ""],
        },
        timeout=10,
    )
    assert saved.ok and "Configuration saved." in saved.text

    response = live.api(
        "POST",
        "/api/v1/notifications",
        key,
        json={
            "type": "booking.created",
            "text": "Booking #77: 2 nights",
            "attachments": [{"text": "Paid by card", "footer": "shop"}],
        },
    )
    assert response.status_code == 201, response.text
    post = mm.get_post(response.json()["post_id"])
    assert post["channel_id"] == sales
    assert post["message"] == ""
    assert post["props"]["attachments"] == [
        {
            "fallback": "New booking: Booking #77: 2 nights",
            "text": "Booking #77: 2 nights",
            "color": "#2389d7",
            "title": "New booking",
        },
        {"text": "Paid by card", "footer": "shop"},
    ]

    refused = live.api(
        "POST",
        "/api/v1/notifications",
        key,
        json={"type": "booking.created", "text": "x", "attachments": [{"color": "blue"}]},
    )
    assert refused.status_code == 400
    assert refused.json()["error"].startswith("'attachments[0].color' ")


def test_a_chunked_body_past_one_mebibyte_is_413_and_stores_nothing(live, mm, key):
    def chunks():
        yield b'{"pad": "'
        for _ in range(18):
            yield b"x" * 65536  # 1.1 MiB in all, with no Content-Length
        yield b'"}'

    def received() -> str:
        listing = live.cli("source", "list", "test").stdout
        return re.search(r"^alertmanager\t.*\t(received=\d+)", listing, re.MULTILINE).group(1)

    before, counted = len(mm.posts), received()
    response = live.session.post(
        f"{live.url}/hooks/in/test/alertmanager",
        data=chunks(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {ALERT_TOKEN}"},
        timeout=30,
    )
    assert response.status_code == 413, response.text
    assert response.json()["code"] == "too_large"
    assert len(mm.posts) == before
    assert received() == counted
