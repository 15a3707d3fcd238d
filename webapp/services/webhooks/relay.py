"""The outbox relay: delivery jobs go on the `webhooks` queue only after the transaction that
wrote their deliveries commits.

Deliveries due now share a job with the others the same transaction makes due now (an event's
fan-out to every endpoint is one job); a delayed one (a retry) gets a job of its own on RQ's
scheduler. If Redis is down at commit, the rows stay pending and the watchdog enqueues them
later (recovery.requeue_lost). A job whose id is no longer its delivery's does nothing.
"""

from __future__ import annotations

import logging
import secrets
from datetime import datetime, timedelta

import redis
from flask import current_app
from rq.job import Job
from sqlalchemy import event
from sqlalchemy.orm import Session

from webapp import correlation
from webapp.extensions import db
from webapp.models import AttemptTrigger, Delivery
from webapp.models.base import utcnow
from webapp.queues import DELIVER_ALL_JOB, DELIVER_JOB, WEBHOOKS_QUEUE, get_queue, get_redis

log = logging.getLogger(__name__)

# Deliveries one transaction makes due now share a job, up to this many (see enqueue_after_commit).
BATCH_MAX = 16
# Delivery jobs a running one takes along from the queue (see take_queued).
TAKE_ALONG = 24
# session.info key: (delivery id, job id, when to run or None for now) to enqueue after commit.
_OUTBOX = "webhooks.outbox"
_BATCH = "webhooks.batch"  # session.info: [job id, deliveries in it] of this transaction's batch


def enqueue_after_commit(
    delivery: Delivery,
    delay: float | None = None,
    trigger: AttemptTrigger = AttemptTrigger.SCHEDULED,
) -> None:
    """Give the delivery a job id and enqueue that job once this transaction commits.

    Deliveries due now share a job with the others this transaction makes due now (up to
    BATCH_MAX): an event's fan-out to every endpoint is one job, read and recorded in one
    transaction each, its requests sent side by side (delivery.attempt_all). With a delay the
    delivery gets a job of its own on RQ's scheduler, at the next whole second at or after the
    delay (RQ schedules in whole seconds; rounding up means a Retry-After is never cut short).
    A job whose id is no longer the delivery's leaves it alone, so an older job still queued
    (or scheduled) for the same delivery is harmless.
    """
    delivery.next_trigger = trigger
    run_at = None
    if delay:
        run_at = utcnow() + timedelta(seconds=delay)
        if run_at.microsecond:
            run_at = run_at.replace(microsecond=0) + timedelta(seconds=1)
        delivery.job_id = new_job_id(delivery)
    else:
        batch = db.session.info.get(_BATCH)
        if batch is None or batch[1] >= BATCH_MAX:
            batch = db.session.info[_BATCH] = [f"deliveries-{secrets.token_hex(6)}", 0]
        batch[1] += 1
        delivery.job_id = batch[0]
    delivery.next_attempt_at = run_at or utcnow()
    db.session.info.setdefault(_OUTBOX, []).append((delivery.id, delivery.job_id, run_at))


def new_job_id(delivery: Delivery) -> str:
    """A job id for the delivery's next job; only the job holding the current one may send."""
    return f"delivery-{delivery.id}-{secrets.token_hex(4)}"


@event.listens_for(Session, "after_commit")
def _relay(session: Session) -> None:
    """Enqueue the jobs of the deliveries this transaction wrote."""
    session.info.pop(_BATCH, None)
    items = session.info.pop(_OUTBOX, None)
    if items:
        enqueue_jobs(items)


@event.listens_for(Session, "after_soft_rollback")
def _discard(session: Session, previous_transaction) -> None:
    """A rolled-back transaction wrote no deliveries, so it enqueues none."""
    if previous_transaction.parent is None:
        session.info.pop(_OUTBOX, None)
        session.info.pop(_BATCH, None)


def enqueue_jobs(items: list[tuple[int, str, datetime | None]]) -> bool:
    """Put delivery jobs on the `webhooks` queue, now or at their time; False if Redis is down.

    Items sharing a job id are one job (`deliver_all`). Never raises: the rows are committed,
    so a failure here only delays them until the watchdog.
    """
    config = current_app.config
    jobs: dict[str, tuple[list[int], datetime | None]] = {}
    for delivery_id, job_id, run_at in items:
        jobs.setdefault(job_id, ([], run_at))[0].append(delivery_id)
    meta = correlation.job_meta()  # the request or job whose change caused these events
    try:
        queue = get_queue(WEBHOOKS_QUEUE)
        for job_id, (ids, run_at) in jobs.items():
            # Each delivery may take the whole timeout (connect + read) a few times over.
            job_timeout = int(config["WEBHOOK_TIMEOUT"] * 3) * len(ids) + 30
            # No RQ result: the delivery log in the database is the record of what happened.
            options = {"job_id": job_id, "job_timeout": job_timeout, "result_ttl": 0, "meta": meta}
            call = (DELIVER_JOB, ids[0]) if len(ids) == 1 else (DELIVER_ALL_JOB, ids)
            if run_at is not None:
                queue.enqueue_at(run_at, *call, **options)
            else:
                queue.enqueue(*call, **options)
    except redis.RedisError as exc:
        log.warning(
            "Redis unreachable (%s); %d webhook deliveries wait for the watchdog", exc, len(items)
        )
        return False
    return True


def take_queued(limit: int = TAKE_ALONG) -> list[tuple[str, list[int]]]:
    """Take up to `limit` delivery jobs off the front of the `webhooks` queue, for the job
    about to send (delivery.attempt_all): (job id, its delivery ids) each.

    The taken jobs are gone from Redis; their deliveries keep those job ids, which the running
    job sends as theirs (or puts back with `enqueue_jobs`). If it dies meanwhile, the watchdog
    finds pending deliveries whose job vanished and enqueues them again. Anything else found on
    the queue goes back to its front. Never raises: with Redis unreachable nothing is taken.
    """
    connection = get_redis()
    queue = get_queue(WEBHOOKS_QUEUE)
    try:
        ids = [i.decode() for i in connection.lpop(queue.key, limit) or []]
        jobs = Job.fetch_many(ids, connection=connection) if ids else []
        taken, other = [], []
        for job_id, job in zip(ids, jobs, strict=True):
            if job is None:
                continue  # deleted meanwhile: nothing to do
            if job.func_name == DELIVER_ALL_JOB:
                taken.append((job_id, list(job.args[0])))
            elif job.func_name == DELIVER_JOB:
                taken.append((job_id, [job.args[0]]))
            else:
                other.append(job_id)
        if other:
            connection.lpush(queue.key, *reversed(other))
        if taken:
            connection.delete(*[Job.key_for(job_id) for job_id, _ in taken])
    except redis.RedisError as exc:
        log.warning("could not take queued delivery jobs along (%s)", exc)
        return []
    return taken
