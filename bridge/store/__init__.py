"""The bridge's SQLite database: schema, migrations and every query.

All SQL of the project lives in this package, one module per thing it holds
(settings, conversations, messages, replies, the inbound inbox, deliveries,
checklist, rate limits, sources, log). :class:`Store` puts them together;
callers get plain dicts back and never see a cursor. One store is opened per request (or CLI command) and
closed afterwards; gunicorn workers each open their own connections.
"""

from __future__ import annotations

from .agents import AGENT_ACTIONS, AgentsMixin
from .base import (
    CONVERSATIONS_PAGE_SIZE,
    DIRECTIONS,
    ENVIRONMENTS,
    LOG_PAGE_SIZE,
    MESSAGES_PAGE_SIZE,
    OUTCOMES,
    STALE_SENDING_SECONDS,
    NotFound,
    StoreBase,
    close_shared_connection,
    connect,
    hash_api_key,
    new_id,
    shared_connection,
)
from .checklist import ChecklistMixin
from .conversations import ConversationsMixin
from .deliveries import DeliveriesMixin
from .files import FilesMixin
from .inbox import INBOX_KEEP_DONE_SECONDS, INBOX_LEASE_SECONDS, InboxMixin
from .log import LogMixin
from .messages import MessagesMixin
from .oauth import OAuthMixin
from .ratelimits import RateLimitsMixin
from .replies import RepliesMixin
from .schema import MIGRATIONS
from .settings import SettingsMixin
from .sources import SourcesMixin

__all__ = [
    "AGENT_ACTIONS",
    "CONVERSATIONS_PAGE_SIZE",
    "DIRECTIONS",
    "ENVIRONMENTS",
    "INBOX_KEEP_DONE_SECONDS",
    "INBOX_LEASE_SECONDS",
    "LOG_PAGE_SIZE",
    "MESSAGES_PAGE_SIZE",
    "MIGRATIONS",
    "OUTCOMES",
    "STALE_SENDING_SECONDS",
    "NotFound",
    "Store",
    "close_shared_connection",
    "connect",
    "hash_api_key",
    "new_id",
    "shared_connection",
]


class Store(
    SettingsMixin,
    OAuthMixin,
    ConversationsMixin,
    AgentsMixin,
    MessagesMixin,
    RepliesMixin,
    InboxMixin,
    DeliveriesMixin,
    ChecklistMixin,
    RateLimitsMixin,
    SourcesMixin,
    FilesMixin,
    LogMixin,
    StoreBase,
):
    """Every read and write the bridge makes.

    :param path: the SQLite file; created when missing.
    :param shared: use this thread's pooled connection (requests, CLI) rather
        than a private one (tests, benchmarks, tools that close it).
    :param busy_timeout: seconds a write waits for another process's lock.
    """
