"""The integration log page over 1,000,000 rows: server time of GET /log.

A fresh database (the bridge's own migrations) gets 1,000,000 realistic log
rows (250,000 with ``--quick``) in one transaction (``executemany``; the log
indexes are dropped first and rebuilt from the migration's SQL, which is
faster than a million random index inserts): both environments, the three
directions, mostly ``ok``; ``env=production&outcome=error`` matches about 1%.
Then, in this process, the bridge app (Flask test client, logged in) serves
the first page, a filtered page and a deep page (``?before=`` an id near the
oldest); each is timed with ``time.perf_counter()`` around the request (store
query + template render + the test client's own small overhead), 20 runs
after 2 warm-ups, median reported. The store query alone is timed as well.

Afterwards the same database is served by gunicorn (2 workers) to read the
pages over HTTP a few times, so the worker memory figure includes a worker
that has rendered log pages of a 1M-row table.
"""

from __future__ import annotations

import random
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

from bridge import create_app
from bridge.store import LOG_PAGE_SIZE, Store

from .common import BenchBridge, Deadline, Figure, SectionResult, median, summary_ms, worker_rss

ROWS = 1_000_000
QUICK_ROWS = 250_000  # --quick: a smoke run, labelled as such in the table
RUNS = 20
WARMUP = 2
BUDGET_MS = 50.0
ADMIN_PASSWORD = "bench-admin-password"
COLUMNS = (
    "ts",
    "env",
    "direction",
    "action",
    "target",
    "outcome",
    "http_status",
    "duration_ms",
    "error",
    "conversation_id",
    "message_id",
    "post_id",
)
ROW_MARK = re.compile(r'<tr class="outcome-')

ERRORS = {
    "outbound": [
        (
            403,
            (
                "403: @bridge-bot is not a member of channel Support — add it to the channel "
                "(/invite @bridge-bot) and try again."
            ),
        ),
        (None, "Unreachable: cannot connect to chat.example.com: connection refused"),
        (500, "500 Internal Server Error from Mattermost (api.post.create_post.app_error)"),
        (429, "429: rate limited by Mattermost, retry after 1 s"),
    ],
    "inbound": [(200, "cannot look the post up: 404 app.post.get.app_error")],
    "callback": [
        (None, "callback to https://host.example.com/hooks/mm failed: timed out"),
        (502, "callback answered 502 Bad Gateway"),
    ],
}
IGNORED = [
    "duplicate delivery: post already stored",
    "post by the bridge's own bot (reply-loop guard)",
    "top-level post, not a reply in a mirrored thread",
    "reply in a thread that is not a mirrored conversation",
]
OUTBOUND_ACTIONS = ["post"] * 8 + ["lookup", "user", "close_notice", "verify"]


def _hex_id(rng: random.Random) -> str:
    return f"{rng.getrandbits(104):026x}"


def rows(count: int, seed: int = 8) -> Any:
    """``count`` log rows, oldest first, spread over the last 30 days."""
    rng = random.Random(seed)
    conversations = [_hex_id(rng) for _ in range(20_000)]
    channels = [_hex_id(rng) for _ in range(4)]
    start = time.time() - 30 * 86400
    step = 30 * 86400 / count
    for i in range(count):
        env = "production" if rng.random() < 0.5 else "test"
        draw = rng.random()
        direction = "outbound" if draw < 0.60 else "inbound" if draw < 0.95 else "callback"
        draw = rng.random()
        outcome = (
            "error"
            if draw < 0.02
            else "rejected"
            if draw < 0.025
            else "ignored"
            if draw < 0.10
            else "ok"
        )
        conversation = rng.choice(conversations)
        post_id, error, duration, status = "", "", None, 200
        if direction == "outbound":
            action = rng.choice(OUTBOUND_ACTIONS)
            target = rng.choice(channels) if action in ("post", "close_notice") else _hex_id(rng)
            duration = round(rng.lognormvariate(3.2, 0.6), 3)
            status = 201 if action in ("post", "close_notice") else 200
            if outcome == "ok" and action in ("post", "close_notice"):
                post_id = _hex_id(rng)
        elif direction == "inbound":
            action, target, post_id = "webhook", channels[0], _hex_id(rng)
        else:
            action, target = "callback", "https://host.example.com/hooks/mm"
            duration = round(rng.lognormvariate(4.0, 0.5), 3)
        if outcome == "error":
            status, error = rng.choice(ERRORS[direction])
        elif outcome == "rejected":
            status, error = 403, "token mismatch"
        elif outcome == "ignored":
            error = rng.choice(IGNORED)
        elif direction == "inbound":
            error = "agent reply stored"
        yield (
            start + i * step,
            env,
            direction,
            action,
            target,
            outcome,
            status,
            duration,
            error,
            conversation,
            rng.randrange(1, 400_000),
            post_id,
        )


def fill(path: Path, count: int) -> dict[str, Any]:
    """A fresh, migrated database with ``count`` log rows; timings and row counts."""
    store = Store(str(path))
    store.migrate()
    store.close()
    started = time.perf_counter()
    conn = sqlite3.connect(str(path), isolation_level=None)
    try:
        # A fixture, not the bridge's way of writing: no journal while filling, the log
        # indexes dropped and rebuilt from the migration's own SQL (one sort each instead
        # of a million random inserts), then back to WAL as the bridge runs it.
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-262144")
        conn.execute("BEGIN")
        indexes = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'log'"
            " AND sql IS NOT NULL"
        ).fetchall()
        for name, _ in indexes:
            conn.execute(f"DROP INDEX {name}")
        conn.executemany(
            f"INSERT INTO log ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
            rows(count),
        )
        for _, sql in indexes:
            conn.execute(sql)
        conn.execute("COMMIT")
        conn.execute("PRAGMA journal_mode=WAL")
        filled = time.perf_counter() - started
        stats = dict(
            conn.execute(
                "SELECT 'rows', COUNT(*) FROM log UNION ALL"
                " SELECT 'production_error', COUNT(*) FROM log"
                " WHERE env = 'production' AND outcome = 'error' UNION ALL"
                " SELECT 'min_id', MIN(id) FROM log"
            ).fetchall()
        )
    finally:
        conn.close()
    return {"fill_s": round(filled, 2), "db_mb": round(path.stat().st_size / 2**20, 1), **stats}


def _query_plan(path: Path, filters: dict[str, str], before: int | None) -> list[str]:
    clauses = [f"{column} = ?" for column in filters]
    params: list[Any] = list(filters.values())
    if before is not None:
        clauses.append("id < ?")
        params.append(before)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        plan = conn.execute(
            f"EXPLAIN QUERY PLAN SELECT * FROM log {where} ORDER BY id DESC LIMIT ?",
            [*params, LOG_PAGE_SIZE],
        ).fetchall()
    finally:
        conn.close()
    return [row[-1] for row in plan]


def run(workdir: Path, *, quick: bool) -> SectionResult:
    result = SectionResult()
    count = QUICK_ROWS if quick else ROWS
    runs = 10 if quick else RUNS
    instance = workdir / "logpage"
    instance.mkdir(parents=True, exist_ok=True)
    db_path = instance / "bridge.db"
    result.raw["fill"] = fill(db_path, count)
    oldest = result.raw["fill"]["min_id"]
    deep_before = oldest + 1000
    cases = [
        ("first page: /log", "/log", {}, None, True),
        (
            "filtered page: ?env=production&outcome=error",
            "/log?env=production&outcome=error",
            {"env": "production", "outcome": "error"},
            None,
            True,
        ),
        (f"deep page: ?before={deep_before}", f"/log?before={deep_before}", {}, deep_before, True),
        (
            "filtered deep page: ?env=production&outcome=error&before=50000",
            "/log?env=production&outcome=error&before=50000",
            {"env": "production", "outcome": "error"},
            50_000,
            False,
        ),
    ]

    app = create_app(
        {
            "DATABASE": str(db_path),
            "SECRET_KEY": "bench-secret-key",
            "ADMIN_PASSWORD": ADMIN_PASSWORD,
            "WTF_CSRF_ENABLED": False,
        }
    )
    client = app.test_client()
    login = client.post("/login", data={"name": "Bench", "password": ADMIN_PASSWORD})
    if login.status_code != 302:
        raise RuntimeError(f"cannot log in to the log page: {login.status_code}")

    section = "Log page"
    f = result.figures
    f.append(
        Figure(
            section,
            "rows in the log table",
            result.raw["fill"]["rows"],
            "",
            note=f"filled in {result.raw['fill']['fill_s']} s, "
            f"{result.raw['fill']['db_mb']} MB; production+error rows: "
            f"{result.raw['fill']['production_error']}",
        )
    )
    result.raw["cases"] = {}
    for name, url, filters, before, budgeted in cases:
        timings, query_timings, shown, statuses = [], [], set(), set()
        for i in range(WARMUP + runs):
            started = time.perf_counter()
            response = client.get(url)
            elapsed = time.perf_counter() - started
            statuses.add(response.status_code)
            shown.add(len(ROW_MARK.findall(response.get_data(as_text=True))))
            # The store query alone, on a fresh connection as each request opens one.
            started = time.perf_counter()
            store = Store(str(db_path))
            store.log_page(**filters, before_id=before)
            store.close()
            query_elapsed = time.perf_counter() - started
            if i >= WARMUP:
                timings.append(elapsed)
                query_timings.append(query_elapsed)
        stats = summary_ms(timings)
        result.raw["cases"][name] = {
            "url": url,
            "request": stats,
            "store_query": summary_ms(query_timings),
            "statuses": sorted(statuses),
            "rows_shown": sorted(shown),
            "query_plan": _query_plan(db_path, filters, before),
        }
        ok = statuses == {200} and stats["median_ms"] < BUDGET_MS
        query_ms = median([t * 1000 for t in query_timings])
        f.append(
            Figure(
                section,
                name,
                stats["median_ms"],
                "ms",
                f"< {BUDGET_MS:.0f} ms" if budgeted else "",
                ok if budgeted else None,
                note=f"median of {runs}; store query alone {query_ms:.2f} ms; "
                f"{max(shown)} rows shown",
            )
        )

    # The same database under gunicorn: pages over HTTP, then the workers' memory.
    bridge = BenchBridge(instance, workers=2)
    deadline = Deadline(30)
    try:
        bridge.start()
        session = bridge.login()
        session.trust_env = False
        http = {}
        for name, url, *_ in cases:
            timings = []
            for i in range(WARMUP + (5 if quick else 10)):
                if deadline.passed:
                    break
                started = time.perf_counter()
                response = session.get(bridge.url + url, timeout=30)
                if i >= WARMUP and response.status_code == 200:
                    timings.append(time.perf_counter() - started)
            http[name] = summary_ms(timings) if timings else None
        result.raw["http_under_gunicorn"] = http
        result.memory.append(
            {
                "server": f"log page: bridge (2 workers, {count:,}-row db)",
                "kind": "bridge",
                "rss_mb": worker_rss(bridge.pid),
            }
        )
        session.close()
    finally:
        bridge.stop()
    first = http.get(cases[0][0])
    if first:
        f.append(
            Figure(
                section,
                "first page over HTTP (gunicorn), median",
                first["median_ms"],
                "ms",
                note="client-side wall time, includes the TCP hop",
            )
        )
    return result
