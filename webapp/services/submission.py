"""Submitting an assessment: rule score inline, exactly one scoring operation, work enqueued."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from webapp import correlation, metrics
from webapp.extensions import db
from webapp.models import Assessment, Entity, Operation, User
from webapp.models.base import utcnow
from webapp.scoring.vocabulary import AssessmentStatus, EventType, Stage
from webapp.services import audit, history, pipeline, poll_changes
from webapp.services.assessments import lock_draft, parse_responses, write_answers
from webapp.services.audit import Action
from webapp.services.webhooks import dispatch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SubmitOutcome:
    """What a submit did: the operation, and whether this call created it."""

    assessment: Assessment
    operation: Operation
    created: bool
    snapshot: dict | None = None  # the body as of the commit, before any worker moved on

    def to_dict(self) -> dict:
        """The submit response body (SPEC 3)."""
        if self.snapshot is not None:
            return dict(self.snapshot)
        rule_run = self.operation.stage(Stage.RULE_SCORE)
        body = {
            "assessment_id": self.assessment.id,
            "status": self.assessment.status,
            "rule_score": rule_run.result if rule_run else None,
            "degraded": self.assessment.degraded,
            "missing_question_ids": self.assessment.missing_question_ids or [],
            "operation": {"id": self.operation.id, "status": self.operation.status},
        }
        if not self.created:
            body["message"] = "already submitted"
        return body


def submission_key(assessment_id: int) -> str:
    """The dedupe key that makes a second scoring operation for one submission impossible."""
    return f"assessment:{assessment_id}:submission"


def submit_assessment(
    assessment: Assessment, user: User, responses: object = None
) -> SubmitOutcome:
    """Lock the assessment, score the rule-scored questions, and start the pipeline.

    Safe under concurrency: the first to take the draft's row lock (`lock_draft`, one conditional
    UPDATE) stores its answers and flips it to submitted in that transaction; the unique dedupe
    key on the operation backs that up. Everyone else gets the winner's operation, and their
    answers (validated all the same) are not stored.
    """
    # Validated first, stored only by the submit that wins: a 422 for garbage either way.
    answers = parse_responses(assessment, responses) if responses is not None else {}
    assessment_id = assessment.id
    if not lock_draft(assessment_id, status=AssessmentStatus.SUBMITTED, submitted_at=utcnow()):
        db.session.rollback()
        return _existing_outcome(assessment_id)
    write_answers(assessment_id, answers)
    poll_changes.touch(db.session(), assessment_id)
    try:
        operation = _create_scoring_operation(assessment_id, user)
        correlation.bind(operation_id=operation.id)  # for this request's logs and its jobs
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        return _existing_outcome(assessment_id)
    assessment = db.session.get(Assessment, assessment_id)
    # What was accepted, read before the pipeline starts: an offline pipeline can finish within
    # milliseconds, and the 202 (and its idempotent replays) should not depend on that race.
    snapshot = SubmitOutcome(assessment=assessment, operation=operation, created=True).to_dict()
    metrics.submission("accepted")
    pipeline.enqueue_pipeline(operation)
    audit.record(
        Action.ASSESSMENT_SUBMITTED,
        actor=user,
        entity_type="assessment",
        entity_id=assessment_id,
        details={"operation_id": operation.id, "degraded": assessment.degraded},
    )
    return SubmitOutcome(
        assessment=assessment, operation=operation, created=True, snapshot=snapshot
    )


def _create_scoring_operation(assessment_id: int, user: User) -> Operation:
    """Inside the submit transaction: rule score, degraded flags, the operation and its stages."""
    assessment = db.session.get(Assessment, assessment_id, populate_existing=True)
    score = pipeline.score_rules(assessment)
    missing = assessment.missing_question_ids
    if not missing:
        message = "Submitted with every question answered."
    elif len(missing) == 1:
        message = "Submitted with 1 unanswered question."
    else:
        message = f"Submitted with {len(missing)} unanswered questions."
    history.record(
        Entity.ASSESSMENT,
        AssessmentStatus.SUBMITTED,
        assessment_id=assessment_id,
        entity_id=assessment_id,
        message=message,
        metadata={"missing_question_ids": missing},
    )
    operation = pipeline.create_scoring_operation(
        assessment,
        score,
        requested_by=user,
        trigger="submit",
        dedupe_key=submission_key(assessment_id),
    )
    dispatch.emit(EventType.ASSESSMENT_SUBMITTED, assessment=assessment, operation=operation)
    return operation


def _existing_outcome(assessment_id: int) -> SubmitOutcome:
    """The submission that already happened (200 "already submitted")."""
    assessment = db.session.get(Assessment, assessment_id, populate_existing=True)
    operation = db.session.scalar(
        select(Operation).where(Operation.dedupe_key == submission_key(assessment_id))
    )
    if operation is None:  # submitted before, then rescored and the original pruned: use newest
        operation = db.session.scalar(
            select(Operation)
            .where(Operation.assessment_id == assessment_id)
            .order_by(Operation.id.desc())
        )
    metrics.submission("already_submitted")
    return SubmitOutcome(assessment=assessment, operation=operation, created=False)
