"""Benchmarks for the budgets of DESIGN.md section 8: ``python -m bench`` (``--quick``).

Measurements, not tests: nothing here fails a build. Each module returns its
figures; :mod:`bench.__main__` prints one table (figure, budget, PASS/MISS)
and writes ``bench/results/latest.json``.

Every server started here (gunicorn masters, the Mattermost stand-in process)
listens on 127.0.0.1 only and is stopped by its PID in a ``finally``.
"""
