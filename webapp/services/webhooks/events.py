"""Events: a webhook message and its deliveries, written in the transaction of the change that
caused it (the outbox).

Each event is serialised once, and gets one delivery per endpoint that wants its type (a
skipped one for a disabled endpoint, so recover can send it later) and one for the
assessment's callback. `dispatch` decides which events a change sends; `relay` enqueues the
delivery jobs once the transaction commits.
"""

from __future__ import annotations

import json

from sqlalchemy import select, update
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key

from webapp.extensions import db
from webapp.models import (
    Assessment,
    AssessmentCallback,
    Delivery,
    DeliveryStatus,
    WebhookEndpoint,
    WebhookEvent,
)
from webapp.models.base import isoformat, utcnow
from webapp.scoring.vocabulary import EventType
from webapp.services.webhooks.relay import enqueue_after_commit
from webapp.services.webhooks.signing import new_webhook_id

SKIPPED_WHILE_DISABLED = "The endpoint was disabled when this event happened; recover sends it."


def write(
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
