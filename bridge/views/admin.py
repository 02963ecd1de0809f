"""Admin screens: dashboard, authentication and configuration per environment."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_wtf import FlaskForm
from wtforms import PasswordField, StringField
from wtforms.validators import AnyOf, DataRequired, Length, ValidationError

from .. import checklist as readiness
from .. import htmx
from .. import mattermost as mm
from ..attachments import MAX_SHORT_TEXT as MAX_STYLE_TITLE
from ..attachments import valid_color
from ..db import get_sender, get_store
from ..integration import (
    AUTH_MODES,
    NOTIFICATION_TYPE_RULE,
    Credential,
    TokenNeeded,
    activation_problems,
    channel_groups,
    credential_for_server,
    logged_client,
    mask_password,
    mask_secret,
    new_api_key,
    team_channel_label,
    valid_notification_type,
    verify_bot,
)
from ..store import CONVERSATIONS_PAGE_SIZE, NotFound
from ..worker import worker_status
from . import parse_id
from .auth import login_required

bp = Blueprint("admin", __name__)
ENV = "<any(test, production):env>"
# Mattermost's tokens are 26 lowercase letters and digits; be a little lenient.
WEBHOOK_TOKEN = re.compile(r"^[A-Za-z0-9_-]{26}$")


@bp.before_request
@login_required
def require_login():
    """Every admin screen is behind the login."""


# -- dashboard ----------------------------------------------------------------------


@bp.get("/")
def dashboard():
    store = get_store()
    cards = []
    for settings in store.environments():
        cards.append(
            {
                "settings": settings,
                "checklist": readiness.checklist(store, settings["name"]),
                "failed": store.count_failed(settings["name"]),
                "queued_replies": store.count_queued_inbound(settings["name"]),
                "last_send": store.last_log(
                    settings["name"], "outbound", action=("post", "test_message")
                ),
                "last_inbound": store.last_valid_inbound(settings["name"]),
                "next_attempt": store.next_attempt(settings["name"]),
                "sources": store.count_sources(settings["name"]),
            }
        )
    return render_template("admin/dashboard.html", cards=cards, worker=_worker(store))


@bp.get("/worker-status")
def worker_status_fragment():
    """The dashboard's worker line, polled by HTMX: a stopped worker shows without a reload."""
    return render_template("admin/_worker_status.html", worker=_worker(get_store()), polled=True)


def _worker(store) -> dict:
    status = worker_status(store, stale_after=current_app.config["WORKER"].stale_after)
    status["age_text"] = _age_text(status["age"])
    return status


def _age_text(seconds: float | None) -> str:
    """``12 s ago``, ``5 min ago``, ``3 h ago``, ``2 days ago``."""
    if seconds is None:
        return "never"
    seconds = max(seconds, 0)
    for size, unit in ((86400, " days"), (3600, " h"), (60, " min")):
        if seconds >= 2 * size or (size < 86400 and seconds >= size):
            return f"{int(seconds // size)}{unit} ago"
    return f"{int(seconds)} s ago"


# -- authentication screen ----------------------------------------------------------


def _server_url(form, field):
    try:
        field.data = mm.normalize_server_url(field.data)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


def _webhook_token(form, field):
    value = (field.data or "").strip()
    if value and not WEBHOOK_TOKEN.match(value):
        raise ValidationError(
            "Mattermost's webhook tokens are 26 letters and digits: copy it again from "
            "Integrations → Outgoing Webhooks."
        )


def _command_token(form, field):
    value = (field.data or "").strip()
    if value and not WEBHOOK_TOKEN.match(value):
        raise ValidationError(
            "Mattermost's slash command tokens are 26 letters and digits: copy it again from "
            "Integrations → Slash Commands."
        )


class AuthForm(FlaskForm):
    server_url = StringField(
        "Server URL",
        validators=[DataRequired(), Length(max=300), _server_url],
        description="The address you open Mattermost at, e.g. https://chat.example.com",
    )
    # Rendered as radio buttons by the template (AUTH_MODE_CHOICES); a plain
    # field because WTForms 3.3 deprecates RadioField's tuple choices.
    auth_mode = StringField(
        "Sign in to Mattermost with",
        validators=[AnyOf(list(AUTH_MODES), message="choose bot token or account login")],
        default="token",
    )
    bot_token = PasswordField(
        "Bot token",
        validators=[Length(max=200)],
        description=(
            "The bot account's access token. Leave it empty to keep the saved one "
            "(for the same server only: a new address needs the token again)."
        ),
    )
    login_id = StringField(
        "Username or e-mail",
        validators=[Length(max=200)],
        description="The Mattermost account the bridge logs in as.",
    )
    password = PasswordField(
        "Password",
        validators=[Length(max=200)],
        description=(
            "Leave it empty to keep the saved one (for the same server and account only: "
            "a new address or account needs the password again)."
        ),
    )
    webhook_token = PasswordField(
        "Outgoing webhook token",
        validators=[_webhook_token],
        description="Shown by Mattermost when you create the outgoing webhook.",
    )
    command_token = PasswordField(
        "Slash command token",
        validators=[_command_token],
        description="Shown by Mattermost when you create the /bridge slash command.",
    )


AUTH_MODE_CHOICES = [
    ("token", "Bot account (its access token)"),
    ("login", "Account login (username or e-mail + password)"),
]


def _typed_credential(settings: dict, server_url: str, values) -> Credential:
    """The credential on the screen (typed, else saved); raises TokenNeeded."""
    mode = values.get("auth_mode") or settings["auth_mode"]
    return credential_for_server(
        settings,
        server_url,
        mode if mode in AUTH_MODES else "token",
        typed_token=values.get("bot_token", ""),
        login_id=values.get("login_id", ""),
        typed_password=values.get("password", ""),
    )


@bp.route(f"/env/{ENV}/auth", methods=["GET", "POST"])
def env_auth(env: str):
    store = get_store()
    settings = store.environment(env)
    form = AuthForm(
        data={
            "server_url": settings["server_url"],
            "auth_mode": settings["auth_mode"],
            "login_id": settings["login_id"],
        }
    )
    verification = None
    if form.validate_on_submit():
        try:
            credential = _typed_credential(settings, form.server_url.data, form.data)
        except TokenNeeded as exc:
            # Nothing saved, nothing sent.
            secret = form.password if form.auth_mode.data == "login" else form.bot_token
            secret.errors.append(str(exc))
        else:
            verification = _save_auth(settings, form, credential)
            settings = store.environment(env)
            if not htmx:
                flash(verification["summary"], "ok" if verification["ok"] else "error")
                return redirect(url_for("admin.env_auth", env=env))
    template = "admin/_auth_form.html" if htmx else "admin/auth.html"
    return render_template(
        template,
        env=env,
        form=form,
        auth_modes=AUTH_MODE_CHOICES,
        settings=settings,
        masked=_masked(settings),
        verification=verification,
        inbound_url=inbound_url(env),
        inbound_unreachable=_loopback(inbound_url(env)),
        command_url=public_url(url_for("agent_hooks.command", env=env)),
    )


def _save_auth(settings: dict, form: AuthForm, credential: Credential) -> dict:
    """Save the screen; a new server URL or credential is verified first, and kept only if it works."""
    env = settings["name"]
    server_url = form.server_url.data
    webhook_token = (form.webhook_token.data or "").strip()
    fields = {"webhook_token": webhook_token} if webhook_token else {}
    command_token = (form.command_token.data or "").strip()
    if command_token:
        fields["command_token"] = command_token
    if server_url == settings["server_url"] and not credential.new:
        if fields:
            get_store().update_environment(env, **fields)
        result = (
            _verify(settings, server_url, credential)
            if credential.present
            else _no_credential(credential)
        )
        result["summary"] = "Saved. " + result["summary"] + "."
        return result
    if not credential.present:
        get_store().update_environment(env, server_url=server_url, **fields)
        result = _no_credential(credential)
        result["summary"] = "Saved the server URL. " + result["summary"]
        return result
    result = _verify(settings, server_url, credential, remember=False)
    if not result["ok"]:
        # The form comes back with the secret fields empty (never shown back), and
        # their hint says "leave it empty to keep the saved one": say which is kept.
        secret = "password" if credential.mode == "login" else "token"
        result["summary"] = (
            f"Nothing saved: {result['summary'].rstrip('.')}. The saved settings are "
            f"unchanged; type the new {secret} again to try once more."
        )
        return result
    fields.update(server_url=server_url, **credential.as_fields())
    fields.update(result["identity"].as_fields())
    get_store().update_environment(env, **fields)
    result["summary"] = "Saved and verified."
    return result


def _no_credential(credential: Credential) -> dict:
    if credential.mode == "login":
        return {"ok": False, "summary": "Enter the account's username or e-mail and password."}
    return {"ok": False, "summary": "Enter the bot token to verify the bot."}


@bp.post(f"/env/{ENV}/auth/verify")
def env_verify(env: str):
    """Check what is on the screen (typed values, else the saved ones); saves nothing."""
    settings = get_store().environment(env)
    typed_url = request.form.get("server_url", "").strip()
    try:
        server_url = mm.normalize_server_url(typed_url) if typed_url else settings["server_url"]
    except ValueError as exc:
        verification = {"ok": False, "summary": str(exc)}
        return render_template("admin/_verify_result.html", verification=verification, env=env)
    try:
        credential = _typed_credential(settings, server_url, request.form)
    except TokenNeeded as exc:
        verification = {"ok": False, "summary": str(exc)}
        return render_template("admin/_verify_result.html", verification=verification, env=env)
    if not server_url:
        verification = {"ok": False, "summary": "Enter the server URL first."}
    elif not credential.present:
        verification = _no_credential(credential)
    else:
        unsaved = server_url != settings["server_url"] or credential.new
        verification = _verify(settings, server_url, credential, remember=not unsaved)
        if unsaved and verification["ok"]:
            verification["summary"] = "These values work but are not saved yet: press Save."
            verification["unsaved"] = True
    return render_template("admin/_verify_result.html", verification=verification, env=env)


def _verify(
    settings: dict, server_url: str, credential: Credential, *, remember: bool = True
) -> dict:
    """Ask Mattermost who signs in with ``credential``; with ``remember``, a success
    refreshes the saved identity."""
    store = get_store()
    client = logged_client(
        store,
        settings,
        session=current_app.config.get("MATTERMOST_SESSION"),
        server_url=server_url,
        token=None if credential.login else credential.token,
        login=credential.login,
    )
    try:
        identity = verify_bot(client)
    except mm.MattermostError as exc:
        # The saved identity stays: the loop guard needs the bot's id even while
        # Mattermost is down, and the failure itself is in the log.
        return {"ok": False, "summary": str(exc), "error_class": type(exc).__name__}
    if remember:
        store.update_environment(settings["name"], **identity.as_fields())
    return {
        "ok": True,
        "summary": f"Verified @{identity.username}",
        "identity": identity,
        "mode": credential.mode,
    }


def _loopback(url: str) -> bool:
    """An inbound URL a Mattermost on another machine could never call."""
    host = (urlsplit(url).hostname or "").lower()
    return host in ("localhost", "::1") or host.startswith("127.")


def _masked(settings: dict) -> dict:
    return {
        "bot_token": mask_secret(settings["bot_token"]),
        "password": mask_password(settings["password"]),
        "webhook_token": mask_secret(settings["webhook_token"]),
        "command_token": mask_secret(settings["command_token"]),
        "callback_secret": mask_secret(settings["callback_secret"]),
    }


def inbound_url(env: str) -> str:
    """The address Mattermost's outgoing webhook must call."""
    return public_url(url_for("hooks.receive", env=env))


def public_url(path: str) -> str:
    """A path of this app as others reach it: BRIDGE_PUBLIC_URL, else this request's host."""
    base = current_app.config["PUBLIC_URL"]
    if base:
        return base + path[len(request.script_root) :]
    return request.host_url.rstrip("/") + path


# -- configuration screen -------------------------------------------------------------


@bp.route(f"/env/{ENV}/config", methods=["GET", "POST"])
def env_config(env: str):
    store = get_store()
    settings = store.environment(env)
    groups, load_error = _channel_groups(settings)
    known = {c["id"]: c for group in groups for c in group.channels}
    errors: list[str] = []
    form_rows = None
    if request.method == "POST":
        mirror_id = request.form.get("mirror_channel_id", "").strip()
        rows = _notify_rows(request.form)
        callback_url = request.form.get("callback_url", "").strip()
        callback_secret = request.form.get("callback_secret", "").strip()
        errors = _config_errors(settings, known, mirror_id, rows, callback_url, callback_secret)
        if not errors:
            notify_map = {kind: channel for kind, channel, *_ in rows if channel}
            # A colour or title makes the type's notifications message attachments.
            notify_styles = {
                kind: {"color": color, "title": title}
                for kind, channel, color, title in rows
                if channel and (color or title)
            }
            names = _channel_names(settings, known, [mirror_id, *notify_map.values()])
            fields = {
                "mirror_channel_id": mirror_id,
                "mirror_channel_name": names.get(mirror_id, ""),
                "notify_map": notify_map,
                "notify_styles": notify_styles,
                "channel_names": names,
                "callback_url": callback_url,
                "accept_other_bots": int(request.form.get("accept_other_bots") == "1"),
            }
            if callback_secret:
                fields["callback_secret"] = callback_secret
            store.update_environment(env, **fields)
            flash("Configuration saved.", "ok")
            if mirror_id in known and known[mirror_id]["type"] != "O":
                flash(
                    "The mirror channel is private: Mattermost fires outgoing webhooks only in "
                    "public channels, so agents' replies will not come back.",
                    "error",
                )
            return redirect(url_for("admin.env_config", env=env))
        form_rows = rows
    return render_template(
        "admin/config.html",
        env=env,
        settings=settings,
        groups=groups,
        known=known,
        load_error=load_error,
        errors=errors,
        rows=form_rows if form_rows is not None else _saved_rows(settings),
        masked=_masked(settings),
        left_channels=_left_channels(settings, known) if not load_error else [],
        problems=activation_problems(settings),
        embed_snippet=_embed_snippet(env),
    )


def _channel_groups(settings: dict):
    """The bot's channels from Mattermost, or the reason they cannot be listed."""
    if not settings["bot_user_id"]:
        return [], "Verify the bot on the authentication screen first."
    client = logged_client(
        get_store(), settings, session=current_app.config.get("MATTERMOST_SESSION")
    )
    try:
        return channel_groups(client, settings["bot_user_id"]), ""
    except mm.MattermostError as exc:
        return [], f"Could not list the bot's channels: {exc}"


def _channel_names(settings: dict, known: dict, channel_ids: list[str]) -> dict[str, str]:
    """``Team / Channel`` for each channel in use: from the list, else as saved before."""
    names = {}
    for channel_id in channel_ids:
        if channel_id in known:
            names[channel_id] = team_channel_label(known[channel_id])
        elif channel_id in settings["channel_names"]:
            names[channel_id] = settings["channel_names"][channel_id]
        elif channel_id and channel_id == settings["mirror_channel_id"]:
            names[channel_id] = settings["mirror_channel_name"]
    return names


def _left_channels(settings: dict, known: dict) -> list[tuple[str, str]]:
    """Saved channels the bot is no longer a member of: (id, how to name it)."""
    saved = [settings["mirror_channel_id"], *settings["notify_map"].values()]
    names = settings["channel_names"]
    return [
        (channel_id, names.get(channel_id) or channel_id)
        for channel_id in dict.fromkeys(saved)
        if channel_id and channel_id not in known
    ]


def _notify_rows(form) -> list[tuple[str, str, str, str]]:
    """(type, channel, colour, title) per row of the screen."""
    kinds = form.getlist("notify_type")
    channels = form.getlist("notify_channel")
    colors = form.getlist("notify_color")
    titles = form.getlist("notify_title")
    rows = []
    for index, (kind, channel) in enumerate(zip(kinds, channels, strict=False)):
        color = colors[index].strip() if index < len(colors) else ""
        title = titles[index].strip() if index < len(titles) else ""
        if kind.strip() or channel.strip():
            rows.append((kind.strip(), channel.strip(), color, title))
    return rows


def _saved_rows(settings: dict) -> list[tuple[str, str, str, str]]:
    styles = settings["notify_styles"]
    return [
        (
            kind,
            channel,
            styles.get(kind, {}).get("color", ""),
            styles.get(kind, {}).get("title", ""),
        )
        for kind, channel in sorted(settings["notify_map"].items())
    ]


def _config_errors(settings, known, mirror_id, rows, callback_url, callback_secret) -> list[str]:
    errors = []
    allowed = set(known) | {settings["mirror_channel_id"]} | set(settings["notify_map"].values())
    if mirror_id and mirror_id not in allowed:
        errors.append("The chosen mirror channel is not one the bot is a member of.")
    if settings["active"] and not mirror_id:
        errors.append("An active environment needs a mirror channel: deactivate it first.")
    seen = set()
    for kind, channel, color, title in rows:
        if color and not valid_color(color):
            errors.append(
                f"The colour for {kind!r}: good, warning, danger or a hex colour like #36a64f."
            )
        if len(title) > MAX_STYLE_TITLE:
            errors.append(f"The title for {kind!r} is longer than {MAX_STYLE_TITLE} characters.")
        if not valid_notification_type(kind):
            errors.append(f"Notification type {kind or '(empty)'!r}: {NOTIFICATION_TYPE_RULE}.")
        elif kind in seen:
            errors.append(f"Notification type {kind!r} appears twice.")
        seen.add(kind)
        if channel and channel not in allowed:
            errors.append(f"The channel for {kind!r} is not one the bot is a member of.")
    if callback_url and not re.match(r"^https?://[^\s/]+", callback_url):
        errors.append("The reply callback URL must start with http:// or https://.")
    if callback_url and not (callback_secret or settings["callback_secret"]):
        errors.append(
            "Set a callback secret: without one the host cannot tell the bridge's "
            "callbacks from forged ones."
        )
    return errors


def _embed_snippet(env: str) -> str:
    """The iframe for the host's site, at the address visitors reach the bridge at."""
    src = public_url(url_for("chat.page", env=env))
    return (
        f'<iframe src="{src}" title="Chat with us" '
        'style="width:380px;height:560px;border:1px solid #ccc;border-radius:8px"></iframe>'
    )


@bp.post(f"/env/{ENV}/activate")
def activate(env: str):
    store = get_store()
    problems = activation_problems(store.environment(env))
    if problems:
        flash("Cannot activate yet: " + "; ".join(problems) + ".", "error")
    else:
        store.update_environment(env, active=1)
        flash(f"The {env} integration is active: conversations are mirrored.", "ok")
    return redirect(url_for("admin.env_config", env=env))


@bp.post(f"/env/{ENV}/deactivate")
def deactivate(env: str):
    get_store().update_environment(env, active=0)
    flash(f"The {env} integration is inactive: nothing is posted and replies are ignored.", "ok")
    return redirect(url_for("admin.env_config", env=env))


@bp.post(f"/env/{ENV}/test-message")
def test_message(env: str):
    result = get_sender().send_test_message(env)
    return render_template("admin/_test_result.html", result=result)


@bp.post(f"/env/{ENV}/api-key")
def api_key(env: str):
    key = new_api_key(get_store(), env)
    return render_template("admin/_api_key.html", key=key, env=env)


# -- conversations --------------------------------------------------------------------


@bp.get("/conversations")
def conversations():
    before = parse_id(request.args.get("before"))
    rows = get_store().recent_conversations(before=before)
    return render_template(
        "admin/conversations.html",
        conversations=rows,
        before=before,
        older_than=rows[-1]["seq"] if len(rows) == CONVERSATIONS_PAGE_SIZE else None,
    )


@bp.get("/conversations/<conversation_id>")
def conversation(conversation_id: str):
    store = get_store()
    try:
        item = store.conversation(conversation_id)
    except NotFound:
        abort(404, f"No conversation {conversation_id}: it may have been started elsewhere.")
    messages = store.messages_after(conversation_id, 0, limit=1000)
    settings = store.environment(item["env"])
    permalink = (
        f"{settings['server_url']}/_redirect/pl/{item['root_post_id']}"
        if item["root_post_id"] and settings["server_url"]
        else ""
    )
    return render_template(
        "admin/conversation.html",
        conversation=item,
        messages=messages,
        permalink=permalink,
        callbacks=bool(settings["callback_url"]),
    )
