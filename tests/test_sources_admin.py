"""The sources screen and the ``source`` CLI, through the Flask test client and runner."""

from __future__ import annotations

import json
import re

import pytest

from tests.mocked import SERVER, configure, example

ALERTS = "alertschannelid00000000000"
SECRET = "s3cret-token-for-alerts"
HX = {"HX-Request": "true"}


@pytest.fixture
def env(store):
    return configure(
        store,
        notify_map={"monitoring.alert": ALERTS},
        channel_names={ALERTS: "Acme / Alerts"},
    )


def add_form(**fields):
    return {
        "name": "alertmanager",
        "notification_type": "monitoring.alert",
        "auth": "token",
        "secret": SECRET,
        "template": example("alertmanager.md.j2"),
        **fields,
    }


def text(response) -> str:
    return response.get_data(as_text=True)


# -- the screen --------------------------------------------------------------------------------


def test_the_sources_screen_needs_login_and_is_linked_from_the_dashboard(client, admin):
    anonymous = client.application.test_client()
    assert anonymous.get("/env/test/sources").status_code == 302
    assert anonymous.post("/env/test/sources/preview", data={}).status_code == 302
    dashboard = text(admin.get("/"))
    assert 'href="/env/test/sources"' in dashboard and 'href="/env/production/sources"' in dashboard


def test_the_add_form_suggests_a_secret_to_copy_before_saving(admin, store, env):
    page = text(admin.get("/env/test/sources"))
    suggested = re.search(r'name="secret" id="new-secret" value="([^"]+)"', page).group(1)
    assert len(suggested) >= 32
    assert suggested not in text(admin.get("/env/test/sources"))  # a new one each time
    response = admin.post("/env/test/sources", data=add_form(secret=suggested))
    assert response.status_code == 302
    assert response.headers["Location"] == "/env/test/sources/alertmanager"
    assert store.source("test", "alertmanager")["secret"] == suggested


def test_once_saved_the_secret_is_only_shown_masked(admin, store, env):
    response = admin.post("/env/test/sources", data=add_form(), follow_redirects=True)
    assert "Source alertmanager added." in text(response)
    for page in (response, admin.get("/env/test/sources")):
        assert SECRET not in text(page)
    assert "saved <code>••••••" + SECRET[-4:] in text(response)
    listing = text(admin.get("/env/test/sources"))
    assert 'data-source="alertmanager"' in listing and "Acme / Alerts" in listing
    assert store.source("test", "alertmanager")["secret"] == SECRET


def test_sources_pages_have_no_inline_scripts_styles_or_handlers(admin, store, env):
    admin.post("/env/test/sources", data=add_form())
    store.keep_source_payload("test", "alertmanager", "{}", "broken")
    pages = [
        text(admin.get(path)) for path in ("/env/test/sources", "/env/test/sources/alertmanager")
    ]
    for template in ("{{ payload.a }}", "{{ payload.a.b.c }}", ""):
        pages.append(text(preview(admin, template=template, sample='{"a": 1}')))
    for page in pages:
        assert not re.search(r"<script(?![^>]*\bsrc=)", page)
        assert " style=" not in page and "<style" not in page
        assert not re.search(r"\s(on[a-z]+|hx-on[:-][a-z:-]+)=", page)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"name": "has space"}, "Source name"),
        ({"notification_type": "bad type"}, "Notification type"),
        ({"template": "{% if payload.x %}never closed"}, "Template: line 1: syntax error"),
        ({"secret": "short"}, "The secret needs 8"),
        ({"auth": "hmac", "hmac_header": "Bad Header:"}, "Signature header"),
        ({"secret": ""}, "Give the source a secret"),
    ],
)
def test_bad_settings_are_refused_and_nothing_is_saved(admin, store, env, fields, message):
    response = admin.post("/env/test/sources", data=add_form(**fields))
    assert response.status_code == 400
    assert message in text(response)
    assert store.sources("test") == []


def test_a_taken_name_is_refused(admin, store, env):
    admin.post("/env/test/sources", data=add_form())
    response = admin.post("/env/test/sources", data=add_form())
    assert response.status_code == 400
    assert "already has a source named" in text(response)


def test_editing_keeps_the_secret_when_left_empty_and_can_switch_to_hmac(admin, store, env):
    admin.post("/env/test/sources", data=add_form(secret=SECRET))
    response = admin.post(
        "/env/test/sources/alertmanager",
        data=add_form(template="New {{ payload.status }}", auth="hmac", hmac_header="", secret=""),
    )
    assert response.status_code == 302
    source = store.source("test", "alertmanager")
    assert source["template"] == "New {{ payload.status }}"
    assert source["secret"] == SECRET
    assert source["hmac_header"] == "X-Hub-Signature-256"  # the default header
    admin.post("/env/test/sources/alertmanager", data=add_form(secret="another-secret-99"))
    source = store.source("test", "alertmanager")
    assert source["secret"] == "another-secret-99" and source["hmac_header"] == ""


def test_removing_a_source_takes_its_kept_payloads_too(admin, store, env):
    admin.post("/env/test/sources", data=add_form())
    store.keep_source_payload("test", "alertmanager", "{}", "broken")
    response = admin.post("/env/test/sources/alertmanager/remove", headers=HX)
    assert response.headers["HX-Redirect"] == "/env/test/sources"
    assert store.sources("test") == []
    assert store.db.execute("SELECT COUNT(*) FROM source_payloads").fetchone()[0] == 0
    assert admin.get("/env/test/sources/alertmanager").status_code == 404


def test_the_last_payload_is_pretty_printed_and_escaped(admin, store, env):
    admin.post("/env/test/sources", data=add_form())
    payload = {"status": "firing", "note": "<script>alert(1)</script>"}
    store.record_source_payload("test", "alertmanager", json.dumps(payload))
    page = text(admin.get("/env/test/sources/alertmanager"))
    shown = re.search(r"<pre class=\"payload\" data-last-payload>(.*?)</pre>", page, re.DOTALL)
    assert shown.group(1) == (
        "{\n  &#34;status&#34;: &#34;firing&#34;,\n"
        "  &#34;note&#34;: &#34;&lt;script&gt;alert(1)&lt;/script&gt;&#34;\n}"
    )
    assert "<script>alert(1)" not in page


# -- the live preview ----------------------------------------------------------------------------


def preview(admin, **form):
    return admin.post("/env/test/sources/preview", data=form, headers=HX)


def test_the_preview_renders_the_template_on_a_sample(admin, env):
    response = preview(
        admin,
        template=example("alertmanager.md.j2"),
        sample=example("alertmanager-resolved.json"),
    )
    assert response.status_code == 200
    body = text(response)
    assert 'data-preview="ok"' in body
    assert ":white_check_mark: **RESOLVED** HighErrorRate" in body
    assert "Rendered on the sample payload" in body
    # A preview changes nothing, so it is not in the log of admin actions.
    from bridge.store import Store

    actions = Store(admin.application.config["DATABASE"]).admin_actions()
    assert not [row for row in actions if row["action"] == "sources.live_preview"]


def test_the_preview_shows_the_error_and_its_line(admin, env):
    response = preview(
        admin, template="Alert\n{{ payload.alerts[0].labels.x }}", sample='{"alerts": []}'
    )
    body = text(response)
    assert 'data-preview="error"' in body
    assert "Line 2: </strong>" in body
    assert "2 | {{ payload.alerts[0].labels.x }}" in body


def test_the_preview_refuses_a_sandbox_escape_readably(admin, env):
    body = text(preview(admin, template="{{ ''.__class__.__mro__ }}", sample="{}"))
    assert "access to attribute &#39;__class__&#39; of a &#39;str&#39; object is not allowed" in (
        body
    )


def test_the_preview_uses_the_last_payload_and_escapes_what_it_renders(admin, store, env):
    admin.post("/env/test/sources", data=add_form())
    store.record_source_payload("test", "alertmanager", json.dumps({"x": "<img src=x>"}))
    body = text(preview(admin, template="got {{ payload.x }}", source="alertmanager"))
    assert "Rendered on the last payload received" in body
    assert "got &lt;img src=x&gt;" in body


def test_the_preview_says_when_there_is_no_payload_yet(admin, env):
    admin.post("/env/test/sources", data=add_form())
    body = text(preview(admin, template="x", source="alertmanager"))
    assert "No payload to preview on yet" in body


def test_the_preview_of_a_pass_through_source_shows_its_attachments(admin, env):
    sample = json.dumps({"text": "hi", "attachments": [{"color": "good", "text": "ok"}]})
    body = text(preview(admin, template="", sample=sample))
    assert "props.attachments" in body and '"color": "good"' in body


# -- re-send from the screen ------------------------------------------------------------------


def test_the_resend_button_posts_a_kept_payload_once(admin, store, env, requests_mock):
    requests_mock.post(
        f"{SERVER}/api/v4/posts",
        status_code=201,
        json={"id": "p" * 26},
        headers={"Content-Type": "application/json"},
    )
    admin.post("/env/test/sources", data=add_form(secret=SECRET))
    kept_id = store.keep_source_payload(
        "test", "alertmanager", example("alertmanager-firing.json"), "line 1: broken"
    )
    page = text(admin.get("/env/test/sources/alertmanager"))
    assert f"Re-send #{kept_id}" in page and "line 1: broken" in page
    first = admin.post(f"/env/test/sources/alertmanager/resend/{kept_id}", headers=HX)
    assert f"#{kept_id}: sent." in text(first)
    second = admin.post(f"/env/test/sources/alertmanager/resend/{kept_id}", headers=HX)
    assert "was re-sent already" in text(second)
    assert requests_mock.call_count == 1
    assert "Re-send #" not in text(admin.get("/env/test/sources/alertmanager"))


def test_a_payload_of_another_source_cannot_be_resent_through_this_one(admin, store, env):
    admin.post("/env/test/sources", data=add_form())
    admin.post("/env/test/sources", data=add_form(name="other"))
    kept_id = store.keep_source_payload("test", "other", "{}", "broken")
    response = admin.post(f"/env/test/sources/alertmanager/resend/{kept_id}")
    assert response.status_code == 404
    assert store.kept_payload(kept_id)["status"] == "kept"


# -- the CLI ------------------------------------------------------------------------------------


def cli(runner, *args):
    return runner.invoke(args=list(args))


def test_source_add_list_remove(runner, store, env, tmp_path):
    template = tmp_path / "alerts.md.j2"
    template.write_text(example("alertmanager.md.j2"))
    added = cli(
        runner,
        "source",
        "add",
        "test",
        "alertmanager",
        "--type",
        "monitoring.alert",
        "--template",
        str(template),
        "--secret",
        SECRET,
    )
    assert added.exit_code == 0, added.output
    assert SECRET not in added.output
    assert "/hooks/in/test/alertmanager" in added.output
    source = store.source("test", "alertmanager")
    assert source["template"] == example("alertmanager.md.j2")
    assert source["secret"] == SECRET and source["hmac_header"] == ""

    listed = cli(runner, "source", "list", "test")
    assert listed.exit_code == 0
    assert listed.output.startswith("alertmanager\ttype=monitoring.alert\ttoken ••••••")
    assert SECRET not in listed.output
    assert "No sources in production." in cli(runner, "source", "list", "production").output

    removed = cli(runner, "source", "remove", "test", "alertmanager")
    assert removed.exit_code == 0
    assert store.sources("test") == []
    again = cli(runner, "source", "remove", "test", "alertmanager")
    assert again.exit_code != 0 and "no source 'alertmanager'" in again.output


def test_source_add_prints_a_generated_secret_alone_on_the_last_line(runner, store, env):
    added = cli(
        runner,
        "source",
        "add",
        "test",
        "github",
        "--type",
        "ci.result",
        "--hmac-header",
        "X-Hub-Signature-256",
    )
    assert added.exit_code == 0, added.output
    secret = store.source("test", "github")["secret"]
    assert added.output.strip().splitlines()[-1] == secret
    assert "not mapped to a channel" in added.output  # ci.result has no channel yet
    assert secret not in cli(runner, "source", "list", "test").output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--type", "bad type"], "Notification type"),
        (["--type", "ci.result", "--secret", "short"], "The secret needs"),
        (["--type", "ci.result", "--hmac-header", "no spaces"], "Signature header"),
        (["--type", "ci.result", "--template", "/no/such/file"], "cannot read"),
    ],
)
def test_source_add_refuses_bad_settings(runner, store, env, args, message):
    result = cli(runner, "source", "add", "test", "ci", *args)
    assert result.exit_code != 0
    assert message in result.output
    assert store.sources("test") == []


def test_source_add_refuses_a_template_with_a_syntax_error(runner, store, env, tmp_path):
    template = tmp_path / "broken.j2"
    template.write_text("ok\n{{ payload.x }\n")
    result = cli(
        runner, "source", "add", "test", "ci", "--type", "ci.result", "--template", str(template)
    )
    assert result.exit_code != 0
    assert "Template: line 2: syntax error" in result.output


def test_source_edit_changes_only_what_is_given(runner, store, env, tmp_path):
    cli(runner, "source", "add", "test", "ci", "--type", "ci.result", "--secret", SECRET)
    template = tmp_path / "t.j2"
    template.write_text("{{ payload.a }}")
    result = cli(
        runner,
        "source",
        "edit",
        "test",
        "ci",
        "--template",
        str(template),
        "--hmac-header",
        "X-Signature",
    )
    assert result.exit_code == 0, result.output
    source = store.source("test", "ci")
    assert (source["template"], source["hmac_header"], source["secret"]) == (
        "{{ payload.a }}",
        "X-Signature",
        SECRET,
    )
    cli(runner, "source", "edit", "test", "ci", "--token")
    assert store.source("test", "ci")["hmac_header"] == ""
