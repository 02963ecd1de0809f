"""The sources screen: other systems' webhooks per environment, their templates and payloads."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for

from .. import htmx
from ..db import get_sender, get_store
from ..integration import mask_secret
from ..store import NotFound
from ..translate import (
    DEFAULT_HMAC_HEADER,
    Preview,
    Translator,
    new_secret,
    preview,
    source_problems,
)
from .admin import public_url
from .api import notification_json
from .auth import login_required

bp = Blueprint("sources", __name__)
ENV = "<any(test, production):env>"


@bp.before_request
@login_required
def require_login():
    """Every sources screen is behind the login."""


def _source_or_404(env: str, name: str) -> dict[str, Any]:
    try:
        return get_store().source(env, name)
    except NotFound:
        abort(404, f"No source {name!r} in the {env} environment: it may have been removed.")


def _form_settings(form, *, adding: bool) -> tuple[dict[str, str], list[str]]:
    """The source's settings from the form, and what is wrong with them."""
    fields = {
        "notification_type": form.get("notification_type", "").strip(),
        "template": form.get("template", "").replace("\r\n", "\n"),
        "hmac_header": (
            form.get("hmac_header", "").strip() or DEFAULT_HMAC_HEADER
            if form.get("auth") == "hmac"
            else ""
        ),
    }
    secret = form.get("secret", "")
    problems = source_problems(
        name=form.get("name", "").strip() if adding else None, secret=secret, **fields
    )
    if secret:
        fields["secret"] = secret
    return fields, problems


@bp.get(f"/env/{ENV}/sources")
def index(env: str):
    return _list_page(env)


def _list_page(env: str, *, form=None, errors=(), status=200):
    store = get_store()
    settings = store.environment(env)
    return (
        render_template(
            "sources/index.html",
            env=env,
            settings=settings,
            sources=store.sources(env),
            form=form or {},
            errors=errors,
            # Offered in the add form, to copy before saving: after that it is
            # never shown in full again (not even in a flash: the cookie is not secret).
            suggested_secret=new_secret(),
            default_header=DEFAULT_HMAC_HEADER,
        ),
        status,
    )


@bp.post(f"/env/{ENV}/sources")
def add(env: str):
    fields, errors = _form_settings(request.form, adding=True)
    name = request.form.get("name", "").strip()
    if not fields.get("secret"):
        errors.append("Give the source a secret (the form suggests one).")
    if errors:
        return _list_page(env, form=request.form, errors=errors, status=400)
    try:
        get_store().add_source(env, name, **fields)
    except ValueError as exc:
        return _list_page(env, form=request.form, errors=[f"{exc}."], status=400)
    flash(f"Source {name} added. Other systems call it at the URL below.", "ok")
    return redirect(url_for("sources.source", env=env, name=name))


@bp.get(f"/env/{ENV}/sources/<name>")
def source(env: str, name: str):
    return _source_page(env, _source_or_404(env, name))


def _source_page(env: str, item: dict, *, errors=(), form=None, status=200):
    store = get_store()
    settings = store.environment(env)
    return (
        render_template(
            "sources/source.html",
            env=env,
            settings=settings,
            source=item,
            masked_secret=mask_secret(item["secret"]),
            call_url=public_url(url_for("source_hooks.receive", env=env, source=item["name"])),
            last_payload=_pretty(item["last_payload"]),
            kept=store.kept_payloads(env, item["name"]),
            kept_count=store.count_kept_payloads(env, item["name"]),
            errors=errors,
            form=form,
            default_header=DEFAULT_HMAC_HEADER,
        ),
        status,
    )


@bp.post(f"/env/{ENV}/sources/<name>")
def edit(env: str, name: str):
    item = _source_or_404(env, name)
    fields, errors = _form_settings(request.form, adding=False)
    if errors:
        return _source_page(env, item, errors=errors, form=request.form, status=400)
    get_store().update_source(env, name, **fields)
    flash(f"Source {name} saved.", "ok")
    return redirect(url_for("sources.source", env=env, name=name))


@bp.post(f"/env/{ENV}/sources/<name>/remove")
def remove(env: str, name: str):
    _source_or_404(env, name)
    get_store().remove_source(env, name)
    flash(f"Source {name} removed; calls to its URL now get 404.", "ok")
    location = url_for("sources.index", env=env)
    if htmx:
        return "", 200, {"HX-Redirect": location}  # after hx-confirm: load the list
    return redirect(location)


@bp.post(f"/env/{ENV}/sources/preview")
def live_preview(env: str):
    """The template on a sample payload, or on the source's last one (an HTMX fragment)."""
    sample = request.form.get("sample", "").strip()
    payload_text = sample
    origin = "the sample payload"
    if not sample and request.form.get("source"):
        payload_text = _source_or_404(env, request.form["source"])["last_payload"] or ""
        origin = "the last payload received"
    if not payload_text:
        result, origin = None, ""
    else:
        try:
            payload = json.loads(payload_text)
        except ValueError as exc:
            result = Preview(False, error=f"the sample payload is not valid JSON: {exc}")
        else:
            result = preview(request.form.get("template", "").replace("\r\n", "\n"), payload)
    return render_template("sources/_preview.html", result=result, origin=origin)


@bp.post(f"/env/{ENV}/sources/<name>/resend/<int:payload_id>")
def resend(env: str, name: str, payload_id: int):
    """Re-send one kept payload with the current template (an HTMX fragment or a redirect)."""
    _source_or_404(env, name)
    store = get_store()
    try:
        kept = store.kept_payload(payload_id)
    except NotFound:
        kept = None
    if kept is None or (kept["env"], kept["source"]) != (env, name):
        abort(404, f"No kept payload #{payload_id} for {name}.")
    result = Translator(get_sender(), describe=notification_json).resend(payload_id)
    outcome = _resend_sentence(payload_id, result.http_status, result.body)
    if htmx:
        return render_template("sources/_resent.html", outcome=outcome, ok=result.http_status < 300)
    flash(outcome, "ok" if result.http_status < 300 else "error")
    return redirect(url_for("sources.source", env=env, name=name))


@bp.post(f"/env/{ENV}/sources/<name>/resend")
def resend_all(env: str, name: str):
    _source_or_404(env, name)
    counts = Translator(get_sender(), describe=notification_json).resend_all(env, name)
    flash(Translator.summary(counts), "error" if counts["kept"] or counts["failed"] else "ok")
    return redirect(url_for("sources.source", env=env, name=name))


def _resend_sentence(payload_id: int, status: int, body: dict) -> str:
    if status == 409:
        return f"#{payload_id} was re-sent already."
    if status == 422:
        return f"#{payload_id} still fails: {body['error']}"
    detail = body.get("error") or body.get("reason") or ""
    return f"#{payload_id}: {body['status']}" + (f" — {detail}" if detail else ".")


def _pretty(payload_text: str | None) -> str:
    """Stored JSON, indented for people (escaped by the template like any text)."""
    if not payload_text:
        return ""
    try:
        return json.dumps(json.loads(payload_text), indent=2, ensure_ascii=False)
    except ValueError:
        return payload_text
