"""Reply callbacks: each agent reply POSTed to the host as signed JSON.

Headers: ``X-Bridge-Timestamp: <unix seconds>`` and ``X-Bridge-Signature:
sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`` with the environment's
callback secret. A failed delivery is retried with growing delays (by the
inline attempt, then by ``flask retry``); every attempt is in the log.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import requests

from . import mattermost as mm
from .integration import logged_client
from .mattermost import shared_session
from .notices import CALLBACK_FAILING, TOO_LONG, tell_agent
from .store import Store
from .text import iso_time

TIMEOUT = (3.05, 5.0)
INLINE_ATTEMPTS = 2
# Delay before attempt n+1 after n failed ones: 30 s, 2 min, 10 min, then hourly.
BACKOFF = (30, 120, 600, 3600)
# After this many failed attempts (the two inline ones, 30 s and 2 min later:
# about 2.5 minutes of a host that does not take it) the agent who wrote the
# reply is told privately, once; the bridge keeps trying after that.
NOTICE_AFTER_FAILURES = 4


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Bridge-Signature`` value for a body sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def verify_signature(
    secret: str,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    max_age: float = 300,
    now: float | None = None,
) -> bool:
    """What a host does on receipt: right signature, recent timestamp."""
    try:
        age = abs((now or time.time()) - int(timestamp))
    except ValueError:
        return False
    return age <= max_age and hmac.compare_digest(sign(secret, timestamp, body), signature)


def payload_for(message: dict[str, Any], conversation: dict[str, Any]) -> dict[str, Any]:
    event = "conversation.closed" if message["direction"] == "event" else "message.created"
    return {
        "event": event,
        "environment": message["env"],
        "conversation": {
            "id": conversation["id"],
            "external_id": conversation["external_id"],
            "status": conversation["status"],
        },
        "message": {
            "id": message["id"],
            "direction": "agent",
            "author": message["author"],
            "text": message["text"],
            "created_at": iso_time(message["created_at"]),
        },
    }


class CallbackSender:
    """Delivers stored agent replies to the host's callback URL."""

    def __init__(
        self,
        store: Store,
        *,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.store = store
        self.session = session or shared_session()
        self.sleep = sleep

    def deliver(self, message_id: int, *, attempts: int = 1) -> bool:
        """Try up to ``attempts`` times now; True when the host took it."""
        for attempt in range(attempts):
            if attempt:
                self.sleep(0.5 * attempt)
            if self._attempt(message_id, now=True):
                return True
        return False

    def retry_due(self, env: str | None = None) -> dict[str, int]:
        counts = {"delivered": 0, "failed": 0}
        for message_id in self.store.due_delivery_ids(env):
            counts["delivered" if self._attempt(message_id) else "failed"] += 1
        return counts

    def _attempt(self, message_id: int, *, now: bool = False) -> bool:
        """One POST; ``now`` ignores the backoff schedule (the inline attempts)."""
        if not self.store.claim_delivery(message_id, ignore_schedule=now):
            return False
        message = self.store.message(message_id)
        settings = self.store.environment(message["env"])
        if not settings["callback_url"]:
            self.store.finish_delivery(message_id, "")  # callback removed: nothing to do
            return True
        conversation = self.store.conversation(message["conversation_id"])
        body = json.dumps(payload_for(message, conversation), separators=(",", ":")).encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "X-Bridge-Timestamp": timestamp,
            "X-Bridge-Signature": sign(settings["callback_secret"], timestamp, body),
        }
        started = time.perf_counter()
        status, error = None, ""
        try:
            response = self.session.post(
                settings["callback_url"],
                data=body,
                headers=headers,
                timeout=TIMEOUT,
                allow_redirects=False,
            )
            status = response.status_code
            if not 200 <= status < 300:
                error = f"the host answered HTTP {status}"
        except requests.RequestException as exc:
            error = f"cannot reach the callback URL: {type(exc).__name__}"
        self.store.log(
            env=message["env"],
            direction="callback",
            action="reply_callback",
            target=_host_of(settings["callback_url"]),
            outcome="error" if error else "ok",
            http_status=status,
            duration_ms=(time.perf_counter() - started) * 1000,
            error=error,
            conversation_id=message["conversation_id"],
            message_id=message_id,
        )
        if error:
            failures = message["delivery_attempts"]
            delay = BACKOFF[min(failures - 1, len(BACKOFF) - 1)]
            self.store.finish_delivery(message_id, "failed", next_at=time.time() + delay)
            if message["direction"] == "agent":
                # 413: the host accepts no reply this long; say so at once, once.
                too_long = status == 413
                if (too_long and failures == 1) or (
                    not too_long and failures == NOTICE_AFTER_FAILURES
                ):
                    self._tell_agent(message, settings, conversation, error, too_long=too_long)
            return False
        self.store.finish_delivery(message_id, "delivered")
        return True

    def _tell_agent(
        self, message, settings, conversation, error: str, *, too_long: bool = False
    ) -> None:
        """The reply's author learns privately that the visitor has not got it."""
        try:
            post = logged_client(self.store, settings, session=self.session).post(
                message["post_id"]
            )
        except mm.MattermostError:
            return  # logged by the client; nobody to tell without the author
        tell_agent(
            self.store,
            settings,
            agent_user_id=str(post.get("user_id", "")),
            conversation=conversation,
            text=(
                f"Your reply ({len(message['text'])} characters) is longer than the visitor's "
                "side accepts (the host's system answered 413): please send it shorter, "
                "in several replies."
                if too_long
                else f"Your reply has not reached the visitor yet: the host's system does "
                f"not take it ({error}). The bridge keeps trying every hour."
            ),
            reason=TOO_LONG if too_long else CALLBACK_FAILING,
            message_id=message["id"],
            session=self.session,
        )


def _host_of(url: str) -> str:
    """Only ``scheme://host:port`` goes to the log: user info, path and query
    of hook URLs often carry a secret."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}"
