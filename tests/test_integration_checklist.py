"""The readiness checklist, driven through the admin screens against the live stand-in."""

from __future__ import annotations

import re

import pytest
import requests

from tests.conftest import configure_env
from tests.live import wait_until

pytestmark = pytest.mark.integration
WEBHOOK_TOKEN = "checklist-webhook-token-26"


def csrf(page: str) -> str:
    return re.search(r'"X-CSRFToken": "([^"]+)"', page).group(1)


def evidence(html: str, env: str) -> dict[str, str]:
    """item key -> evidence state (ok / failing / not-yet / manual) for one environment."""
    section = html.split(f'data-env="{env}"', 1)[1].split("</section>", 1)[0]
    states = {}
    for key, body in re.findall(r'data-item="([a-z_]+)">(.*?)</li>', section, re.S):
        states[key] = re.search(r'class="evidence ([a-z-]+)', body).group(1)
    return states


def ticked(html: str, env: str, key: str) -> bool:
    section = html.split(f'data-env="{env}"', 1)[1].split("</section>", 1)[0]
    body = re.search(rf'data-item="{key}">(.*?)</li>', section, re.S).group(1)
    return "checked" in body.split("aria-label", 1)[0]


@pytest.fixture(scope="module")
def admin(live):
    return live.login()


def checklist(live, admin) -> str:
    return admin.get(f"{live.url}/checklist", timeout=30).text


def post(live, admin, path, data=None):
    token = csrf(admin.get(f"{live.url}/checklist", timeout=30).text)
    response = admin.post(
        f"{live.url}{path}",
        data={"csrf_token": token, **(data or {})},
        headers={"X-CSRFToken": token},
        timeout=30,
    )
    assert response.status_code < 400, response.text[:500]
    return response


def test_each_test_evidence_item_turns_ok_at_its_step(live, mm, admin):
    page = checklist(live, admin)
    assert set(evidence(page, "test").values()) == {"not-yet"}
    assert "0 / 10" in page

    post(
        live,
        admin,
        "/env/test/auth",
        {"server_url": mm.url, "bot_token": mm.bot["token"], "webhook_token": WEBHOOK_TOKEN},
    )
    states = evidence(checklist(live, admin), "test")
    assert states["bot_token"] == "ok" and states["auth_filled"] == "ok"
    assert states["channel_ids"] == "not-yet" and states["test_message"] == "not-yet"

    support, sales = mm.channels["support"]["id"], mm.channels["sales"]["id"]
    post(
        live,
        admin,
        "/env/test/config",
        {"mirror_channel_id": support, "notify_type": "booking.created", "notify_channel": sales},
    )
    states = evidence(checklist(live, admin), "test")
    assert states["channel_ids"] == "ok" and states["mapping"] == "ok"
    assert states["bot_member"] == "not-yet"  # never guessed: needs a Re-check

    fragment = post(live, admin, "/checklist/test/recheck").text
    assert evidence(f'data-env="test"{fragment}', "test")["bot_member"] == "ok"

    post(live, admin, "/env/test/activate")
    post(live, admin, "/env/test/test-message")
    states = evidence(checklist(live, admin), "test")
    assert states["test_message"] == "ok"
    assert states["webhook"] == "not-yet"

    mm.add_outgoing_webhook(support, f"{live.url}/hooks/mattermost/test", token=WEBHOOK_TOKEN)
    mm.user_post(mm.agent, support, "hello hook")
    mm.wait_for_webhooks()
    live.wait_routed()
    states = evidence(checklist(live, admin), "test")
    assert states["webhook"] == "ok"
    assert states["end_to_end"] == "not-yet"

    key = live.api_key("test")
    started = live.api(
        "POST", "/api/v1/conversations", key, json={"visitor": {"name": "Erin"}, "text": "first"}
    ).json()
    live.api(
        "POST", f"/api/v1/conversations/{started['id']}/messages", key, json={"text": "second"}
    )
    assert evidence(checklist(live, admin), "test")["end_to_end"] == "not-yet"
    mm.user_post(mm.agent, support, "an answer", root_id=started["root_post_id"])
    mm.wait_for_webhooks()
    live.wait_routed()
    states = evidence(checklist(live, admin), "test")
    assert states["end_to_end"] == "ok"
    assert states["slash_command"] == "not-yet" and states["buttons"] == "not-yet"

    # The slash command's token, saved on the authentication screen, shown masked only.
    command_token = mm.add_slash_command("bridge", f"{live.url}/hooks/mattermost/test/command")
    post(live, admin, "/env/test/auth", {"server_url": mm.url, "command_token": command_token})
    auth_page = admin.get(f"{live.url}/env/test/auth", timeout=30).text
    assert command_token not in auth_page
    assert f"Saved slash command token: <code>••••••{command_token[-4:]}</code>" in auth_page
    assert f"{live.url}/hooks/mattermost/test/command" in auth_page
    # A valid command's or click's log row, the evidence, is written right after its answer.
    mm.run_slash_command(mm.agent, support, "/bridge status")
    wait_until(
        lambda: evidence(checklist(live, admin), "test")["slash_command"] == "ok",
        10,
        what="the slash command's evidence",
    )
    mm.click_action(mm.agent, started["root_post_id"], "claim")

    def buttons_ok():
        page = checklist(live, admin)
        return page if evidence(page, "test")["buttons"] == "ok" else None

    page = wait_until(buttons_ok, 10, what="the buttons' evidence")
    assert set(evidence(page, "test").values()) == {"ok"}
    assert all(ticked(page, "test", item) for item in evidence(page, "test"))
    assert "10 / 10" in page and "bridge (evidence)" in page


def test_bot_removed_from_a_channel_turns_member_failing_on_recheck(live, mm, admin):
    sales = mm.channels["sales"]["id"]
    mm.remove_member(sales, mm.bot["id"])
    try:
        page = checklist(live, admin)
        assert evidence(page, "test")["bot_member"] == "ok"  # not re-checked yet
        fragment = post(live, admin, "/checklist/test/recheck").text
        assert evidence(f'data-env="test"{fragment}', "test")["bot_member"] == "failing"
        assert sales in fragment and "not a member" in fragment
        assert "do not trust this tick" in fragment  # the old tick and the failure together
        assert "not ready" in fragment
    finally:
        mm.add_member(sales, mm.bot["id"])
    fragment = post(live, admin, "/checklist/test/recheck").text
    assert evidence(f'data-env="test"{fragment}', "test")["bot_member"] == "ok"


def test_manual_tick_keeps_who_and_when_and_untick_is_respected(live, mm, admin):
    post(live, admin, "/checklist/production/rollback/toggle")
    page = checklist(live, admin)
    assert ticked(page, "production", "rollback")
    assert "Ticked by Ada" in page.split('data-env="production"', 1)[1]
    post(live, admin, "/checklist/production/rollback/toggle")
    page = checklist(live, admin)
    assert not ticked(page, "production", "rollback")
    assert "Unticked by Ada" in page.split('data-env="production"', 1)[1]


def test_production_with_the_test_bot_is_flagged(live, mm, admin):
    configure_env(live, mm, "production", bot=mm.bot)
    states = evidence(checklist(live, admin), "production")
    assert states["separate_bot"] == "failing"
    configure_env(live, mm, "production", bot=mm.prod_bot)
    states = evidence(checklist(live, admin), "production")
    assert states["separate_bot"] == "ok"
    assert states["rollback"] == "manual"


def test_unknown_item_is_404_and_markdown_export_downloads(live, admin):
    token = csrf(checklist(live, admin))
    missing = admin.post(
        f"{live.url}/checklist/test/nope/toggle", headers={"X-CSRFToken": token}, timeout=10
    )
    assert missing.status_code == 404
    export = admin.get(f"{live.url}/checklist.md", timeout=10)
    assert export.headers["Content-Disposition"].startswith("attachment")
    assert "## Test: 10/10 (READY)" in export.text
    assert "- [x] **Test message posted**" in export.text


def test_checklist_needs_login_and_csrf(live):
    anonymous = requests.get(f"{live.url}/checklist", allow_redirects=False, timeout=10)
    assert anonymous.status_code == 302 and "/login" in anonymous.headers["Location"]
    admin = live.login()
    forged = admin.post(f"{live.url}/checklist/production/rollback/toggle", timeout=10)
    assert forged.status_code == 400
