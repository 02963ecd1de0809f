"""The bare Flask app the bridge is measured against: one hop in, one hop out.

Served by the same gunicorn command as the bridge (``bench.baseline_app:app``).
Each route does exactly the one Mattermost call the budget speaks of, with a
per-process ``requests.Session`` like the bridge's, and nothing else: no
database, no log, no templates.

Configured by environment: ``BENCH_MM_URL``, ``BENCH_MM_TOKEN``, ``BENCH_MM_CHANNEL``.
"""

from __future__ import annotations

import os
import secrets
import threading

import requests
from flask import Flask, abort, jsonify, request

app = Flask(__name__)

MM_URL = os.environ.get("BENCH_MM_URL", "").rstrip("/")
MM_TOKEN = os.environ.get("BENCH_MM_TOKEN", "")
MM_CHANNEL = os.environ.get("BENCH_MM_CHANNEL", "")
TIMEOUT = (3.05, 10.0)  # the bridge's DEFAULT_TIMEOUT

_session: requests.Session | None = None
_session_pid: int | None = None
_session_lock = threading.Lock()


def session() -> requests.Session:
    """One Session per (forked) worker process, shared by its threads like the bridge's."""
    global _session, _session_pid
    with _session_lock:
        if _session is None or _session_pid != os.getpid():
            _session = requests.Session()
            _session.headers["User-Agent"] = "bench-baseline/0.1"
            _session_pid = os.getpid()
        return _session


def create_post(message: str, *, root_id: str = "") -> dict:
    """The one ``POST /api/v4/posts`` of the outbound and sources routes (502 when refused)."""
    body = {
        "channel_id": MM_CHANNEL,
        "message": message,
        "pending_post_id": f"{secrets.token_hex(13)}:0",
        "props": {"bridge_message_id": "0"},
    }
    if root_id:
        body["root_id"] = root_id
    response = session().post(
        f"{MM_URL}/api/v4/posts",
        json=body,
        headers={"Authorization": f"Bearer {MM_TOKEN}"},
        timeout=TIMEOUT,
        allow_redirects=False,
    )
    if response.status_code >= 300:
        abort(502)
    return response.json()


@app.get("/healthz")
def healthz():
    return "ok"


@app.post("/conversations/<root_id>/messages")
def add_message(root_id: str):
    """Outbound: the single ``POST /api/v4/posts`` (a reply in the thread ``root_id``)."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("text"), str):
        abort(400)
    post = create_post(f"**Hans Host:** {body['text']}", root_id=root_id)
    return jsonify({"id": 0, "post_id": post["id"], "status": "sent"}), 201


@app.post("/hooks/in/<source>")
def translated(source: str):
    """Sources: read another system's JSON, the single ``POST /api/v4/posts``, 201."""
    payload = request.get_json(silent=True)
    if not isinstance(payload, dict):
        abort(400)
    alerts = payload.get("alerts") or []
    lines = [f"**{str(payload.get('status', '')).upper()}** {source}"]
    lines += [
        f"- {alert['labels']['alertname']}: {alert['annotations']['summary']}" for alert in alerts
    ]
    post = create_post("\n".join(lines))
    return jsonify({"status": "sent", "post_id": post["id"]}), 201


@app.post("/hooks/mattermost/<env>")
def receive(env: str):
    """Inbound: read the form payload, the single ``GET /api/v4/posts/{id}``, empty 200."""
    post_id = request.form.get("post_id", "")
    if not post_id:
        abort(400)
    response = session().get(
        f"{MM_URL}/api/v4/posts/{post_id}",
        headers={"Authorization": f"Bearer {MM_TOKEN}"},
        timeout=TIMEOUT,
        allow_redirects=False,
    )
    if response.status_code >= 300:
        abort(502)
    response.json()
    return "", 200


@app.post("/hooks/mattermost/<env>/action")
def action(env: str):
    """Buttons: read the click's JSON and answer an ephemeral text; no call out."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("context"), dict):
        abort(400)
    return jsonify(
        {"ephemeral_text": f"{body['context'].get('action')} by {body.get('user_name')}"}
    )


@app.post("/hooks/mattermost/<env>/command")
def command(env: str):
    """Slash command: read the form and answer an ephemeral text; no call out."""
    if not request.form.get("token"):
        abort(403)
    return jsonify({"response_type": "ephemeral", "text": f"/bridge {request.form.get('text')}"})
