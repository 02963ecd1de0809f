"""``flask --app app ...`` commands for automation, deployment and the tests."""

from __future__ import annotations

import logging
import os

import click
from flask import Flask, current_app
from flask.cli import with_appcontext
from werkzeug.security import generate_password_hash

from . import instance_secret_key, oauth
from . import mattermost as mm
from .buttons import buttons_from_config
from .callbacks import CallbackSender
from .db import get_sender, get_store
from .files import private_directory
from .inbound import InboundRouter
from .integration import (
    NOTIFICATION_TYPE_RULE,
    TokenNeeded,
    activation_problems,
    credential_for_server,
    logged_client,
    mask_secret,
    new_api_key,
    valid_notification_type,
    verify_bot,
)
from .store import ENVIRONMENTS, NotFound, Store
from .translate import Translator, new_secret, source_problems

ENV_CHOICE = click.Choice(ENVIRONMENTS)


@click.command("init")
@with_appcontext
def init_command() -> None:
    """Create the instance folder, the schema (idempotent) and the secret key."""
    private_directory(current_app.instance_path)
    database_dir = os.path.dirname(os.path.abspath(current_app.config["DATABASE"]))
    if not os.path.isdir(database_dir):
        private_directory(database_dir)  # a folder the admin made keeps its mode
    if not os.environ.get("BRIDGE_SECRET_KEY"):
        instance_secret_key(current_app.instance_path)
    version = get_store().migrate()
    click.echo(f"Initialised {current_app.config['DATABASE']} (schema version {version}).")


@click.command("set-password")
@with_appcontext
@click.option("--password", help="The new admin password (asked for when left out).")
def set_password_command(password: str | None) -> None:
    """Set the admin password for the web screens."""
    if password is None:
        password = click.prompt("Admin password", hide_input=True, confirmation_prompt=True)
    if len(password) < 8:
        raise click.ClickException("the password needs at least 8 characters")
    store = get_store()
    store.migrate()
    store.set_admin_password_hash(generate_password_hash(password))
    click.echo("Admin password set; every admin session opened before has ended.")


@click.command("configure")
@with_appcontext
@click.argument("env", type=ENV_CHOICE)
@click.option("--server-url", help="Mattermost server, e.g. https://chat.example.com")
@click.option("--bot-token", help="The bot account's access token.")
@click.option(
    "--login-id",
    help="Account login instead of a bot token (servers without bots): username or e-mail.",
)
@click.option("--password", help="The --login-id account's password.")
@click.option("--webhook-token", help="The outgoing webhook's token.")
@click.option("--command-token", help="The /bridge slash command's token.")
@click.option("--channel", "channel_id", help="Mirror channel id.")
@click.option(
    "--notify",
    "notify",
    multiple=True,
    metavar="TYPE=CHANNEL_ID",
    help="Notification type -> channel; given at all, it replaces the whole map.",
)
@click.option("--callback-url", help="Reply callback URL on the host ('' to remove).")
@click.option("--callback-secret", help="Secret that signs reply callbacks.")
@click.option("--activate/--deactivate", default=None, help="Switch the integration on or off.")
def configure_command(env: str, **options) -> None:
    """Configure an environment; the token or login is verified before anything is saved."""
    store = get_store()
    store.migrate()
    settings = store.environment(env)
    given = {key: value for key, value in options.items() if value not in (None, ())}
    if "bot_token" in given and ({"login_id", "password"} & set(given)):
        raise click.UsageError("give --bot-token, or --login-id and --password, not both")
    fields = _plain_fields(given)
    if "notify" in given:
        fields["notify_map"] = _parse_notify(given["notify"])
    callback = {**settings, **fields}
    if callback["callback_url"] and not callback["callback_secret"]:
        raise click.ClickException(
            "a callback URL needs --callback-secret: the host verifies callbacks with it"
        )

    if not set(given) <= {"activate", "command_token"}:  # these need no server
        fields.update(_verified_identity(store, settings, fields, given))
    settings = {**settings, **fields}
    if "mirror_channel_id" in fields or "notify_map" in fields:
        names = _warn_about_channels(store, settings)
        fields["channel_names"] = {**settings["channel_names"], **names}
        if "mirror_channel_id" in fields:
            fields["mirror_channel_name"] = names.get(fields["mirror_channel_id"], "")
    if given.get("activate"):
        problems = activation_problems(settings)
        if problems:
            raise click.ClickException("cannot activate: " + "; ".join(problems))
    if "activate" in given:
        fields["active"] = int(given["activate"])
    store.update_environment(env, **fields)
    state = "active" if store.environment(env)["active"] else "inactive"
    click.echo(f"Saved the {env} environment ({state}).")


def _plain_fields(given: dict) -> dict:
    names = {
        "server_url": "server_url",
        "webhook_token": "webhook_token",
        "command_token": "command_token",
        "channel_id": "mirror_channel_id",
        "callback_url": "callback_url",
        "callback_secret": "callback_secret",
    }
    fields = {column: given[option].strip() for option, column in names.items() if option in given}
    if fields.get("server_url"):
        try:
            fields["server_url"] = mm.normalize_server_url(fields["server_url"])
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--server-url") from None
    return fields


def _parse_notify(pairs: tuple[str, ...]) -> dict[str, str]:
    mapping = {}
    for pair in pairs:
        kind, sep, channel = pair.partition("=")
        if not sep or not kind.strip():
            raise click.BadParameter(f"{pair!r} is not TYPE=CHANNEL_ID", param_hint="--notify")
        if not valid_notification_type(kind.strip()):
            raise click.BadParameter(
                f"type {kind.strip()!r}: {NOTIFICATION_TYPE_RULE}", param_hint="--notify"
            )
        if channel.strip():
            mapping[kind.strip()] = channel.strip()
    return mapping


def _verified_identity(store, settings: dict, fields: dict, given: dict) -> dict:
    """Check the (new or saved) token or login against the server; stop on failure.

    The fields to save: who the server says it is, and the credential used.
    """
    server_url = fields.get("server_url", settings["server_url"])
    login = bool({"login_id", "password"} & set(given))
    mode = "login" if login else "token" if "bot_token" in given else settings["auth_mode"]
    try:
        credential = credential_for_server(
            settings,
            server_url,
            mode,
            typed_token=given.get("bot_token"),
            login_id=given.get("login_id"),
            typed_password=given.get("password"),
        )
    except TokenNeeded as exc:
        if mode == "login":
            raise click.ClickException(f"{exc} (--password); nothing saved") from None
        raise click.ClickException(
            "a new --server-url needs --bot-token too: the saved token is only sent to "
            f"the saved server ({settings['server_url']}); nothing saved"
        ) from None
    if not server_url or not credential.present:
        need = "--login-id and --password" if mode == "login" else "--bot-token"
        raise click.ClickException(f"need --server-url and {need} (nothing saved yet)")
    client = logged_client(
        store,
        settings,
        server_url=server_url,
        token=None if credential.login else credential.token,
        login=credential.login,
    )
    try:
        identity = verify_bot(client)
    except mm.MattermostError as exc:
        what = "login" if mode == "login" else "token"
        raise click.ClickException(f"{what} check failed, nothing saved: {exc}") from None
    if mode == "login":
        kind = "by account login: NOT a bot account (its posts show under its name)"
    else:
        kind = "bot account" if identity.is_bot else "NOT a bot account (use a bot)"
    click.echo(f"Verified @{identity.username}, {kind}, Mattermost {identity.server_version}.")
    other = store.environment("test" if settings["name"] == "production" else "production")
    if other["bot_user_id"] and other["bot_user_id"] == identity.user_id:
        click.echo(
            f"Warning: @{identity.username} is also the {other['name']} bot; production "
            "needs its own bot account (the checklist will say so).",
            err=True,
        )
    return {**identity.as_fields(), **credential.as_fields()}


def _warn_about_channels(store, settings: dict) -> dict[str, str]:
    """Warn (not refuse) about channels the bot cannot post to; the names found."""
    client = logged_client(store, settings)
    names: dict[str, str] = {}  # never carry a previous channel's name over to a new id
    channels = {settings["mirror_channel_id"]} | set(settings["notify_map"].values())
    for channel_id in sorted(c for c in channels if c):
        try:
            channel = client.channel(channel_id)
            member = client.is_member(channel_id, settings["bot_user_id"])
        except mm.MattermostError as exc:
            click.echo(f"Warning: channel {channel_id}: {exc}", err=True)
            continue
        name = channel.get("display_name") or channel.get("name") or channel_id
        names[channel_id] = name
        if channel_id == settings["mirror_channel_id"]:
            if channel.get("type") != "O":
                click.echo(
                    f"Warning: {name} is not a public channel; outgoing webhooks (agent "
                    "replies) only fire in public channels.",
                    err=True,
                )
        if not member:
            click.echo(
                f"Warning: the bot is not a member of {name} ({channel_id}); "
                "posts there will fail with 403 until it is added.",
                err=True,
            )
    return names


@click.command("api-key")
@with_appcontext
@click.argument("env", type=ENV_CHOICE)
def api_key_command(env: str) -> None:
    """Print a new host API key for ENV (the old key stops working)."""
    store = get_store()
    store.migrate()
    key = new_api_key(store, env)
    click.echo(f"New API key for {env}; the previous key no longer works:")
    click.echo(key)


@click.command("retry")
@with_appcontext
@click.argument("env", type=ENV_CHOICE, required=False)
def retry_command(env: str | None) -> None:
    """Send again the messages that failed, and reply callbacks that are due."""
    counts = get_sender().retry_failed(env)
    click.echo(
        f"Retried: {counts['sent']} sent, {counts['failed']} still failed, "
        f"{counts['skipped']} left for an inactive environment."
    )
    router = InboundRouter(get_store(), buttons=buttons_from_config(current_app.config))
    replies = router.retry_queued(env)
    if any(replies.values()):
        click.echo(
            f"Agent replies kept after a failed lookup: {replies['stored']} stored, "
            f"{replies['ignored']} ignored, {replies['failed']} still failing."
        )
    callbacks = CallbackSender(get_store()).retry_due(env)
    if callbacks["delivered"] or callbacks["failed"]:
        click.echo(
            f"Reply callbacks: {callbacks['delivered']} delivered, "
            f"{callbacks['failed']} failed (tried again later)."
        )
    if counts["failed"] or replies["failed"]:
        raise SystemExit(1)


@click.command("worker")
@with_appcontext
@click.option("--once", is_flag=True, help="Make one pass and exit (instead of looping).")
def worker_command(once: bool) -> None:
    """Retry failed messages, route kept replies, deliver callbacks, prune the log.

    Runs until SIGTERM or Ctrl-C, which end it after the item in hand.
    """
    from .worker import Worker, install_signal_handlers

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s worker[%(process)d] %(levelname)s %(message)s"
    )
    # A store of its own for the worker's lifetime, not the app context's.
    store = Store(current_app.config["DATABASE"])
    try:
        store.migrate()
        worker = Worker(
            store,
            current_app.config["WORKER"],
            session=current_app.config.get("MATTERMOST_SESSION"),
            buttons=buttons_from_config(current_app.config),
        )
        if once:
            counts = worker.run_once()
            click.echo(counts.summary() or "Nothing to do.")
            if counts.errors:
                raise SystemExit(1)
            return
        install_signal_handlers(worker)
        worker.run()
    finally:
        store.close()


@click.command("prune-log")
@with_appcontext
@click.option(
    "--days",
    type=click.FloatRange(min=0),
    required=True,
    help="Delete log rows older than this many days.",
)
def prune_log_command(days: float) -> None:
    """Delete integration-log rows older than N days."""
    deleted = get_store().prune_log(days)
    click.echo(f"Deleted {deleted} log rows older than {days:g} days.")


# -- sources: other systems' webhooks ----------------------------------------------


@click.group("source")
def source_group() -> None:
    """Other systems' webhooks (POST /hooks/in/ENV/NAME) and their templates."""


def _read_template(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"cannot read {path}: {exc}", param_hint="--template") from None


def _refuse(problems: list[str]) -> None:
    if problems:
        raise click.ClickException(" ".join(problems))


@source_group.command("add")
@with_appcontext
@click.argument("env", type=ENV_CHOICE)
@click.argument("name")
@click.option("--type", "notification_type", required=True, help="Notification type to send as.")
@click.option(
    "--template",
    "template_path",
    type=click.Path(dir_okay=False),
    help="Jinja2 template file (Markdown out); without one, Slack-compatible payloads pass.",
)
@click.option("--secret", help="The shared secret (generated and printed once when left out).")
@click.option(
    "--hmac-header",
    help="Check an HMAC-SHA256 signature of the body in this header (e.g. X-Hub-Signature-256) "
    "instead of a ?token= or Bearer token.",
)
def source_add_command(
    env: str,
    name: str,
    notification_type: str,
    template_path: str | None,
    secret: str | None,
    hmac_header: str | None,
) -> None:
    """Add a source that other systems call at /hooks/in/ENV/NAME."""
    template = _read_template(template_path) or ""
    _refuse(
        source_problems(
            name=name,
            notification_type=notification_type,
            template=template,
            secret=secret,
            hmac_header=hmac_header,
        )
    )
    store = get_store()
    store.migrate()
    given = bool(secret)
    secret = secret or new_secret()
    try:
        store.add_source(
            env,
            name,
            notification_type=notification_type,
            template=template,
            secret=secret,
            hmac_header=hmac_header or "",
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    check = f"HMAC-SHA256 in {hmac_header}" if hmac_header else "?token= or Bearer"
    click.echo(f"Added source {name} to {env}: type {notification_type}, secret by {check}.")
    click.echo(f"Other systems call POST /hooks/in/{env}/{name}.")
    if not store.environment(env)["notify_map"].get(notification_type):
        click.echo(
            f"Warning: type {notification_type!r} is not mapped to a channel in {env}: "
            "its notifications are skipped until it is (configure --notify).",
            err=True,
        )
    if not given:
        click.echo("Its secret, printed this once:")
        click.echo(secret)


@source_group.command("edit")
@with_appcontext
@click.argument("env", type=ENV_CHOICE)
@click.argument("name")
@click.option("--type", "notification_type", help="New notification type.")
@click.option(
    "--template",
    "template_path",
    type=click.Path(dir_okay=False),
    help="New template file ('' via an empty file: pass-through).",
)
@click.option("--secret", help="New secret.")
@click.option("--hmac-header", help="Check an HMAC signature in this header from now on.")
@click.option("--token", "token_mode", is_flag=True, help="Check a ?token= / Bearer token instead.")
def source_edit_command(
    env: str, name: str, notification_type, template_path, secret, hmac_header, token_mode
) -> None:
    """Change a source's type, template, secret or how the secret is checked."""
    if hmac_header and token_mode:
        raise click.UsageError("give --hmac-header or --token, not both")
    fields = {
        "notification_type": notification_type,
        "template": _read_template(template_path),
        "secret": secret,
        "hmac_header": "" if token_mode else hmac_header,
    }
    fields = {key: value for key, value in fields.items() if value is not None}
    _refuse(source_problems(**fields))
    store = get_store()
    try:
        store.update_source(env, name, **fields)
    except NotFound as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Saved source {name} in {env}.")


@source_group.command("list")
@with_appcontext
@click.argument("env", type=ENV_CHOICE)
def source_list_command(env: str) -> None:
    """List the environment's sources (secrets masked)."""
    store = get_store()
    sources = store.sources(env)
    if not sources:
        click.echo(f"No sources in {env}.")
        return
    for source in sources:
        check = f"hmac:{source['hmac_header']}" if source["hmac_header"] else "token"
        template = "template" if source["template"].strip() else "pass-through"
        click.echo(
            f"{source['name']}\ttype={source['notification_type']}\t{check} "
            f"{mask_secret(source['secret'])}\t{template}\treceived={source['received']}"
            f"\trefused={source['rejected']}\tkept={source['kept']}"
        )


@source_group.command("remove")
@with_appcontext
@click.argument("env", type=ENV_CHOICE)
@click.argument("name")
def source_remove_command(env: str, name: str) -> None:
    """Remove a source (and the payloads it kept); its URL answers 404 from now on."""
    try:
        get_store().remove_source(env, name)
    except NotFound as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Removed source {name} from {env}.")


@source_group.command("resend")
@with_appcontext
@click.argument("env", type=ENV_CHOICE)
@click.argument("name")
@click.option("--id", "payload_id", type=int, help="Only this kept payload.")
def source_resend_command(env: str, name: str, payload_id: int | None) -> None:
    """Re-send the payloads a failing template kept, with the template as it is now."""
    try:
        counts = Translator(get_sender()).resend_all(env, name, only=payload_id)
    except NotFound as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(Translator.summary(counts))
    if counts["kept"]:
        raise SystemExit(1)


@click.command("oauth")
@with_appcontext
@click.option(
    "--server-url", required=True, help="The Mattermost server, e.g. https://chat.example.com."
)
@click.option("--client-id", required=True, help="The OAuth 2.0 app's client id.")
@click.option("--client-secret", required=True, help="The OAuth 2.0 app's client secret.")
@click.option("--team", default="", help="A team (its name) whose members may sign in too.")
@click.option(
    "--disable-password",
    is_flag=True,
    help="Turn the password login off (once a Mattermost sign-in has succeeded).",
)
def oauth_command(
    server_url: str, client_id: str, client_secret: str, team: str, disable_password: bool
) -> None:
    """Set up Sign in with Mattermost (OAuth 2.0) for the admin screens.

    Every run sets all the settings: without --team only system admins may
    sign in, and without --disable-password the password login is on (the way
    back in when the Mattermost sign-in fails).
    """
    store = get_store()
    store.migrate()
    fields = {
        "server_url": server_url.strip(),
        "client_id": client_id.strip(),
        "client_secret": client_secret.strip(),
        "team": team.strip(),
    }
    problems = oauth.settings_problems(fields)
    if problems:
        raise click.ClickException(" ".join(problems))
    fields["password_disabled"] = disable_password
    proven = oauth.sign_in_proven(oauth.OAuthSettings(**fields), store.last_oauth_sign_in())
    if disable_password and not proven:
        raise click.ClickException(oauth.DISABLE_REFUSED + " Nothing was changed.")
    store.save_oauth_settings(**fields)
    allowed = "system admins" + (f" and members of team {fields['team']}" if fields["team"] else "")
    callback = (current_app.config["PUBLIC_URL"] or "<bridge URL>") + "/login/mattermost/callback"
    click.echo(
        f"Sign in with Mattermost: {fields['server_url']}, client id {fields['client_id']}, "
        f"secret {mask_secret(fields['client_secret'])}; allowed: {allowed}. "
        f"Password login {'off' if disable_password else 'on'}. "
        f"Callback URL to register in Mattermost: {callback}"
    )


def init_app(app: Flask) -> None:
    for command in (
        init_command,
        set_password_command,
        configure_command,
        api_key_command,
        retry_command,
        worker_command,
        prune_log_command,
        source_group,
        oauth_command,
    ):
        app.cli.add_command(command)
