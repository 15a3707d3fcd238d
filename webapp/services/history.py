"""Recording and reading status history; the one place every status change passes through."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from webapp.extensions import db
from webapp.models import Assessment, Entity, HistoryEvent, Operation, StageRun
from webapp.models.base import utcnow
from webapp.services.webhooks import events as webhook_events

# SPEC 7: at most this many events are kept (and shown) per assessment.
PER_ASSESSMENT_CAP = 100


def record(
    entity: Entity,
    status: str,
    *,
    assessment_id: int | None,
    operation_id: int | None = None,
    entity_id: int | None = None,
    progress: int = 0,
    message: str = "",
    metadata: dict | None = None,
) -> HistoryEvent:
    """Add a history event to the current transaction (it commits with the change it records)."""
    event = HistoryEvent(
        entity=entity,
        status=str(status),
        assessment_id=assessment_id,
        operation_id=operation_id,
        entity_id=entity_id,
        progress=progress,
        message=message,
        meta=metadata or {},
        created_at=utcnow(),
    )
    db.session.add(event)
    return event


def assessment_changed(assessment: Assessment, operation: Operation | None, message: str) -> None:
    """Record the assessment's new status, and send its webhook event (same transaction)."""
    record(
        Entity.ASSESSMENT,
        assessment.status,
        assessment_id=assessment.id,
        operation_id=operation.id if operation else None,
        entity_id=assessment.id,
        progress=operation.progress if operation else 0,
        message=message,
    )
    webhook_events.assessment_changed(assessment, operation)


def operation_changed(operation: Operation, message: str) -> None:
    """Record the operation's new status, and send its webhook event (same transaction)."""
    record(
        Entity.OPERATION,
        operation.status,
        assessment_id=operation.assessment_id,
        operation_id=operation.id,
        entity_id=operation.id,
        progress=operation.progress,
        message=message,
        metadata={"operation_type": operation.operation_type},
    )
    webhook_events.operation_changed(operation)


def stage_changed(run: StageRun, message: str) -> None:
    """Record a stage's new status."""
    metadata = {"stage": run.name}
    if run.error:
        metadata["error"] = run.error
    record(
        Entity.STAGE,
        run.status,
        assessment_id=run.operation.assessment_id,
        operation_id=run.operation_id,
        entity_id=run.id,
        progress=run.operation.progress,
        message=message,
        metadata=metadata,
    )


def for_assessment(assessment_id: int, limit: int = PER_ASSESSMENT_CAP) -> list[HistoryEvent]:
    """An assessment's events, newest first."""
    return list(
        db.session.scalars(
            select(HistoryEvent)
            .where(HistoryEvent.assessment_id == assessment_id)
            .order_by(HistoryEvent.id.desc())
            .limit(limit)
        )
    )


def recent(user, hours: int, limit: int = 500) -> list[HistoryEvent]:
    """Events of the last `hours` on the user's assessments (admins: all), newest first."""
    query = (
        select(HistoryEvent)
        .where(HistoryEvent.created_at >= utcnow() - timedelta(hours=hours))
        .order_by(HistoryEvent.id.desc())
        .limit(limit)
    )
    if not user.is_admin:
        query = query.join(Assessment, Assessment.id == HistoryEvent.assessment_id).where(
            Assessment.user_id == user.id
        )
    return list(db.session.scalars(query))
