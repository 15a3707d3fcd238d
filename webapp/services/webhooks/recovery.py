"""Sending again: a redelivery asked for by hand, and the watchdog's part (deliveries whose job
was lost get a fresh one)."""

from __future__ import annotations

import logging
from datetime import timedelta

import redis
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from sqlalchemy import select

from webapp.extensions import db
from webapp.models import AttemptTrigger, Delivery, DeliveryStatus
from webapp.models.base import utcnow
from webapp.queues import ALIVE, get_redis, popped_and_abandoned
from webapp.services.webhooks import bulkhead, relay
from webapp.services.webhooks.status import set_status

log = logging.getLogger(__name__)

# A pending delivery whose job is missing this long after it was due is re-enqueued.
WATCHDOG_GRACE = timedelta(seconds=30)


def redeliver(delivery: Delivery) -> None:
    """Send a delivery again now, once (trigger manual), with the same webhook-id and body.

    A delivery waiting for a retry keeps its schedule if this attempt fails too; a finished one
    gets exactly this one attempt. The caller commits; the job is enqueued after the commit.
    """
    if DeliveryStatus(delivery.status).finished:
        delivery.auto_retry = False
        set_status(delivery, DeliveryStatus.PENDING)
        delivery.last_error = None
    relay.enqueue_after_commit(delivery, trigger=AttemptTrigger.MANUAL)


def pending_deliveries_without_job(grace: timedelta = WATCHDOG_GRACE) -> list[Delivery]:
    """Pending or retrying deliveries overdue by `grace` whose job is not alive in Redis.

    Their job was never enqueued (Redis was down at commit), was lost with Redis's data, or was
    taken off its queue by a worker that died before starting it.
    Raises redis.RedisError when Redis is unreachable.
    """
    overdue = db.session.scalars(
        select(Delivery).where(
            Delivery.status.in_([DeliveryStatus.PENDING, DeliveryStatus.RETRYING]),
            Delivery.next_attempt_at < utcnow() - grace,
        )
    ).all()
    connection = get_redis()
    waiting = bulkhead.in_line([d.job_id for d in overdue if d.job_id])
    lost = []
    for delivery in overdue:
        if delivery.job_id in waiting:
            continue  # deferred behind a busy target: alive, its turn comes
        try:
            job = Job.fetch(delivery.job_id, connection=connection) if delivery.job_id else None
        except NoSuchJobError:
            job = None
        status = job.get_status(refresh=False) if job is not None else None
        if status not in ALIVE or (status == JobStatus.QUEUED and popped_and_abandoned(job)):
            lost.append(delivery)
    return lost


def requeue_lost(grace: timedelta = WATCHDOG_GRACE) -> int:
    """Enqueue a fresh job for every delivery whose job vanished; returns how many (0 if Redis
    is down: the rows wait for the next pass)."""
    try:
        woken = bulkhead.wake_stalled()
        if woken:
            relay.enqueue_jobs([(d, j, None) for d, j in woken])
        lost = pending_deliveries_without_job(grace)
    except redis.RedisError:
        log.warning("watchdog: Redis unreachable; webhook deliveries wait for the next pass")
        return 0
    for delivery in lost:
        relay.enqueue_after_commit(delivery, trigger=AttemptTrigger(delivery.next_trigger))
    db.session.commit()
    if lost:
        log.warning("watchdog: re-enqueued %d webhook deliveries", len(lost))
    return len(lost)
