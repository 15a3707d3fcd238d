"""The event dispatcher: what each webhook event says, sent where the change is decided.

The code that makes a change calls `emit` in the transaction of that change (never as a side
effect of something else, such as writing history):

- `assessment.submitted`: a submission created the scoring operation (submission).
- `assessment.started`: the assessment moved to processing: the first stage started on a
  worker (progress), or an admin asked for a rescore (rescore).
- `assessment.progress`: the scoring operation passed 25, 50 or 75 percent (`progress_changed`).
- `assessment.completed` / `.failed`, `operation.completed` / `.failed`: the operation ended
  (pipeline; generation for question generation, which sends only `operation.*`).

A rescore sends no second `assessment.submitted`: `assessment.started`, the milestones and
`assessment.completed` (or `.failed`) of the new operation, whose `operation_id` differs from
the first scoring's, with the new result.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm.attributes import set_committed_value

from webapp.extensions import db
from webapp.models import Assessment, Operation, WebhookEvent
from webapp.scoring.vocabulary import (
    PROGRESS_MILESTONES,
    AssessmentStatus,
    EventType,
    OperationStatus,
    OperationType,
)
from webapp.services.webhooks import events

_OPERATION_EVENTS = (EventType.OPERATION_COMPLETED, EventType.OPERATION_FAILED)


def emit(
    event_type: EventType,
    *,
    assessment: Assessment | None = None,
    operation: Operation | None = None,
    **extra,
) -> WebhookEvent | None:
    """Write `event_type` about this assessment and operation to the current transaction (its
    deliveries are enqueued after the commit); None when no endpoint or callback wants it.

    Every event's `data` carries `assessment_id`, `operation_id`, `status` and
    `overall_progress` (and `sequence`, per assessment); a completion adds the result summary,
    a failure the error; `extra` adds fields (`milestone`).
    """
    if event_type in _OPERATION_EVENTS:
        data = _operation_data(operation)
    else:
        data = _assessment_data(assessment, operation)
    scoring = operation is not None and operation.operation_type == OperationType.ASSESSMENT_SCORING
    if event_type in (EventType.ASSESSMENT_COMPLETED, EventType.OPERATION_COMPLETED) and scoring:
        data["result"] = result_summary(operation)
    elif event_type in (EventType.ASSESSMENT_FAILED, EventType.OPERATION_FAILED) and operation:
        data["error"] = operation.error_message
    return events.write(
        event_type,
        {**data, **extra},
        assessment_id=data["assessment_id"],
        operation_id=data["operation_id"],
    )


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
        emit(
            EventType.ASSESSMENT_PROGRESS,
            assessment=assessment,
            operation=operation,
            milestone=milestone,
        )


def _assessment_data(assessment: Assessment, operation: Operation | None) -> dict:
    """The fields every assessment event carries (`sequence` is added when it is written)."""
    finished = AssessmentStatus(assessment.status).finished
    data = {
        "assessment_id": assessment.id,
        "operation_id": operation.id if operation is not None else None,
        "status": assessment.status,
        "overall_progress": 100 if finished else (operation.progress if operation else 0),
    }
    if assessment.user.external_id is not None:  # an integration's student
        data["external_id"] = assessment.user.external_id
    return data


def _operation_data(operation: Operation) -> dict:
    """The fields every operation event carries."""
    data = {
        "assessment_id": operation.assessment_id,
        "operation_id": operation.id,
        "operation_type": operation.operation_type,
        "status": operation.status,
        "overall_progress": 100,
    }
    if operation.assessment_id is not None:
        student = db.session.get(Assessment, operation.assessment_id).user
        if student.external_id is not None:  # an integration's student
            data["external_id"] = student.external_id
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
