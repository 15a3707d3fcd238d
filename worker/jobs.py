"""RQ entry points. Each takes ids, never objects, and runs inside the worker's app context."""

from __future__ import annotations

import functools
import logging

from webapp.extensions import db

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


@in_session
def run_stage(stage_run_id: int) -> None:
    """Run one pipeline stage (gpt, rag or fusion) of an operation."""
    from rq import get_current_job

    from webapp.services.pipeline import run_stage as run

    job = get_current_job()
    run(stage_run_id, job_id=job.id if job else None)


def noop() -> None:
    """Does nothing; the benchmarks' baseline job."""


@in_session
def run_generation(operation_id: int) -> None:
    """Write the draft question of a question_generation operation."""
    from webapp.services.generation import run_generation as run

    run(operation_id)


@in_session
def deliver(delivery_id: int) -> None:
    """Make one attempt of a webhook delivery; a failure schedules the next one, never sleeps."""
    from rq import get_current_job

    from webapp.services.webhooks.delivery import attempt

    job = get_current_job()
    attempt(delivery_id, job.id if job else None)


@in_session
def deliver_all(delivery_ids: list[int]) -> None:
    """One attempt of each of these webhook deliveries (one transaction's fan-out), side by side."""
    from rq import get_current_job

    from webapp.services.webhooks.delivery import attempt_all

    job = get_current_job()
    attempt_all(delivery_ids, job.id if job else None)
