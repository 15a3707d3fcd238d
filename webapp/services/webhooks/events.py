"""Events: what happened, written as webhook messages in the transaction of the change (outbox).

The pipeline's status changes call the hooks here (through `history`), inside the transaction
that makes the change. Each event is serialised once, and gets one delivery per endpoint that
wants its type (a skipped one for a disabled endpoint, so recover can send it later) and one for
the assessment's callback. The delivery jobs are enqueued only after that transaction commits;
if Redis is down then, the rows stay pending and the watchdog enqueues them later.
"""

from __future__ import annotations

import json
import logging
import secrets
from datetime import datetime, timedelta

import redis
from flask import current_app
from sqlalchemy import event, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key

from webapp import correlation
from webapp.extensions import db
from webapp.models import (
    PROGRESS_MILESTONES,
    Assessment,
    AssessmentCallback,
    AssessmentStatus,
    AttemptTrigger,
    Delivery,
    DeliveryStatus,
    EventType,
    Operation,
    OperationStatus,
    OperationType,
    WebhookEndpoint,
    WebhookEvent,
)
from webapp.models.base import isoformat, utcnow
from webapp.queues import WEBHOOKS_QUEUE, get_queue
from webapp.services.webhooks.signing import new_webhook_id

log = logging.getLogger(__name__)

DELIVER_JOB = "worker.jobs.deliver"
DELIVER_ALL_JOB = "worker.jobs.deliver_all"
# Deliveries one transaction makes due now share a job, up to this many (see enqueue_after_commit).
BATCH_MAX = 16
SKIPPED_WHILE_DISABLED = "The endpoint was disabled when this event happened; recover sends it."
# session.info key: (delivery id, job id, when to run or None for now) to enqueue after commit.
_OUTBOX = "webhooks.outbox"
_BATCH = "webhooks.batch"  # session.info: [job id, deliveries in it] of this transaction's batch

_ASSESSMENT_EVENTS = {
    AssessmentStatus.PROCESSING: EventType.ASSESSMENT_STARTED,
    AssessmentStatus.COMPLETED: EventType.ASSESSMENT_COMPLETED,
    AssessmentStatus.FAILED: EventType.ASSESSMENT_FAILED,
}
_OPERATION_EVENTS = {
    OperationStatus.COMPLETED: EventType.OPERATION_COMPLETED,
    OperationStatus.FAILED: EventType.OPERATION_FAILED,
}


# --- hooks called by history, inside the transaction of the change ----------------------------


def assessment_changed(assessment: Assessment, operation: Operation | None) -> None:
    """assessment.started / .completed / .failed for the assessment's new status."""
    event_type = _ASSESSMENT_EVENTS.get(AssessmentStatus(assessment.status))
    if event_type is None:
        return
    data = _assessment_data(assessment, operation)
    if event_type == EventType.ASSESSMENT_COMPLETED and operation is not None:
        data["result"] = result_summary(operation)
    elif event_type == EventType.ASSESSMENT_FAILED and operation is not None:
        data["error"] = operation.error_message
    emit(event_type, data, assessment_id=assessment.id, operation_id=_id(operation))


def operation_changed(operation: Operation) -> None:
    """assessment.submitted when a scoring operation is created; operation.completed / .failed."""
    status = OperationStatus(operation.status)
    scoring = operation.operation_type == OperationType.ASSESSMENT_SCORING
    if status == OperationStatus.PENDING and scoring and operation.assessment_id:
        assessment = db.session.get(Assessment, operation.assessment_id)
        emit(
            EventType.ASSESSMENT_SUBMITTED,
            _assessment_data(assessment, operation),
            assessment_id=assessment.id,
            operation_id=operation.id,
        )
        return
    event_type = _OPERATION_EVENTS.get(status)
    if event_type is None:
        return
    data = {
        "assessment_id": operation.assessment_id,
        "operation_id": operation.id,
        "operation_type": operation.operation_type,
        "status": operation.status,
        "overall_progress": 100,
    }
    if scoring and operation.assessment_id:
        student = db.session.get(Assessment, operation.assessment_id).user
        if student.external_id is not None:  # an integration's student
            data["external_id"] = student.external_id
    if status == OperationStatus.COMPLETED and scoring:
        data["result"] = result_summary(operation)
    elif status == OperationStatus.FAILED:
        data["error"] = operation.error_message
    emit(event_type, data, assessment_id=operation.assessment_id, operation_id=operation.id)


def progress_changed(operation: Operation) -> None:
    """assessment.progress for each milestone (25, 50, 75) the progress has newly passed.

    Each milestone goes out at most once per operation, even with stages reporting in parallel:
    the announced milestone is claimed under the operation's row lock. A jump past several
    milestones announces each of them, in order.
    """
    if (
        operation.id is None
        or operation.assessment_id is None
        or operation.operation_type != OperationType.ASSESSMENT_SCORING
        or OperationStatus(operation.status).done
    ):
        return
    passed = [m for m in PROGRESS_MILESTONES if operation.progress >= m]
    if not passed or passed[-1] <= (operation.progress_milestone or 0):
        return
    announced = db.session.scalar(
        select(Operation.progress_milestone).where(Operation.id == operation.id).with_for_update()
    )
    new = [m for m in passed if m > (announced or 0)]
    if not new:
        set_committed_value(operation, "progress_milestone", announced)
        return
    db.session.execute(
        update(Operation)
        .where(Operation.id == operation.id)
        .values(progress_milestone=new[-1], updated_at=Operation.updated_at)
        .execution_options(synchronize_session=False)
    )
    set_committed_value(operation, "progress_milestone", new[-1])
    assessment = db.session.get(Assessment, operation.assessment_id)
    for milestone in new:
        data = _assessment_data(assessment, operation)
        data["milestone"] = milestone
        emit(EventType.ASSESSMENT_PROGRESS, data, assessment.id, operation.id)


def _assessment_data(assessment: Assessment, operation: Operation | None) -> dict:
    """The fields every assessment event carries (`sequence` is added by `emit`)."""
    finished = AssessmentStatus(assessment.status).finished
    data = {
        "assessment_id": assessment.id,
        "operation_id": _id(operation),
        "status": assessment.status,
        "overall_progress": 100 if finished else (operation.progress if operation else 0),
    }
    if assessment.user.external_id is not None:  # an integration's student
        data["external_id"] = assessment.user.external_id
    return data


def result_summary(operation: Operation) -> dict | None:
    """The part of the final report an integration acts on; the full report is one GET away."""
    report = operation.result or {}
    if not report:
        return None
    return {
        "total": report.get("total"),
        "max_total": report.get("max_total"),
        "percentage": report.get("percentage"),
        "degraded": report.get("degraded", False),
        "url": f"/api/v1/assessments/{operation.assessment_id}/result",
    }


def _id(row) -> int | None:
    return row.id if row is not None else None


# --- writing events and deliveries --------------------------------------------------------------


def emit(
    event_type: EventType,
    data: dict,
    assessment_id: int | None = None,
    operation_id: int | None = None,
) -> WebhookEvent | None:
    """Write an event and its deliveries to the current transaction; None when nobody listens.

    Every endpoint whose filter matches gets a delivery (skipped while disabled), and so does the
    assessment's callback. The body is serialised here, once.
    """
    endpoints = [e for e in db.session.scalars(select(WebhookEndpoint)) if e.wants(event_type)]
    callback = None
    if assessment_id is not None:
        callback = db.session.scalar(
            select(AssessmentCallback).where(
                AssessmentCallback.assessment_id == assessment_id,
                AssessmentCallback.disabled_at.is_(None),
            )
        )
    if not endpoints and callback is None:
        return None
    sequence = next_sequence(assessment_id) if assessment_id is not None else None
    event = new_event(
        event_type, {**data, "sequence": sequence}, assessment_id, operation_id, sequence
    )
    deliveries = [
        Delivery(
            event_id=event.id,
            endpoint_id=endpoint.id,
            status=DeliveryStatus.PENDING if endpoint.enabled else DeliveryStatus.SKIPPED,
            last_error=None if endpoint.enabled else SKIPPED_WHILE_DISABLED,
        )
        for endpoint in endpoints
    ]
    if callback is not None:
        deliveries.append(Delivery(event_id=event.id, callback_id=callback.id))
    db.session.add_all(deliveries)
    db.session.flush()
    for delivery in deliveries:
        if delivery.status == DeliveryStatus.PENDING:
            enqueue_after_commit(delivery)
    return event


def new_event(
    event_type: EventType,
    data: dict,
    assessment_id: int | None = None,
    operation_id: int | None = None,
    sequence: int | None = None,
) -> WebhookEvent:
    """Serialise `{"type", "timestamp", "data"}` once and add the event (flushed, with an id)."""
    now = utcnow()
    body = json.dumps(
        {"type": str(event_type), "timestamp": isoformat(now), "data": data},
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode("utf-8")
    event = WebhookEvent(
        webhook_id=new_webhook_id(),
        type=event_type,
        assessment_id=assessment_id,
        operation_id=operation_id,
        sequence=sequence,
        body=body,
        created_at=now,
    )
    db.session.add(event)
    db.session.flush()
    return event


def next_sequence(assessment_id: int) -> int:
    """Bump the assessment's event counter under its row lock and return the new value."""
    db.session.execute(
        update(Assessment)
        .where(Assessment.id == assessment_id)
        .values(event_sequence=Assessment.event_sequence + 1, updated_at=Assessment.updated_at)
        .execution_options(synchronize_session=False)
    )
    value = db.session.scalar(
        select(Assessment.event_sequence).where(Assessment.id == assessment_id)
    )
    assessment = db.session.identity_map.get(identity_key(Assessment, assessment_id))
    if assessment is not None:
        set_committed_value(assessment, "event_sequence", value)
    return value


# --- the outbox relay: enqueue after commit ----------------------------------------------------


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
