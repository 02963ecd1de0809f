"""The background worker (``flask --app app worker``): what no request waits for.

One loop, a pass every ``interval`` seconds:

- routes agents' replies kept in the inbound inbox (Mattermost never calls a
  webhook twice, so a reply whose routing failed waits here);
- delivers reply callbacks to the host that are due;
- sends ``failed`` messages again when their next attempt is due (growing
  delays, see :data:`bridge.sender.RETRY_SCHEDULE_SECONDS`), and takes back
  messages a dead web worker left in ``sending``;
- prunes the integration log past its retention, at most once an hour;
- copies the WAL into the database file (a passive checkpoint), so no web
  request does it while its caller waits.

Each pass writes a heartbeat to the ``meta`` table; the dashboard warns when
it is old. Every message is claimed in the store with one atomic UPDATE
before it is sent, so two workers started by mistake never send one twice.
SIGTERM or SIGINT ends the loop after the item in hand.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests

from .buttons import Buttons
from .callbacks import CallbackSender
from .inbound import InboundRouter
from .sender import RECLAIM_AFTER_SECONDS, RETRY_SCHEDULE_SECONDS, Sender
from .store import Store

log = logging.getLogger("bridge.worker")

HEARTBEAT_KEY = "worker_heartbeat"
PRUNED_AT_KEY = "log_pruned_at"
INTERVAL_SECONDS = 1.0
# The dashboard says the worker is not running after this long without a
# heartbeat. A pass normally takes milliseconds, and a beat is written after
# every item too; one item can take one call's timeout twice (a look for
# parts already posted, then the post: 2 x 13.05 s) when Mattermost hangs.
STALE_AFTER_SECONDS = 60.0
LOG_RETENTION_DAYS = 90.0
PRUNE_EVERY_SECONDS = 3600.0
# Messages sent per pass: the loop comes back to its other jobs, the
# heartbeat and a stop request between batches.
BATCH = 50
# The worker has no caller waiting: one quick retry, then the schedule.
SEND_RETRY_BUDGET = 1.0


@dataclass
class WorkerSettings:
    """What the worker reads from the environment (see :func:`settings_from_env`)."""

    interval: float = INTERVAL_SECONDS
    reclaim_after: float = RECLAIM_AFTER_SECONDS
    schedule: tuple[float, ...] = RETRY_SCHEDULE_SECONDS
    log_retention_days: float = LOG_RETENTION_DAYS
    prune_every: float = PRUNE_EVERY_SECONDS
    stale_after: float = STALE_AFTER_SECONDS


ENV_NAMES = {
    "interval": "BRIDGE_WORKER_INTERVAL",
    "reclaim_after": "BRIDGE_RECLAIM_AFTER",
    "schedule": "BRIDGE_RETRY_SCHEDULE",
    "log_retention_days": "BRIDGE_LOG_RETENTION_DAYS",
}


def settings_from_env(environ: Mapping[str, str]) -> WorkerSettings:
    """The worker's settings from ``BRIDGE_*`` variables; a bad value is a clear error.

    ``BRIDGE_LOG_RETENTION_DAYS`` (default 90) is for admins; the others
    (poll interval, reclaim age, retry schedule as comma-separated seconds)
    exist so the tests run in seconds and are best left alone.
    """
    values: dict[str, Any] = {}
    for name, variable in ENV_NAMES.items():
        raw = environ.get(variable, "").strip()
        if not raw:
            continue
        try:
            if name == "schedule":
                value: Any = tuple(float(part) for part in raw.split(","))
                bad = not value or any(delay < 0 for delay in value)
            else:
                value = float(raw)
                bad = value <= 0 if name != "log_retention_days" else value < 0
        except ValueError:
            bad = True
        if bad:
            raise ValueError(
                f"{variable}={raw!r}: expected "
                + ("comma-separated seconds, e.g. 10,30,60" if name == "schedule" else "a number")
                + (" of days (0 or more)" if name == "log_retention_days" else "")
            )
        values[name] = value
    return WorkerSettings(**values)


# -- heartbeat ------------------------------------------------------------------------


def write_heartbeat(store: Store, *, started_at: float, now: float | None = None) -> None:
    """Say the worker is alive: when, which process, since when."""
    store.set_meta(
        HEARTBEAT_KEY,
        json.dumps(
            {
                "at": now or time.time(),
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started_at": started_at,
            }
        ),
    )


def worker_status(
    store: Store, *, stale_after: float = STALE_AFTER_SECONDS, now: float | None = None
) -> dict[str, Any]:
    """What the dashboard shows: last heartbeat, its age, whether it is running."""
    raw = store.get_meta(HEARTBEAT_KEY)
    try:
        beat = json.loads(raw) if raw else None
        seen_at = float(beat["at"]) if beat else None
    except (ValueError, TypeError, KeyError):
        beat, seen_at = None, None
    now = now or time.time()
    age = now - seen_at if seen_at is not None else None
    return {
        "seen_at": seen_at,
        "age": age,
        "running": age is not None and age <= stale_after,
        "stale_after": stale_after,
        "pid": (beat or {}).get("pid"),
        "host": (beat or {}).get("host", ""),
    }


# -- the loop ---------------------------------------------------------------------------


@dataclass
class PassCounts:
    """What one pass did, by job."""

    replies: dict[str, int] = field(default_factory=dict)
    callbacks: dict[str, int] = field(default_factory=dict)
    messages: dict[str, int] = field(
        default_factory=lambda: {"sent": 0, "failed": 0, "busy": 0, "skipped": 0}
    )
    pruned: int | None = None
    errors: list[str] = field(default_factory=list)

    def anything(self) -> bool:
        return bool(
            any(self.replies.values())
            or any(self.callbacks.values())
            or any(self.messages.values())
            or self.pruned
            or self.errors
        )

    def summary(self) -> str:
        parts = []
        if any(self.messages.values()):
            parts.append("messages " + _counts(self.messages))
        if any(self.replies.values()):
            parts.append("kept replies " + _counts(self.replies))
        if any(self.callbacks.values()):
            parts.append("callbacks " + _counts(self.callbacks))
        if self.pruned:
            parts.append(f"pruned {self.pruned} log rows")
        if self.errors:
            parts.append("errors: " + "; ".join(self.errors))
        return ", ".join(parts)


def _counts(counts: dict[str, int]) -> str:
    return " ".join(f"{n} {name}" for name, n in counts.items() if n)


class Worker:
    """The retry loop over one database.

    :param store: a store of its own (not a request's); the worker closes it.
    :param settings: interval, reclaim age, schedule, retention.
    :param session: the requests Session for Mattermost and the host (tests).
    """

    def __init__(
        self,
        store: Store,
        settings: WorkerSettings | None = None,
        *,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.time,
        buttons: Buttons | None = None,
    ):
        self.store = store
        self.settings = settings or WorkerSettings()
        self.session = session
        self.clock = clock
        self.started_at = clock()
        self.stopping = threading.Event()
        self._last_beat = 0.0
        self.sender = Sender(
            store,
            session=session,
            retry_budget=SEND_RETRY_BUDGET,
            schedule=self.settings.schedule,
            reclaim_after=self.settings.reclaim_after,
            buttons=buttons,
        )

    def stop(self, *_: Any) -> None:
        """Ask the loop to end after the item in hand (a signal handler)."""
        self.stopping.set()

    def run(self) -> None:
        """Pass after pass until :meth:`stop`."""
        log.info(
            "worker started (pid %s): a pass every %gs, sending claims taken back after %gs,"
            " log kept %g days",
            os.getpid(),
            self.settings.interval,
            self.settings.reclaim_after,
            self.settings.log_retention_days,
        )
        while not self.stopping.is_set():
            counts = self.run_once()
            if counts.anything():
                log.info("%s", counts.summary())
            self.stopping.wait(self.settings.interval)
        log.info("worker stopped")

    def run_once(self) -> PassCounts:
        """One pass over every job; a failing job is logged and the others go on."""
        counts = PassCounts()
        jobs = (
            ("heartbeat", self._beat),
            ("kept replies", lambda: self._replies(counts)),
            ("callbacks", lambda: self._callbacks(counts)),
            ("messages", lambda: self._messages(counts)),
            ("prune", lambda: self._prune(counts)),
            # Last: the pass's own writes go into the database file too.
            ("checkpoint", self.store.checkpoint),
        )
        for name, job in jobs:
            if self.stopping.is_set():
                break
            try:
                job()
            except sqlite3.OperationalError as exc:
                # A locked or full database: nothing half-done, the next pass tries again.
                self.store.rollback()
                counts.errors.append(f"{name}: database: {exc}")
            except Exception as exc:  # one bad job must not stop the others
                self.store.rollback()
                log.exception("worker job %s failed", name)
                counts.errors.append(f"{name}: {type(exc).__name__}")
        return counts

    # -- the jobs ----------------------------------------------------------------------

    def _beat(self, *, force: bool = True) -> None:
        now = self.clock()
        if force or now - self._last_beat >= self.settings.interval:
            write_heartbeat(self.store, started_at=self.started_at, now=now)
            self._last_beat = now

    def _replies(self, counts: PassCounts) -> None:
        router = InboundRouter(self.store, session=self.session, buttons=self.sender.buttons)
        counts.replies = router.retry_queued(env=None)

    def _callbacks(self, counts: PassCounts) -> None:
        counts.callbacks = CallbackSender(self.store, session=self.session).retry_due()

    def _messages(self, counts: PassCounts) -> None:
        due = self.store.due_message_ids(stale_after=self.settings.reclaim_after, limit=BATCH)
        for message_id in due:
            if self.stopping.is_set():
                break
            message = self.sender.resend(message_id, due_only=True)
            if message is None:
                counts.messages["busy"] += 1  # another worker (or web request) has it
            else:
                status = message["status"]
                counts.messages[status if status in counts.messages else "failed"] += 1
            self._beat(force=False)

    def _prune(self, counts: PassCounts) -> None:
        now = self.clock()
        last = float(self.store.get_meta(PRUNED_AT_KEY) or 0)
        if now - last < self.settings.prune_every:
            return
        counts.pruned = self.store.prune_log(self.settings.log_retention_days)
        self.store.set_meta(PRUNED_AT_KEY, repr(now))


def install_signal_handlers(worker: Worker) -> None:
    """SIGTERM (systemd, honcho) and SIGINT (Ctrl-C) end the loop after the current item.

    A second SIGINT stops at once, for someone at a terminal who will not wait.
    """

    def on_sigint(signum: int, frame: Any) -> None:
        if worker.stopping.is_set():
            raise KeyboardInterrupt
        log.info("stopping after the current item (Ctrl-C again to stop now)")
        worker.stop()

    def on_sigterm(signum: int, frame: Any) -> None:
        log.info("SIGTERM: stopping after the current item")
        worker.stop()

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, on_sigint)
