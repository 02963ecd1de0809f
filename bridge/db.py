"""One :class:`Store` per request (or CLI command), closed on teardown."""

from __future__ import annotations

from flask import Flask, current_app, g

from .buttons import buttons_from_config
from .sender import Sender
from .store import Store
from .store.base import BUSY_TIMEOUT


def get_store() -> Store:
    """The request's store, opened on first use."""
    if "store" not in g:
        g.store = Store(
            current_app.config["DATABASE"],
            shared=True,
            busy_timeout=current_app.config.get("DATABASE_BUSY_TIMEOUT", BUSY_TIMEOUT),
        )
    return g.store


def get_sender() -> Sender:
    """A sender on the request's store; tests may inject a session via config."""
    if "sender" not in g:
        worker = current_app.config["WORKER"]
        g.sender = Sender(
            get_store(),
            session=current_app.config.get("MATTERMOST_SESSION"),
            retry_budget=current_app.config.get("SEND_RETRY_BUDGET", 8.0),
            schedule=worker.schedule,
            reclaim_after=worker.reclaim_after,
            buttons=buttons_from_config(current_app.config),
        )
    return g.sender


def close_store(exc: BaseException | None = None) -> None:
    store = g.pop("store", None)
    g.pop("sender", None)
    if store is not None:
        store.close()


def init_app(app: Flask) -> None:
    app.teardown_appcontext(close_store)
