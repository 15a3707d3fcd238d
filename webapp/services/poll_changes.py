"""Poll answers kept in memory are forgotten the moment what they show changes.

Polls outnumber changes by far: a progress page asks every 2 s, a stage changes a few times in a
run. So each web process keeps the poll answers it built (webapp/near_cache) and forgets one when
its assessment changes: every commit that touches an assessment, one of its operations, stage
runs or history rows names the assessment on the near caches' channel right after the commit
(SQLAlchemy session events, so no code path can forget; the few bulk UPDATEs call `touch`),
whichever process commits, web or worker.
"""

from __future__ import annotations

import logging

import redis
from flask import has_app_context
from sqlalchemy import event, inspect, select
from sqlalchemy.orm import Session

from webapp.models import Assessment, HistoryEvent, Operation, StageRun
from webapp.near_cache import announce

log = logging.getLogger(__name__)

PENDING = "poll_changes_touched"  # session.info: assessment ids changed in this transaction

# Changes this process could not announce (Redis unreachable); retried with the next one.
_unannounced: set[int] = set()


def touch(session: Session, assessment_id: int | None) -> None:
    """Mark an assessment changed in this transaction (for bulk UPDATEs the ORM doesn't see)."""
    if assessment_id is not None:
        session.info.setdefault(PENDING, set()).add(assessment_id)


def changed(assessment_ids) -> None:
    """Announce that these assessments changed: every poll answer kept of them is forgotten."""
    ids = sorted(set(assessment_ids) | _unannounced)
    if not ids or not has_app_context():
        return
    try:
        announce("a", *ids)
    except redis.RedisError:
        # The near caches lost Redis too, and forget everything until they have it back.
        log.warning("poll changes: Redis unreachable; will announce %s later", ids)
        _unannounced.update(ids)
        return
    _unannounced.difference_update(ids)


def _assessment_of(session: Session, obj) -> int | None:
    """The assessment an ORM object belongs to, without loading anything new if possible."""
    if isinstance(obj, Assessment):
        return obj.id
    if isinstance(obj, (Operation, HistoryEvent)):
        return obj.assessment_id
    if isinstance(obj, StageRun):
        operation = inspect(obj).attrs.operation.loaded_value
        if isinstance(operation, Operation):
            return operation.assessment_id
        if obj.operation_id is None:
            return None
        return session.connection().scalar(
            select(Operation.assessment_id).where(Operation.id == obj.operation_id)
        )
    return None


@event.listens_for(Session, "after_flush")
def _collect(session: Session, _flush_context) -> None:
    for obj in (*session.new, *session.dirty, *session.deleted):
        if isinstance(obj, (Assessment, Operation, StageRun, HistoryEvent)):
            touch(session, _assessment_of(session, obj))


@event.listens_for(Session, "after_commit")
def _publish(session: Session) -> None:
    ids = session.info.pop(PENDING, None)
    if ids:
        changed(ids)


@event.listens_for(Session, "after_rollback")
def _forget(session: Session) -> None:
    session.info.pop(PENDING, None)
