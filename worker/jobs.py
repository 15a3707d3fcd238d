"""RQ entry points. Each takes ids, never objects, and runs inside the worker's app context."""

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


def once_per_interval(setting: str):
    """For a cron job every worker's scheduler enqueues (RQ's cron does not coordinate them):
    the first worker to start it in an interval (the `setting` in seconds) runs it; the others
    return None at once. A Redis lock held for half the interval decides."""

    def decorate(func):
        @functools.wraps(func)
        def wrapper():
            hold = max(1, current_app.config[setting] // 2)
            if not get_redis().set(f"scoreline:cron:{func.__name__}", "1", nx=True, ex=hold):
                log.info("%s skipped: another worker ran it within %s s", func.__name__, hold)
                return None
            return func()

        return wrapper

    return decorate


def _current_job_id() -> str | None:
    """The id of the job this worker runs now (None when called outside a job)."""
    job = get_current_job()
    return job.id if job else None


@in_session
def run_stage(stage_run_id: int) -> None:
    """Run one pipeline stage (gpt, rag or fusion) of an operation."""
    pipeline.run_stage(stage_run_id, job_id=_current_job_id())


def noop() -> None:
    """Does nothing; the benchmarks' baseline job."""


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


@in_session
@once_per_interval("PRUNE_INTERVAL")
def scheduled_prune() -> dict | None:
    """The periodic prune (SPEC 7): history over its cap or age, expired idempotency keys."""
    return asdict(retention.prune())


@in_session
@once_per_interval("WATCHDOG_INTERVAL")
def scheduled_reconcile() -> str:
    """The periodic watchdog pass: re-enqueue work whose job was lost."""
    report = watchdog.reconcile()
    if report.repairs:
        log.warning("watchdog: %s", report)
    return str(report)
