"""gunicorn settings for the bridge; gunicorn reads this file by itself.

Used by ``make run``, the Procfile's ``web:`` line, the systemd unit in
``deploy/``, the integration tests (tests/live.py) and the benchmarks, so
they all run the same server. Options given on gunicorn's command line win
over this file (the tests and benchmarks pass their own ``--bind`` and
``--workers``).
"""

import os

# Loopback only: nginx in front of it is the public face (see deploy/).
bind = f"127.0.0.1:{os.environ.get('PORT', '8000')}"

# One process per core of the 2-core Mattermost box: the GIL lets one thread
# run Python at a time, so more processes would only add memory.
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))

# Threads are for waiting, not for CPU. A host send waits on Mattermost, for
# at most the sender's 8 s retry budget plus one call's (3.05 + 10) s timeout,
# about 21 s, and holds one thread meanwhile. A gthread worker keeps
# accepting connections while all its threads are busy (they queue inside
# it, even when the other worker is idle), so each worker needs spare
# threads of its own: with 8, the six slow sends still leave two
# free even when they all land on one worker. A request queues only once
# eight others wait on Mattermost in the same worker.
# Each thread keeps one SQLite connection (page cache at most 2 MB), so 8
# threads add at most 16 MB to a worker, inside the 80 MB budget.
worker_class = "gthread"
threads = int(os.environ.get("WEB_THREADS", "8"))

# With gthread, the main loop tells the arbiter it is alive about once a
# second whatever the threads do, so `timeout` only catches a worker that is
# stuck as a whole; 30 s is also how long Mattermost waits for a webhook
# answer (OutgoingIntegrationRequestsTimeout), after which the call is lost.
timeout = 30
# On restart or stop, requests in flight may finish: the longest send a live
# worker can be in is about 21 s (above). The systemd unit allows 40 s.
graceful_timeout = 30
keepalive = 5

# gunicorn 27 opens a control socket at ~/.gunicorn/gunicorn.ctl by default;
# two instances on one machine share it and the second one's exit deletes
# the first one's. The bridge does not use it.
control_socket_disable = True

# Access log to stdout (journald, honcho); errors to stderr.
accesslog = "-"
# gunicorn's default format, but the path without its query string (%(U)s, not
# the request line %(r)s): other systems' webhooks may carry their secret as
# ?token=, and it must not land in journald.
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s "%(f)s" "%(a)s"'
errorlog = "-"
