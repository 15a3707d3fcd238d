"""Benchmark 4: resident size of a web and a worker process after the runs."""

from __future__ import annotations

import time

from bench.report import Figure
from bench.stack import BIN, Stack, free_port

WEB_TARGET_MB = 120
WORKER_TARGET_MB = 150


def run(stack: Stack, app, *, smoke: bool) -> list[Figure]:
    from webapp.queues import redis_url

    roles = {p.role for p in stack.processes} | set(stack.peak_rss)
    if "web" not in roles:
        stack.gunicorn("web", "wsgi:app", free_port())
    if "bare" not in roles:
        stack.gunicorn("bare", "bench.bare:app", free_port())
    if "worker" not in roles:
        stack.worker("bench-memory-worker")
    # The baseline worker: RQ's own `rq worker`, idle on a queue nobody uses.
    stack.spawn("rq-bare", [str(BIN / "rq"), "worker", "--url", redis_url(app), "bench-idle"],
                "rq-bare")  # fmt: skip
    time.sleep(3)
    stack.sample_rss()
    rss = stack.peak_rss
    return [
        Figure("memory", "web process RSS MB (a gunicorn worker)", rss["web"], rss["bare"],
               "max", WEB_TARGET_MB, "a gunicorn worker of the bare Flask app"),
        Figure("memory", "worker process RSS MB", rss["worker"], rss["rq-bare"],
               "max", WORKER_TARGET_MB, "an idle `rq worker`"),
    ]  # fmt: skip
