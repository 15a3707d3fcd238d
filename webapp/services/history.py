"""Recording and reading status history; the one place every status change passes through.

Writing history has no other effect: the webhook events a change sends are emitted by the code
that makes the change (webapp.services.webhooks.dispatch).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, insert, or_, select, true

from webapp.extensions import db
from webapp.models import Assessment, Delivery, Entity, HistoryEvent, Operation, StageRun, User
from webapp.models.base import utcnow

# SPEC 7: at most this many events are kept (and shown) per assessment.
PER_ASSESSMENT_CAP = 100
LAST_STAMP = "history_last_stamp"  # session.info: the newest timestamp given out in it

# Newest first, and in agreement with the timestamps: two workers' transactions can insert
# their events in the other order than they stamped them, so ids alone may disagree.
NEWEST_FIRST = (HistoryEvent.created_at.desc(), HistoryEvent.id.desc())


def record(entity: Entity, status: str, **fields) -> HistoryEvent:
    """Add a history event to the current transaction (it commits with the change it records);
    `fields` as `entry` takes them."""
    return add(entry(entity, status, **fields))


def entry(
    entity: Entity,
    status: str,
    *,
    assessment_id: int | None,
    operation_id: int | None = None,
    entity_id: int | None = None,
    progress: int = 0,
    message: str = "",
    metadata: dict | None = None,
) -> dict:
    """The columns of a history event about to be written, stamped now."""
    return {
        "entity": entity,
        "status": str(status),
        "assessment_id": assessment_id,
        "operation_id": operation_id,
        "entity_id": entity_id,
        "progress": progress,
        "message": message,
        "meta": metadata or {},
        "created_at": _stamp(),
    }


def add(columns: dict) -> HistoryEvent:
    """Add one event made by `entry` to the current transaction."""
    event = HistoryEvent(**columns)
    db.session.add(event)
    return event


def add_all(entries: list[dict]) -> None:
    """Write events made by `entry` with one INSERT that reads no ids back (on SQLite an ORM
    insert that does is one statement per row): for a job that records many at once."""
    if entries:
        db.session.execute(insert(HistoryEvent), entries)


def _stamp() -> datetime:
    """Now, but never earlier than the last event of this transaction: events written together
    keep their order by (timestamp, id) even if the wall clock steps back."""
    info = db.session.info
    stamp = max(utcnow(), info.get(LAST_STAMP) or utcnow())
    info[LAST_STAMP] = stamp
    return stamp


def assessment_changed(assessment: Assessment, operation: Operation | None, message: str) -> None:
    """Record the assessment's new status (in the transaction of the change)."""
    record(
        Entity.ASSESSMENT,
        assessment.status,
        assessment_id=assessment.id,
        operation_id=operation.id if operation else None,
        entity_id=assessment.id,
        progress=operation.progress if operation else 0,
        message=message,
    )


def operation_changed(operation: Operation, message: str) -> None:
    """Record the operation's new status (in the transaction of the change)."""
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


def for_assessment(
    assessment_id: int, viewer: User | None = None, limit: int = PER_ASSESSMENT_CAP
) -> list[HistoryEvent]:
    """An assessment's events as `viewer` may see them (everything when None), newest first."""
    query = select(HistoryEvent).where(HistoryEvent.assessment_id == assessment_id)
    if viewer is not None:
        query = query.where(visible_to(viewer))
    return list(db.session.scalars(query.order_by(*NEWEST_FIRST).limit(limit)))


def recent(user: User, hours: int, limit: int = 500) -> list[HistoryEvent]:
    """Events of the last `hours` on the user's assessments (admins: all), newest first."""
    query = (
        select(HistoryEvent)
        .where(HistoryEvent.created_at >= utcnow() - timedelta(hours=hours), visible_to(user))
        .order_by(*NEWEST_FIRST)
        .limit(limit)
    )
    if user.is_integration:
        query = (
            query.join(Assessment, Assessment.id == HistoryEvent.assessment_id)
            .join(User, User.id == Assessment.user_id)
            .where(User.integration_id == user.id)
        )
    elif not user.is_admin:
        query = query.join(Assessment, Assessment.id == HistoryEvent.assessment_id).where(
            Assessment.user_id == user.id
        )
    return list(db.session.scalars(query))


def visible_to(user: User) -> ColumnElement[bool]:
    """Which events `user` may read: admins all; a student no delivery to an admin's endpoint.

    A student's story includes deliveries to their own assessment's callback only; an event
    whose delivery is gone (its endpoint deleted) is hidden, since its target can't be told.
    """
    if user.is_admin:
        return true()
    own_callbacks = select(Delivery.id).where(Delivery.callback_id.is_not(None))
    return or_(
        HistoryEvent.entity != Entity.DELIVERY,
        HistoryEvent.entity_id.in_(own_callbacks),
    )
