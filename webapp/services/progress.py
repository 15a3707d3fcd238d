"""Stage transitions and the status view: every status change of the pipeline goes through here."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from sqlalchemy import func, select, update
from sqlalchemy.orm.attributes import set_committed_value

from webapp import metrics
from webapp.extensions import db
from webapp.models import Assessment, Operation, StageRun
from webapp.models.base import isoformat, utcnow
from webapp.scoring.vocabulary import (
    STAGE_LABELS,
    STAGE_WEIGHTS,
    AssessmentStatus,
    EventType,
    OperationStatus,
    Stage,
    StageStatus,
)
from webapp.services import history
from webapp.services.webhooks import dispatch

FINISHED_STAGE = [s for s in StageStatus if s.finished]

# How the RQ-facing job list names each stage status.
JOB_STATUS = {
    StageStatus.PENDING: "deferred",
    StageStatus.QUEUED: "queued",
    StageStatus.IN_PROGRESS: "started",
    StageStatus.COMPLETED: "finished",
    StageStatus.FAILED: "failed",
    StageStatus.SKIPPED: "canceled",
}


def overall_progress(runs: Sequence[StageRun], finished: bool) -> int:
    """Weighted sum of stage percentages; failed and skipped stages count as done.

    It is 100 exactly when the assessment is finished, and at most 99 before that, so a client
    never sees 100 on something still running.
    """
    if finished:
        return 100
    total = 0.0
    for run in runs:
        done = 100 if StageStatus(run.status).finished else run.percentage
        total += STAGE_WEIGHTS[Stage(run.name)] * done / 100
    return min(int(total), 99)


def latest_operation(assessment_id: int) -> Operation | None:
    """The assessment's newest scoring operation (a rescore supersedes a submission)."""
    return db.session.scalar(
        select(Operation)
        .where(Operation.assessment_id == assessment_id)
        .order_by(Operation.id.desc())
        .limit(1)
    )


def start_stage(run: StageRun, *, commit: bool = True) -> bool:
    """Mark a stage in progress, and its operation and assessment as processing (committed
    unless `commit` is False: a gpt batch starts several runs in one transaction).

    The stage is claimed with one conditional UPDATE: False (nothing changed) when it finished
    meanwhile, say by a job the watchdog re-enqueued that committed while this one started.
    """
    now = utcnow()
    claimed = db.session.execute(
        update(StageRun)
        .where(StageRun.id == run.id, StageRun.status.not_in(FINISHED_STAGE))
        .values(
            status=StageStatus.IN_PROGRESS,
            started_at=func.coalesce(StageRun.started_at, now),
            error=None,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:
        if commit:  # a batch's transaction holds other runs' starts: the batch decides
            db.session.rollback()
        return False
    set_committed_value(run, "status", StageStatus.IN_PROGRESS)
    set_committed_value(run, "started_at", run.started_at or now)
    set_committed_value(run, "error", None)
    operation = run.operation
    refresh_operation_progress(operation)
    if _claim_operation(operation):
        history.operation_changed(operation, "Scoring started on a worker.")
    if _claim_processing(operation.assessment_id):
        assessment = db.session.get(Assessment, operation.assessment_id, populate_existing=True)
        history.assessment_changed(assessment, operation, "Scoring started.")
        dispatch.emit(EventType.ASSESSMENT_STARTED, assessment=assessment, operation=operation)
    history.stage_changed(run, f"{STAGE_LABELS[Stage(run.name)]} started.")
    if commit:
        db.session.commit()
    return True


def _claim_operation(operation: Operation) -> bool:
    """Flip the operation pending -> processing in one conditional UPDATE: when gpt and rag
    start together on two workers, exactly one of them records the start."""
    if operation.status != OperationStatus.PENDING:
        return False
    flipped = db.session.execute(
        update(Operation)
        .where(Operation.id == operation.id, Operation.status == OperationStatus.PENDING)
        .values(status=OperationStatus.PROCESSING, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    # The row says processing either way now; the loaded object must not write "pending" back.
    set_committed_value(operation, "status", OperationStatus.PROCESSING)
    return flipped.rowcount == 1


def _claim_processing(assessment_id: int | None) -> bool:
    """Flip submitted -> processing in one conditional UPDATE: of stages starting at the same
    moment on different workers, exactly one records (and announces) the start."""
    if assessment_id is None:
        return False
    flipped = db.session.execute(
        update(Assessment)
        .where(Assessment.id == assessment_id, Assessment.status == AssessmentStatus.SUBMITTED)
        .values(status=AssessmentStatus.PROCESSING, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return flipped.rowcount == 1


def record_progress(run: StageRun, percentage: int) -> None:
    """Store a stage's partial progress; it never goes down and stays below 100 until done."""
    value = max(run.percentage, min(int(percentage), 99))
    if value != run.percentage:
        run.percentage = value
        refresh_operation_progress(run.operation)
        db.session.commit()


def complete_stage(run: StageRun, result: dict | None, *, skipped: bool = False) -> None:
    """Mark a stage completed (or skipped) with its output; the caller commits."""
    run.status = StageStatus.SKIPPED if skipped else StageStatus.COMPLETED
    run.percentage = 100
    run.result = result
    run.error = None
    run.completed_at = utcnow()
    _observe(run)
    refresh_operation_progress(run.operation)
    label = STAGE_LABELS[Stage(run.name)]
    history.stage_changed(run, f"{label} skipped: nothing to do." if skipped else f"{label} done.")


def fail_stage(run: StageRun, error: str) -> None:
    """Mark a stage failed with an error in words; the caller commits."""
    run.status = StageStatus.FAILED
    run.error = error
    run.completed_at = utcnow()
    _observe(run)
    refresh_operation_progress(run.operation)
    history.stage_changed(run, f"{STAGE_LABELS[Stage(run.name)]} failed: {error}")


def _observe(run: StageRun) -> None:
    """The stage's time from its first start to now, by outcome (a stage never started has none)."""
    if run.started_at is None:
        return
    seconds = (run.completed_at - run.started_at).total_seconds()
    metrics.stage_finished(str(run.name), str(run.status), seconds)


def refresh_operation_progress(operation: Operation) -> None:
    """Keep the operation's progress equal to the weighted stage progress.

    Passing 25, 50 or 75 percent sends `assessment.progress` (each milestone once).
    """
    operation.progress = overall_progress(operation.stage_runs, operation.done)
    dispatch.progress_changed(operation)


def scoring_operation(assessment: Assessment) -> Operation | None:
    """The operation an assessment's status shows: its latest, or none for a draft."""
    if assessment.status == AssessmentStatus.DRAFT:
        return None
    return latest_operation(assessment.id)


def status_view(assessment: Assessment, operation: Operation | None = None) -> dict:
    """The body of `GET /assessments/{id}/status`: two queries, no N+1. `operation`, when the
    caller has it already, is `scoring_operation(assessment)`."""
    finished = assessment.is_finished
    operation = operation or scoring_operation(assessment)
    runs = list(operation.stage_runs) if operation else []
    by_name = {run.name: run for run in runs}
    stages = []
    for stage in Stage:
        run = by_name.get(stage)
        if run is None:
            stages.append(
                {"name": stage.value, "status": StageStatus.PENDING.value, "percentage": 0,
                 "started_at": None, "completed_at": None, "error": None}
            )  # fmt: skip
            continue
        stages.append(
            {
                "name": stage.value,
                "status": run.status,
                "percentage": 100 if StageStatus(run.status).finished else run.percentage,
                "started_at": isoformat(run.started_at),
                "completed_at": isoformat(run.completed_at),
                "error": run.error,
            }
        )
    stamps = [assessment.updated_at] + [r.updated_at for r in runs]
    if operation:
        stamps.append(operation.updated_at)
    body = {
        "assessment_id": assessment.id,
        "status": assessment.status,
        "overall_progress": overall_progress(runs, finished),
        "stages": stages,
        "jobs": [
            {
                "job_type": run.name,
                "status": JOB_STATUS[StageStatus(run.status)],
                "created_at": isoformat(run.enqueued_at),
                "completed_at": isoformat(run.completed_at),
            }
            for run in runs
            if run.job_id
        ],
        "operation_id": operation.id if operation else None,
        "degraded": assessment.degraded,
        "updated_at": isoformat(max(s for s in stamps if s is not None)),
    }
    # An integration's student is named by the integration's own id for them.
    if assessment.user.external_id is not None:
        body["external_id"] = assessment.user.external_id
    return body


def etag_for(body: dict) -> str:
    """A strong validator for a JSON body: the hash of its canonical form."""
    digest = hashlib.sha1(json.dumps(body, sort_keys=True).encode(), usedforsecurity=False)
    return digest.hexdigest()[:20]
