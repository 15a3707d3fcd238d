"""Recording attempts: each one logged (a row, a log line, metrics), then its delivery settled
as succeeded, retrying (its next attempt scheduled) or failed; a job's attempts in one
transaction."""

from __future__ import annotations

import logging
from typing import NamedTuple

from flask import current_app
from sqlalchemy import bindparam, insert, select
from sqlalchemy.orm import joinedload

from webapp import metrics
from webapp.extensions import db
from webapp.models import Attempt, AttemptTrigger, Delivery, DeliveryStatus
from webapp.models.base import utcnow
from webapp.services import history
from webapp.services.webhooks import failures, relay
from webapp.services.webhooks.sending import Outcome
from webapp.services.webhooks.status import change

log = logging.getLogger(__name__)

# Built once: a job runs it for every batch, and building it costs more than its compilation.
_LOCKED = (
    select(Delivery)
    .where(Delivery.id.in_(bindparam("ids", expanding=True)))
    .options(joinedload(Delivery.endpoint))
    .order_by(Delivery.id)
    .with_for_update(of=Delivery)
    .execution_options(populate_existing=True)
)


class Attempted(NamedTuple):
    """One attempt made: of which delivery, by which job (None: by hand), how it went."""

    delivery_id: int
    job_id: str | None
    trigger: AttemptTrigger
    outcome: Outcome


def record_all(attempts: list[Attempted]) -> None:
    """Log each attempt, then settle its delivery; all in one transaction.

    The attempt rows and the status changes' history events go in with one INSERT each (no
    ids read back): on SQLite an ORM insert that reads ids back is one statement per row.
    """
    if not attempts:
        return
    rows = db.session.scalars(_LOCKED, {"ids": [a.delivery_id for a in attempts]}).all()
    by_id = {delivery.id: delivery for delivery in rows}
    logged, changes = [], []
    for attempted in attempts:
        delivery = by_id.get(attempted.delivery_id)
        if delivery is not None:  # else deleted with its endpoint while the request was out
            logged.append(_settle(delivery, attempted, changes))
    if logged:
        db.session.execute(insert(Attempt), logged)
    history.add_all([columns for columns in changes if columns is not None])
    db.session.commit()


def _settle(delivery: Delivery, attempted: Attempted, changes: list[dict | None]) -> dict:
    """Count the attempt and decide what comes next; returns the attempt's row, and adds the
    history event of a status change (None: unchanged) to `changes`."""
    config = current_app.config
    outcome = attempted.outcome
    delivery.attempt_count += 1
    entry = {
        "delivery_id": delivery.id,
        "number": delivery.attempt_count,
        "trigger": attempted.trigger,
        "started_at": outcome.started_at,
        "duration_ms": outcome.duration_ms,
        "url": outcome.url,
        "request_headers": outcome.request_headers,
        "response_status": outcome.status,
        "response_headers": {k: v[:1000] for k, v in list(outcome.response_headers.items())[:50]},
        "response_body": outcome.body,
        "error": outcome.error,
        "error_detail": outcome.detail,
        "next_attempt_at": None,
    }
    delivery.last_attempt_at = outcome.started_at
    delivery.last_response_status = outcome.status
    delivery.last_error = None if outcome.succeeded else outcome.summary()
    # An admin may have asked for another attempt meanwhile; that one decides what comes next.
    current = attempted.job_id is None or delivery.job_id == attempted.job_id
    kind = "success" if outcome.succeeded else str(outcome.error or "http_error")
    metrics.webhook_attempt(kind, outcome.duration_ms / 1000)
    event = delivery.event
    log.info(
        "webhook %s attempt %d of delivery %d: %s",
        event.type,
        delivery.attempt_count,
        delivery.id,
        outcome.summary(),
        extra={
            "delivery_id": delivery.id,
            "webhook_id": event.webhook_id,
            "event_type": event.type,
            "assessment_id": event.assessment_id,
            "outcome": kind,
            "duration_ms": outcome.duration_ms,
        },
    )
    if outcome.succeeded:
        failures.note_success(delivery)
        if current:
            changes.append(change(delivery, DeliveryStatus.SUCCEEDED))
            metrics.webhook_delivered(event.type, (utcnow() - event.created_at).total_seconds())
        return entry
    gone = failures.note_failure(delivery, outcome, config["WEBHOOK_DISABLE_AFTER"])
    schedule = config["WEBHOOK_RETRY_SCHEDULE"]
    if not current:
        return entry
    if not gone and delivery.auto_retry and delivery.retries_used < len(schedule):
        delay = failures.retry_delay(schedule[delivery.retries_used], outcome.retry_after())
        delivery.retries_used += 1
        relay.enqueue_after_commit(delivery, delay)
        entry["next_attempt_at"] = delivery.next_attempt_at
        changes.append(change(delivery, DeliveryStatus.RETRYING, delivery.last_error))
    else:
        changes.append(change(delivery, DeliveryStatus.FAILED, delivery.last_error))
    return entry
