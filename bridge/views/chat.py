"""The public web chat page: a visitor starts a conversation and sees agents' replies.

No login and no CSRF token: the page is meant to be embedded in another
site's iframe, where the browser does not send our SameSite session cookie.
The conversation id (26 random characters) in the URL is the visitor's
capability instead, and starting chats is rate-limited per client address.
"""

from __future__ import annotations

from flask import Blueprint, abort, redirect, render_template, request, session, url_for

from .. import htmx
from ..db import get_sender, get_store
from ..sender import ConversationClosed
from ..store import NotFound
from ..uploads import MAX_FILE_BYTES, UploadRefused, check_file
from . import parse_id
from .auth import is_admin
from .downloads import file_response

bp = Blueprint("chat", __name__, url_prefix="/chat")
ENV = "<any(test, production):env>"

MAX_NAME = 80
MAX_EMAIL = 200
MAX_TEXT = 4000
STARTS_PER_WINDOW = 10
MESSAGES_PER_WINDOW = 30
WINDOW_SECONDS = 600
POLL_SECONDS = 2


def _conversation_or_404(env: str, conversation_id: str) -> dict:
    """A conversation started on this page; the host API's ones stay the host's."""
    try:
        conversation = get_store().conversation(conversation_id, env=env)
    except NotFound:
        conversation = None
    if conversation is None or conversation["source"] != "chat":
        abort(404, "This chat does not exist (any more).")
    return conversation


def _limited(kind: str, limit: int) -> bool:
    bucket = f"chat-{kind}:{request.remote_addr}"
    return get_store().hit_rate_limit(bucket, limit=limit, window=WINDOW_SECONDS)


@bp.get(f"/{ENV}")
def page(env: str):
    settings = get_store().environment(env)
    conversation_id = request.args.get("c", "")
    if conversation_id:
        return _conversation_page(env, _conversation_or_404(env, conversation_id))
    # An admin trying the page sees why visitors cannot start a chat.
    inactive_for_admin = not settings["active"] and "stamp" in session and is_admin()
    return render_template(
        "chat/start.html",
        env=env,
        available=settings["active"],
        errors=[],
        form={},
        inactive_for_admin=inactive_for_admin,
    )


def _conversation_page(env: str, conversation: dict, errors=(), text: str = "", status=200):
    store = get_store()
    messages = store.with_files(
        store.messages_after(conversation["id"], 0, limit=500, visitor_view=True)
    )
    body = render_template(
        "chat/conversation.html",
        env=env,
        conversation=conversation,
        messages=messages,
        newest_id=messages[-1]["id"] if messages else 0,
        poll_seconds=POLL_SECONDS,
        errors=list(errors),
        text=text,
    )
    return body, status


@bp.post(f"/{ENV}/start")
def start(env: str):
    settings = get_store().environment(env)
    form = {
        "name": request.form.get("name", "").strip(),
        "email": request.form.get("email", "").strip(),
        "text": request.form.get("text", "").strip(),
    }
    errors = _start_errors(form)
    status = 400
    if not settings["active"]:
        errors.append("Chat is not available right now. Please try again later.")
    if not errors and _limited("start", STARTS_PER_WINDOW):
        errors.append("Too many new chats from your address. Please wait a few minutes.")
        status = 429
    if errors:
        return render_template(
            "chat/start.html", env=env, available=settings["active"], errors=errors, form=form
        ), status
    conversation, _ = get_sender().start_conversation(
        env, form["name"], form["text"], visitor_email=form["email"], source="chat"
    )
    return redirect(url_for("chat.page", env=env, c=conversation["id"]))


def _start_errors(form: dict) -> list[str]:
    errors = []
    if not form["name"]:
        errors.append("Please tell us your name.")
    elif len(form["name"]) > MAX_NAME:
        errors.append(f"Your name can have at most {MAX_NAME} characters.")
    if len(form["email"]) > MAX_EMAIL or (form["email"] and "@" not in form["email"]):
        errors.append("That e-mail address does not look right.")
    errors.extend(_text_errors(form["text"]))
    return errors


def _text_errors(text: str) -> list[str]:
    if not text:
        return ["Please write a message."]
    if len(text) > MAX_TEXT:
        return [f"A message can have at most {MAX_TEXT} characters (this one has {len(text)})."]
    return []


def _attached_file() -> tuple[list[tuple[str, str, bytes]], list[str]]:
    """The form's checked file, if one is attached, or why it is refused."""
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        return [], []
    content = upload.read(MAX_FILE_BYTES + 1)
    try:
        name, mime_type = check_file(upload.filename, content)
    except UploadRefused as exc:
        return [], [str(exc)]
    return [(name, mime_type, content)], []


@bp.post(f"/{ENV}/<conversation_id>/messages")
def send(env: str, conversation_id: str):
    conversation = _conversation_or_404(env, conversation_id)
    text = request.form.get("text", "").strip()
    files, errors = _attached_file()
    if not errors:
        # A file may go alone; text alone must not be empty.
        errors = _text_errors(text) if text or not files else []
    if not errors and not get_store().environment(env)["active"]:
        # Kept but never posted would look sent to the visitor: say so instead.
        errors = ["Chat is not available right now. Please try again later."]
    if not errors and _limited("message", MESSAGES_PER_WINDOW):
        errors = ["You are sending messages too fast. Please wait a moment."]
    if not errors:
        try:
            get_sender().add_visitor_message(env, conversation["id"], text, files=files)
        except ConversationClosed:
            if htmx:  # the closed notice takes the composer's place
                return render_template("chat/_closed.html", env=env)
            errors = ["This conversation has been closed."]
    if htmx:
        # The composer resets; the poller brings the new message into the list.
        return render_template(
            "chat/_composer.html",
            env=env,
            conversation=conversation,
            errors=errors,
            text=text if errors else "",
        )
    if errors:  # without JavaScript: the page again, with the errors and the text
        return _conversation_page(env, conversation, errors, text, status=400)
    return redirect(url_for("chat.page", env=env, c=conversation["id"]))


@bp.get(f"/{ENV}/<conversation_id>/messages")
def poll(env: str, conversation_id: str):
    """Messages newer than ``after`` above a fresh poller; 286 stops polling when closed."""
    conversation = _conversation_or_404(env, conversation_id)
    after_id = parse_id(request.args.get("after")) or 0
    store = get_store()
    messages = store.with_files(store.messages_after(conversation_id, after_id, visitor_view=True))
    newest = messages[-1]["id"] if messages else after_id
    body = render_template(
        "chat/_poll.html",
        env=env,
        conversation=conversation,
        messages=messages,
        newest_id=newest,
        poll_seconds=POLL_SECONDS,
    )
    return body, 286 if conversation["status"] == "closed" else 200


@bp.get(f"/{ENV}/<conversation_id>/files/<file_id>")
def download(env: str, conversation_id: str, file_id: str):
    """A file of this conversation, fetched from Mattermost; any other id is a 404."""
    conversation = _conversation_or_404(env, conversation_id)
    return file_response(get_store(), env, conversation["id"], file_id)
