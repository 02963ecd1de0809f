"""The translation layer: other systems' webhooks in, typed notifications out.

A *source* (monitoring, CI, payments, forms) calls ``POST /hooks/in/<env>/<source>``
with its own JSON. The call must carry the source's secret, as ``?token=``, an
``Authorization: Bearer`` header, or an HMAC-SHA256 signature of the raw body
in a header (GitHub's ``X-Hub-Signature-256: sha256=<hex>``); it is checked in
constant time before anything is written, and a refused call only bumps a
counter on the source's row. The payload is then rendered by the source's
Jinja2 template in a sandbox into Markdown, or, for a source without a
template, taken as a Slack-compatible ``{"text", "attachments"}`` payload.
The result goes through the same :class:`~bridge.sender.Sender` as the host's
notifications: the channel mapped to the source's type, the log, retries,
splitting. A payload whose template fails is kept with the reason and can be
re-sent once the template is fixed; a re-send posts it exactly once.

Templates are written by admins; the sandbox (bridge/sandbox.py) is there so
that neither a template nor a payload can reach the bridge's internals
(secrets, the database, Python objects), and so that a runaway template stops.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .attachments import AttachmentError, validate_attachments
from .integration import NOTIFICATION_TYPE_RULE, valid_notification_type
from .sandbox import MAX_RENDERED, TemplateFailure, compile_template, render
from .sender import Sender
from .store import NotFound, Store

SOURCE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
SOURCE_NAME_RULE = "use 1 to 64 letters, digits and . _ - (like alertmanager)"
DEFAULT_HMAC_HEADER = "X-Hub-Signature-256"  # GitHub's; GitLab sends a token header instead
HEADER_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,63}$")
MIN_SECRET = 8
MAX_SECRET = 256
MAX_DEPTH = 64  # JSON nesting a payload may have
MAX_KEPT = 500  # payloads kept per source waiting for a fixed template


class CallError(Exception):
    """A call the route answers with a 4xx or 5xx: ``status``, ``code`` and a sentence."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


# -- a source's settings ----------------------------------------------------------


def new_secret() -> str:
    """A secret for a source when the admin gives none (shown to them once)."""
    return secrets.token_urlsafe(24)


def source_problems(
    *,
    name: str | None = None,
    notification_type: str | None = None,
    template: str | None = None,
    secret: str | None = None,
    hmac_header: str | None = None,
) -> list[str]:
    """What is wrong with these settings (the screen and the CLI apply the same rules).

    Only the settings given are checked; ``secret`` "" means "keep or generate".
    """
    problems = []
    if name is not None and not SOURCE_NAME.match(name):
        problems.append(f"Source name {name or '(empty)'!r}: {SOURCE_NAME_RULE}.")
    if notification_type is not None and not valid_notification_type(notification_type):
        problems.append(
            f"Notification type {notification_type or '(empty)'!r}: {NOTIFICATION_TYPE_RULE}."
        )
    if template:
        try:
            compile_template(template)
        except TemplateFailure as exc:
            problems.append(f"Template: {exc}.")
    if secret and (not MIN_SECRET <= len(secret) <= MAX_SECRET or secret != secret.strip()):
        problems.append(
            f"The secret needs {MIN_SECRET} to {MAX_SECRET} characters and no spaces around it."
        )
    if hmac_header and not HEADER_NAME.match(hmac_header):
        problems.append(
            f"Signature header {hmac_header!r}: a header name like X-Hub-Signature-256."
        )
    return problems


# -- the secret --------------------------------------------------------------------


def check_secret(
    source: dict[str, Any],
    *,
    body: bytes,
    query_token: str | None = None,
    authorization: str | None = None,
    signature: str | None = None,
) -> str:
    """Why the call does not carry the source's secret; ``""`` when it does.

    :param signature: the value of the source's signature header, if any.
    """
    secret = source["secret"].encode()
    header = source["hmac_header"]
    if header:
        if not signature:
            return f"missing signature header {header}"
        algorithm, sep, digest = signature.strip().partition("=")
        if not sep:
            algorithm, digest = "sha256", algorithm  # a bare hex digest (Gitea, Gogs)
        if algorithm.strip().lower() != "sha256":
            return f"{header} is not 'sha256=<hex>'"
        expected = hmac.new(secret, body, hashlib.sha256).hexdigest().encode()
        if not hmac.compare_digest(expected, digest.strip().lower().encode("utf-8", "replace")):
            return f"{header} does not match the body signed with the secret"
        return ""
    token = query_token
    if token is None and authorization:
        scheme, _, value = authorization.partition(" ")
        token = value.strip() if scheme.lower() == "bearer" else None
    if not token:
        return "no token: send ?token=<secret> or Authorization: Bearer <secret>"
    if not hmac.compare_digest(token.encode("utf-8", "replace"), secret):
        return "the token does not match"
    return ""


# -- the body ----------------------------------------------------------------------------


def parse_body(content_type: str, body: bytes) -> Any:
    """The JSON payload; raises :class:`CallError` (415 not JSON, 400 unreadable)."""
    mimetype = (content_type or "").split(";")[0].strip().lower()
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        raise CallError(
            415,
            "unsupported_media_type",
            f"send JSON (Content-Type: application/json), not {mimetype or 'no content type'}",
        )
    try:
        payload = json.loads(body)
    except RecursionError:
        raise CallError(400, "invalid_json", "the JSON is nested too deeply") from None
    except ValueError:
        raise CallError(400, "invalid_json", "the body is not valid JSON") from None
    if _depth(payload) > MAX_DEPTH:
        raise CallError(400, "invalid_json", f"the JSON is nested deeper than {MAX_DEPTH} levels")
    return payload


def _depth(value: Any) -> int:
    """How deeply lists and objects nest (iteratively: no recursion limit to hit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, level)
            if level > MAX_DEPTH:
                return level
            stack.extend((child, level + 1) for child in item)
    return deepest


# -- Slack-compatible payloads -------------------------------------------------------------

# Slack's <url|text> links; Mattermost converts them only for its own incoming webhooks
# (model.ParseSlackLinksToMarkdown), so the bridge does it before posting.
_SLACK_LINK = re.compile(r"<([^<|]+)\|([^>]+)>")


def slack_links_to_markdown(text: str) -> str:
    return _SLACK_LINK.sub(r"[\2](\1)", text)


def passthrough(payload: Any) -> tuple[str, list[dict[str, Any]]]:
    """A Slack-compatible payload as (text, attachments); raises :class:`CallError` (400)."""
    if not isinstance(payload, dict) or not (
        isinstance(payload.get("text"), str) or isinstance(payload.get("attachments"), list)
    ):
        raise CallError(
            400,
            "not_slack_compatible",
            "this source has no template: send a Slack-compatible payload with 'text' "
            "and/or 'attachments', or give the source a template",
        )
    text = payload.get("text") or ""
    if not isinstance(text, str):
        raise CallError(400, "invalid_field", "'text' must be a string")
    if len(text) > MAX_RENDERED:
        raise CallError(400, "invalid_field", f"'text' is longer than {MAX_RENDERED} characters")
    attachments: list[dict[str, Any]] = []
    if payload.get("attachments") is not None:
        try:
            attachments = validate_attachments(payload["attachments"], strict=False)
        except AttachmentError as exc:
            raise CallError(400, "invalid_field", str(exc)) from None
    for attachment in attachments:
        for key in ("text", "pretext"):
            if key in attachment:
                attachment[key] = slack_links_to_markdown(attachment[key])
        for item in attachment.get("fields", []):
            item["value"] = slack_links_to_markdown(item["value"])
    if not text.strip() and not attachments:
        raise CallError(400, "invalid_field", "'text' and 'attachments' are both empty")
    return slack_links_to_markdown(text), attachments


def translate(source: dict[str, Any], payload: Any) -> tuple[str, list[dict[str, Any]]]:
    """(text, attachments) for a payload: the template's Markdown, or the payload passed through.

    :raises TemplateFailure: the template failed on this payload.
    :raises CallError: no template and not a Slack-compatible payload.
    """
    if source["template"].strip():
        return render(source["template"], payload), []
    return passthrough(payload)


# -- the whole call ---------------------------------------------------------------------------


@dataclass
class Call:
    """What arrived: the raw body and where a secret may be."""

    body: bytes
    content_type: str = ""
    query_token: str | None = None
    authorization: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)  # case-insensitive from Flask


@dataclass
class Result:
    """What the route answers: a status and a JSON body."""

    http_status: int
    body: dict[str, Any]
    message: dict[str, Any] | None = None


class Translator:
    """Receives sources' calls and re-sends their kept payloads.

    :param sender: the :class:`Sender` notifications go through; its store is
        the one written to (one connection, so a re-send's message and its
        payload's state can share a transaction).
    :param describe: turns a sent message into the answer's body (the host API's shape).
    """

    def __init__(
        self,
        sender: Sender,
        describe: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ):
        self.store: Store = sender.store
        self.sender = sender
        self.describe = describe or (lambda message: {"status": message["status"]})

    def receive(self, env: str, name: str, call: Call) -> Result:
        """Check, parse, translate and send one call.

        :raises store.NotFound: no such source (nothing written).
        :raises CallError: refused (403 secret, 415, 400, 503 too many kept).
        """
        started = time.perf_counter()
        source = self.store.source(env, name)
        signature = call.headers.get(source["hmac_header"]) if source["hmac_header"] else None
        reason = check_secret(
            source,
            body=call.body,
            query_token=call.query_token,
            authorization=call.authorization,
            signature=signature,
        )
        if reason:
            if self.store.count_source_rejection(env, name, reason):
                self._log(
                    env,
                    name,
                    started,
                    "rejected",
                    403,
                    f"{reason} (more refusals in the next 10 minutes are only counted, "
                    "on the sources screen)",
                )
            raise CallError(403, "forbidden", f"the call does not carry the secret: {reason}")
        try:
            payload = parse_body(call.content_type, call.body)
        except CallError as exc:
            self._log(env, name, started, "rejected", exc.status, exc.message)
            raise
        stored = json.dumps(payload, ensure_ascii=False)
        self.store.record_source_payload(env, name, stored)
        try:
            text, attachments = translate(source, payload)
        except CallError as exc:
            self._log(env, name, started, "rejected", exc.status, exc.message)
            raise
        except TemplateFailure as exc:
            return self._keep(env, name, started, stored, exc)
        if not text and not attachments:
            reason = "the template rendered nothing (nothing to send)"
            self._log(env, name, started, "ignored", 200, reason)
            return Result(200, {"status": "ignored", "reason": reason})
        message = self.sender.notify(env, source["notification_type"], text, attachments)
        self._log(env, name, started, "ok", 201, "", message=message)
        return Result(201, self.describe(message), message)

    def _keep(
        self, env: str, name: str, started: float, payload: str, failure: TemplateFailure
    ) -> Result:
        if self.store.count_kept_payloads(env, name) >= MAX_KEPT:
            error = (
                f"template error: {failure}; NOT kept: {MAX_KEPT} payloads already wait for "
                "the template to be fixed"
            )
            self._log(env, name, started, "error", 503, error)
            raise CallError(503, "unavailable", error)
        kept_id = self.store.keep_source_payload(env, name, payload, str(failure))
        error = f"template error: {failure}; payload kept (#{kept_id}) to re-send after a fix"
        self._log(env, name, started, "error", 202, error)
        return Result(202, {"status": "kept", "error": error})

    def resend(self, payload_id: int) -> Result:
        """Translate a kept payload again with the source's current template and send it.

        Taken with an atomic claim, so a double click or a CLI run beside the
        screen posts it once; the message and the payload's new state are
        written in one transaction.
        """
        started = time.perf_counter()
        kept = self.store.kept_payload(payload_id)
        env, name = kept["env"], kept["source"]
        if not self.store.claim_kept_payload(payload_id):
            return Result(409, {"status": kept["status"], "reason": "already re-sent"})
        source = self.store.source(env, name)
        try:
            text, attachments = translate(source, json.loads(kept["payload"]))
        except (TemplateFailure, CallError) as exc:
            self.store.finish_kept_payload(payload_id, "kept", error=str(exc))
            self._log(
                env,
                name,
                started,
                "error",
                None,
                f"re-send of #{payload_id}: {exc}",
                action="source_resend",
            )
            return Result(422, {"status": "kept", "error": str(exc)})
        if not text and not attachments:
            self.store.finish_kept_payload(payload_id, "ignored")
            reason = "the template rendered nothing (nothing to send)"
            self._log(
                env,
                name,
                started,
                "ignored",
                None,
                f"re-send of #{payload_id}: {reason}",
                action="source_resend",
            )
            return Result(200, {"status": "ignored", "reason": reason})
        message = self.sender.notify(
            env,
            source["notification_type"],
            text,
            attachments,
            on_stored=lambda stored: self.store.finish_kept_payload(
                payload_id, "resent", message_id=stored["id"]
            ),
        )
        self._log(
            env,
            name,
            started,
            "ok",
            None,
            f"re-sent #{payload_id}",
            message=message,
            action="source_resend",
        )
        return Result(201, self.describe(message), message)

    def resend_all(self, env: str, name: str, only: int | None = None) -> dict[str, int]:
        """Re-send every payload the source kept (or just the one ``only``); counts by outcome.

        :raises store.NotFound: no such source, or ``only`` is not one of its payloads.
        """
        self.store.source(env, name)
        if only is None:
            ids = [row["id"] for row in self.store.kept_payloads(env, name, limit=MAX_KEPT)]
        else:
            kept = self.store.kept_payload(only)
            if (kept["env"], kept["source"]) != (env, name):
                raise NotFound(f"no kept payload {only} for {name} in {env}")
            ids = [only]
        counts = {"sent": 0, "failed": 0, "skipped": 0, "kept": 0, "ignored": 0}
        for payload_id in ids:
            result = self.resend(payload_id)
            status = result.body.get("status", "")
            if result.http_status != 409:
                counts[status if status in counts else "failed"] += 1
        return counts

    @staticmethod
    def summary(counts: dict[str, int]) -> str:
        """A re-send's counts as one sentence (the screen and the CLI say the same)."""
        return (
            f"Re-sent: {counts['sent']} sent, {counts['failed']} failed (retried later), "
            f"{counts['skipped']} skipped, {counts['ignored']} rendered nothing, "
            f"{counts['kept']} still failing the template."
        )

    def _log(
        self,
        env: str,
        name: str,
        started: float,
        outcome: str,
        http_status: int | None,
        error: str,
        *,
        message: dict[str, Any] | None = None,
        action: str = "source",
    ) -> None:
        self.store.log(
            env=env,
            direction="inbound",
            action=action,
            target=name,
            outcome=outcome,
            http_status=http_status,
            duration_ms=(time.perf_counter() - started) * 1000,
            error=error,
            message_id=message["id"] if message else None,
            post_id=message["post_id"] if message else "",
        )


@dataclass
class Preview:
    """What the admin screen shows for a template on a payload."""

    ok: bool
    text: str = ""
    attachments: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""
    line: int | None = None
    source_line: str = ""


def preview(template_text: str, payload: Any) -> Preview:
    """The template (or the pass-through) on a payload, or the error and its line."""
    try:
        text, attachments = translate({"template": template_text}, payload)
    except TemplateFailure as exc:
        return Preview(False, error=exc.message, line=exc.line, source_line=exc.source_line)
    except CallError as exc:
        return Preview(False, error=exc.message)
    return Preview(True, text=text, attachments=attachments)
