"""Rescoring: an admin runs the pipeline again on a finished assessment, as a new operation."""

from __future__ import annotations

from sqlalchemy import update

from webapp.errors import AssessmentBusy, AssessmentNotSubmitted
from webapp.extensions import db
from webapp.models import Assessment, Operation, User
from webapp.models.base import utcnow
from webapp.scoring.vocabulary import AssessmentStatus, EventType
from webapp.services import audit, history, pipeline, poll_changes
from webapp.services.audit import Action
from webapp.services.webhooks import dispatch

RESCORABLE = (AssessmentStatus.COMPLETED, AssessmentStatus.FAILED)


def rescore_assessment(assessment: Assessment, user: User) -> Operation:
    """Score a finished assessment again: rule score inline, then the worker stages.

    Raises AssessmentNotSubmitted (409) for a draft and AssessmentBusy (409) while it is still
    being scored. The finished -> processing flip is one conditional UPDATE, so of concurrent
    rescores exactly one wins and the others get AssessmentBusy.
    """
    _check_rescorable(assessment)
    assessment_id = assessment.id
    # End the read transaction so the UPDATE starts a write transaction (see submission).
    db.session.commit()
    flipped = db.session.execute(
        update(Assessment)
        .where(Assessment.id == assessment_id, Assessment.status.in_(RESCORABLE))
        .values(status=AssessmentStatus.PROCESSING, completed_at=None, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if flipped.rowcount != 1:
        db.session.rollback()
        _check_rescorable(db.session.get(Assessment, assessment_id, populate_existing=True))
        raise AssessmentBusy(f"Assessment {assessment_id} changed while rescoring; try again.")
    poll_changes.touch(db.session(), assessment_id)
    assessment = db.session.get(Assessment, assessment_id, populate_existing=True)
    score = pipeline.score_rules(assessment)
    operation = pipeline.create_scoring_operation(
        assessment, score, requested_by=user, trigger="rescore"
    )
    history.assessment_changed(
        assessment, operation, f"Rescore requested by {user.email}; scoring again."
    )
    # Scoring again is announced as a start, never as a second submission (webhooks.dispatch).
    dispatch.emit(EventType.ASSESSMENT_STARTED, assessment=assessment, operation=operation)
    db.session.commit()
    pipeline.enqueue_pipeline(operation)
    audit.record(
        Action.ASSESSMENT_RESCORED,
        actor=user,
        entity_type="assessment",
        entity_id=assessment_id,
        details={"operation_id": operation.id},
    )
    return operation


def _check_rescorable(assessment: Assessment) -> None:
    """Raise the 409 that says why this assessment can't be rescored now, if it can't."""
    if assessment.status == AssessmentStatus.DRAFT:
        raise AssessmentNotSubmitted(
            f"Assessment {assessment.id} is a draft; only submitted work can be rescored."
        )
    if assessment.status not in RESCORABLE:
        raise AssessmentBusy(
            f"Assessment {assessment.id} is still being scored; rescore it once it has finished."
        )
