"""Every RQ entry point: the functions a worker runs, each taking ids, never objects.

The web app enqueues them by dotted name (`webapp.queues.STAGE_JOB` and its neighbours) and
never imports this module; the worker's cron scheduler registers `prune` and `reconcile`. Each
runs inside the worker's app context (pushed once by `python -m worker`) and hands the work to a
service; this module only adapts RQ's calling convention to the services'.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import asdict

from flask import current_app
from rq import get_current_job

from webapp.extensions import db
from webapp.queues import get_redis
from webapp.services import generation, pipeline, retention, watchdog
from webapp.services.webhooks import delivery

log = logging.getLogger(__name__)


def in_session(func):
    """Give each job a clean database session and end it afterwards, whatever happens."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        finally:
            db.session.remove()

    return wrapper


def _current_job_id() -> str | None:
    """The id of the RQ job running now (None when called outside a worker, as tests may)."""
    job = get_current_job()
    return job.id if job else None


@in_session
def run_stage(stage_run_id: int) -> None:
    """Run one pipeline stage (gpt, rag or fusion) of an operation."""
    pipeline.run_stage(stage_run_id, job_id=_current_job_id())


@in_session
def run_generation(operation_id: int) -> None:
    """Write the draft question of a question_generation operation."""
    generation.run_generation(operation_id)


@in_session
def deliver(delivery_id: int) -> None:
    """Make one attempt of a webhook delivery; a failure schedules the next one, never sleeps."""
    delivery.attempt(delivery_id, _current_job_id())


@in_session
def deliver_all(delivery_ids: list[int]) -> None:
    """One attempt of each of these webhook deliveries (one transaction's fan-out), side by side."""
    delivery.attempt_all(delivery_ids, _current_job_id())


def _first_this_interval(name: str, interval: int) -> bool:
    """True for the one worker that takes this cron run: every worker runs a cron scheduler, and a
    Redis lock held for half the interval lets the first of them through."""
    return bool(get_redis().set(f"scoreline:{name}:lock", "1", nx=True, ex=max(1, interval // 2)))


@in_session
def prune() -> dict | None:
    """The periodic prune (SPEC 7), every PRUNE_INTERVAL s; None when another worker took it."""
    if not _first_this_interval("prune", current_app.config["PRUNE_INTERVAL"]):
        log.info("prune skipped: another worker pruned less than half an interval ago")
        return None
    return asdict(retention.prune())


@in_session
def reconcile() -> str | None:
    """The periodic watchdog pass, every WATCHDOG_INTERVAL s; None when another worker took it."""
    if not _first_this_interval("watchdog", current_app.config["WATCHDOG_INTERVAL"]):
        return None
    report = watchdog.reconcile()
    if report.repairs or report.ready:
        log.warning("watchdog: %s", report)
    return str(report)


def noop() -> None:
    """Does nothing; the benchmarks' baseline job."""
