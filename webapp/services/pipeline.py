"""The scoring pipeline: stage runs, enqueueing them on RQ, and running each stage."""

from __future__ import annotations

import logging
import secrets
import time

import redis
from rq import Queue
from rq.job import Dependency
from sqlalchemy import select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import selectinload
from sqlalchemy.orm.attributes import set_committed_value

from webapp import correlation
from webapp.extensions import db
from webapp.models import Assessment, Operation, Score, StageRun, User
from webapp.models.base import utcnow
from webapp.queues import SCORING_QUEUE, STAGE_JOB, get_redis
from webapp.scoring import fusion, gpt, rag
from webapp.scoring.base import StageError
from webapp.scoring.rule_score import RuleScore, missing_question_ids, rule_score
from webapp.scoring.vocabulary import (
    STAGE_LABELS,
    WORKER_STAGES,
    AssessmentStatus,
    EventType,
    OperationStatus,
    OperationType,
    QuestionType,
    Stage,
    StageStatus,
)
from webapp.services import history, progress
from webapp.services.assessments import question_inputs
from webapp.services.llm import batch as llm_batch
from webapp.services.scores import replace_stage_scores
from webapp.services.webhooks import dispatch

log = logging.getLogger(__name__)

# Upper bounds for one run of each stage; RQ kills a job that overruns (and fusion still runs).
JOB_TIMEOUTS = {Stage.GPT: 900, Stage.RAG: 120, Stage.FUSION: 120}
# Partial progress is written (one commit each) at most this often per stage: a slow stage (an
# essay on the OpenAI API) still moves the bar, a fast one (offline) writes only start and end.
PROGRESS_EVERY = 0.5


def add_stage_runs(operation: Operation, *, rule_result: dict) -> None:
    """Create the operation's four stage runs: rule_score done inline, the rest queued."""
    now = utcnow()
    db.session.add(
        StageRun(
            operation_id=operation.id,
            name=Stage.RULE_SCORE,
            status=StageStatus.COMPLETED,
            percentage=100,
            started_at=now,
            completed_at=now,
            result=rule_result,
        )
    )
    for stage in WORKER_STAGES:
        db.session.add(StageRun(operation_id=operation.id, name=stage, status=StageStatus.QUEUED))
    db.session.flush()
    db.session.refresh(operation, attribute_names=["stage_runs"])
    progress.refresh_operation_progress(operation)
    history.operation_changed(operation, "Scoring operation created.")
    for run in operation.stage_runs:
        label = STAGE_LABELS[Stage(run.name)]
        if run.name == Stage.RULE_SCORE:
            history.stage_changed(
                run, f"{label}: {rule_result['score']:g} of {rule_result['max_score']:g} points."
            )
        else:
            history.stage_changed(run, f"{label} queued.")


def new_job_id(run: StageRun) -> str:
    """A fresh RQ job id for a stage run; only the id stored on the run may run it."""
    return f"stage-{run.id}-{secrets.token_hex(4)}"


def enqueue_pipeline(operation: Operation) -> bool:
    """Enqueue gpt and rag in parallel and fusion after both (even if one fails).

    With an OpenAI key, fusion is not enqueued here: gpt runs are scored in batches that end
    long after the gpt job RQ knows of, so whichever of rag and the batch finishes last
    enqueues it (start_fusions_if_ready), and no fusion job runs early only to step aside.

    Returns False, leaving the operation pending, when Redis is unreachable: the database is the
    source of truth and the watchdog enqueues it once Redis is back.
    """
    return enqueue_stages(operation, WORKER_STAGES)


def enqueue_stages(
    operation: Operation,
    stages: tuple[Stage, ...] | list[Stage],
    also_wait_for: list[str] | None = None,
) -> bool:
    """Enqueue these worker stages of an operation with fresh job ids (fusion after the others).

    Used for a new pipeline and by the watchdog for work whose job vanished; a job superseded by
    a fresh id does nothing if it ever runs. Fusion also waits for `also_wait_for` (ids of jobs
    still running). Returns False when Redis is unreachable.
    """
    runs = {run.name: run for run in operation.stage_runs}
    wanted = [stage for stage in WORKER_STAGES if stage in stages]
    if Stage.GPT in wanted and llm_batch.enabled():
        # gpt is scored in a batch: fusion is enqueued when the later of rag and gpt ends.
        wanted = [stage for stage in wanted if stage != Stage.FUSION]
    # Ids are stored before enqueueing, so a worker that picks a job up at once finds its id.
    for stage in wanted:
        runs[stage].job_id = new_job_id(runs[stage])
        runs[stage].enqueued_at = None
    db.session.commit()
    queue = Queue(SCORING_QUEUE, connection=get_redis())
    meta = correlation.job_meta(assessment_id=operation.assessment_id, operation_id=operation.id)
    try:
        # rag first: a few ms of local work, where a gpt batch may hold its worker for minutes.
        parallel = [_enqueue(queue, runs[s], meta) for s in (Stage.RAG, Stage.GPT) if s in wanted]
        if Stage.FUSION in wanted:
            upstream = [*parallel, *(also_wait_for or [])]
            after = Dependency(jobs=upstream, allow_failure=True) if upstream else None
            _enqueue(queue, runs[Stage.FUSION], meta, depends_on=after)
    except redis.RedisError:
        log.warning("Redis unreachable; operation %s waits for the watchdog", operation.id)
        db.session.rollback()
        return False
    now = utcnow()
    for stage in wanted:
        runs[stage].enqueued_at = now
    db.session.commit()
    return True


def _enqueue(
    queue: Queue,
    run: StageRun,
    meta: dict,
    depends_on: Dependency | None = None,
    pipeline=None,
):
    """Put one stage run's job on the queue; `meta` carries the correlation ids to the worker.
    With `pipeline`, the job is enqueued when the caller executes it."""
    return queue.enqueue(
        STAGE_JOB,
        run.id,
        meta=meta,
        job_id=run.job_id,
        job_timeout=JOB_TIMEOUTS[Stage(run.name)],
        depends_on=depends_on,
        description=f"{run.name} for operation {run.operation_id}",
        pipeline=pipeline,
    )


# A stage whose database connection dies is run again from the start (stages are idempotent and
# write their result in one transaction); after this many tries the error is the stage's own.
DB_TRIES = 3


def run_stage(stage_run_id: int, job_id: str | None = None) -> None:
    """Run one worker stage of an operation; safe to run twice (a finished stage is left alone).

    `job_id` is the RQ job running it: a job that is no longer the stage's current job (it was
    re-enqueued since, or its row is gone) does nothing. A lost database connection re-runs the
    stage, so nothing is left half-written.
    """
    for attempt in range(1, DB_TRIES + 1):
        try:
            _run_stage_once(stage_run_id, job_id, last_try=attempt == DB_TRIES)
            return
        except ConnectionLost as exc:
            db.session.rollback()
            log.warning(
                "stage run %s lost its database connection (%s); retrying", stage_run_id, exc
            )
            time.sleep(0.2 * attempt)


class ConnectionLost(Exception):
    """The database connection died under a stage; running it again is safe."""


def _is_disconnect(exc: Exception) -> bool:
    """True when SQLAlchemy saw the database connection die (it invalidates the connection)."""
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


# A stage run with its operation and every run of that operation, loaded before the stage's first
# write: no lazy load happens later while the write transaction holds SQLite's lock.
_WITH_SIBLINGS = selectinload(StageRun.operation).selectinload(Operation.stage_runs)


def _run_stage_once(stage_run_id: int, job_id: str | None, *, last_try: bool) -> None:
    """One try at a stage; raises ConnectionLost (unless `last_try`) when the database went away."""
    try:
        run = db.session.get(StageRun, stage_run_id, options=[_WITH_SIBLINGS])
    except DBAPIError as exc:
        if _is_disconnect(exc) and not last_try:
            raise ConnectionLost(str(exc.orig)) from exc
        raise
    if run is None:
        log.warning("stage run %s no longer exists; nothing to do", stage_run_id)
        return
    if run.name == Stage.GPT and llm_batch.enabled():
        # Gathered with other runs' essays (or handed to the job that gathers them).
        db.session.commit()
        try:
            llm_batch.run_gpt_job(run.id, job_id, on_finished=start_fusions_if_ready)
        except DBAPIError as exc:  # the batch's writes are all-or-nothing: it can start again
            if _is_disconnect(exc) and not last_try:
                raise ConnectionLost(str(exc.orig)) from exc
            raise
        return
    if job_id is not None and run.job_id != job_id:
        log.warning("job %s is stale for stage run %s; skipping", job_id, run.id)
        return
    if StageStatus(run.status).finished:
        log.info("stage run %s already %s; not running it again", run.id, run.status)
        return
    if run.name == Stage.FUSION and llm_batch.enabled() and llm_batch.waits_for_gpt(run.operation):
        log.info("fusion of operation %s waits for its gpt batch", run.operation_id)
        return
    try:
        if not progress.start_stage(run):
            log.info("stage run %s finished meanwhile; not running it again", stage_run_id)
            return
        assessment = db.session.get(Assessment, run.operation.assessment_id)
        if run.name == Stage.GPT:
            _run_gpt(run, assessment, job_id)
        elif run.name == Stage.RAG:
            _run_rag(run, assessment, job_id)
        elif run.name == Stage.FUSION:
            _run_fusion(run, assessment, job_id)
        else:
            raise StageError(f"{run.name} is not a worker stage")
    except Superseded:
        db.session.rollback()
        log.warning("stage run %s was re-enqueued while job %s ran; result dropped", run.id, job_id)
    except StageError as exc:
        db.session.rollback()
        _fail(run.id, str(exc))
        raise
    except Exception as exc:
        db.session.rollback()
        if _is_disconnect(exc) and not last_try:
            raise ConnectionLost(str(getattr(exc, "orig", exc))) from exc
        _fail(run.id, f"Unexpected error in the {run.name} stage: {type(exc).__name__}: {exc}")
        raise


def progress_reporter(run: StageRun, every: float = PROGRESS_EVERY):
    """A stage's on_progress callback that stores progress at most once per `every` seconds.

    Progress reported sooner after the stage started (or after the last write) is dropped: the
    next write, or the stage's completion, supersedes it. Polling clients could not have seen a
    step that lasted a few milliseconds, and each write is a commit the other workers wait on.
    """
    last = time.monotonic()

    def report(percentage: int) -> None:
        nonlocal last
        if time.monotonic() - last >= every:
            progress.record_progress(run, percentage)
            last = time.monotonic()

    return report


class Superseded(Exception):
    """The watchdog gave this stage run a new job while this one was running."""


def ensure_current(run: StageRun, job_id: str | None) -> None:
    """Before a stage writes its result: raise Superseded if another job now owns the stage."""
    if job_id is None:
        return
    current = db.session.scalar(select(StageRun.job_id).where(StageRun.id == run.id))
    if current != job_id:
        raise Superseded(run.id)


def give_up(run: StageRun, error: str) -> None:
    """Fail a stage that keeps crashing its worker (the watchdog's last resort)."""
    _fail(run.id, error)


def _fail(stage_run_id: int, error: str) -> None:
    """Record a stage failure; a failed fusion ends the assessment as failed (never stuck)."""
    run = db.session.get(StageRun, stage_run_id, populate_existing=True)
    progress.fail_stage(run, error)
    if run.name == Stage.FUSION:
        try:
            _finish(run.operation, report=None, error=error)
        except Superseded:
            db.session.rollback()  # another fusion job ended the operation: its word stands
            return
    db.session.commit()


def _run_gpt(run: StageRun, assessment: Assessment, job_id: str | None) -> None:
    """Score every essay on the offline rubric, with progress per essay (with an OpenAI key,
    gpt runs are scored in batches instead: webapp.services.llm.batch)."""
    essays = [q for q in question_inputs(assessment) if q.type == QuestionType.ESSAY]
    if not essays:
        progress.complete_stage(run, {"essays": [], "scorer": None}, skipped=True)
        db.session.commit()
        return
    scorer = gpt.OfflineScorer()
    results = gpt.score_essays(essays, scorer, progress_reporter(run))
    ensure_current(run, job_id)
    replace_stage_scores(run.operation_id, Stage.GPT, results)
    progress.complete_stage(run, {"essays": results, "scorer": scorer.name})
    db.session.commit()


def _run_rag(run: StageRun, assessment: Assessment, job_id: str | None) -> None:
    """Recommend learning resources for the student's weak areas."""
    found = rag.recommend(question_inputs(assessment), on_progress=progress_reporter(run))
    ensure_current(run, job_id)
    progress.complete_stage(run, {"recommendations": found})
    db.session.commit()
    if llm_batch.enabled():  # fusion waits for whichever of rag and the gpt batch ends last
        start_fusions_if_ready([run.operation])


def _run_fusion(run: StageRun, assessment: Assessment, job_id: str | None) -> None:
    """Write the final report; a gpt or rag stage that failed (or vanished) makes it degraded."""
    operation = run.operation
    ensure_current(run, job_id)
    reasons = []
    if assessment.missing_question_ids:
        count = len(assessment.missing_question_ids)
        reasons.append(
            "1 question was not answered."
            if count == 1
            else f"{count} questions were not answered."
        )
    upstream = {r.name: r for r in operation.stage_runs}
    abandoned = False
    for stage in (Stage.GPT, Stage.RAG):
        other = upstream[stage]
        if not StageStatus(other.status).finished:
            # Its job ended without reporting (worker killed, job timeout): say so, don't wait.
            progress.fail_stage(other, "The worker running this stage stopped before finishing.")
            abandoned = True
        if other.status == StageStatus.FAILED:
            reasons.append(f"The {stage.value} stage failed: {other.error}")
    if upstream[Stage.GPT].status == StageStatus.COMPLETED:
        # Essays the offline scorer had to score instead of the model, and why.
        reasons.extend((upstream[Stage.GPT].result or {}).get("fallbacks", []))
    if abandoned:
        db.session.commit()  # recorded even if the report below fails
    questions = question_inputs(assessment)
    essay_ids = [q.id for q in questions if q.type == QuestionType.ESSAY]
    gpt_result = upstream[Stage.GPT].result or {}
    rag_result = upstream[Stage.RAG].result or {}
    report = fusion.build_report(
        assessment_id=assessment.id,
        rule_items=(upstream[Stage.RULE_SCORE].result or {}).get("items", []),
        essays=gpt_result.get("essays", [])
        if upstream[Stage.GPT].status != StageStatus.FAILED
        else [],
        essay_question_ids=essay_ids,
        essay_weights={q.id: q.weight for q in questions if q.type == QuestionType.ESSAY},
        recommendations=rag_result.get("recommendations", [])
        if upstream[Stage.RAG].status != StageStatus.FAILED
        else [],
        degraded_reasons=reasons,
    )
    progress.complete_stage(run, {"total": report["total"], "max_total": report["max_total"]})
    _finish(operation, report=report, error=None)
    db.session.commit()


def start_fusions_if_ready(operations: list[Operation]) -> None:
    """Enqueue fusion of each operation whose gpt and rag are both finished and fusion is not
    (a gathered gpt stage ends after the job fusion depends on in RQ).

    A gpt batch finishes many runs at once: their fusions are enqueued together, with one
    commit before and one after, and one Redis round trip.
    """
    if not operations:
        return
    ids = [operation.id for operation in operations]
    runs: dict[int, dict[str, StageRun]] = {}
    assessment_ids: dict[int, int] = {}
    for run, assessment_id in db.session.execute(
        select(StageRun, Operation.assessment_id)
        .join(Operation, Operation.id == StageRun.operation_id)
        .where(StageRun.operation_id.in_(ids))
        .execution_options(populate_existing=True)
    ):
        runs.setdefault(run.operation_id, {})[run.name] = run
        assessment_ids[run.operation_id] = assessment_id
    ready = [
        by_name[Stage.FUSION]
        for by_name in runs.values()
        if all(StageStatus(by_name[s].status).finished for s in (Stage.GPT, Stage.RAG))
        and not StageStatus(by_name[Stage.FUSION].status).finished
    ]
    if not ready:
        db.session.commit()
        return
    for run in ready:
        run.job_id = new_job_id(run)
        run.enqueued_at = None
    db.session.commit()
    queue = Queue(SCORING_QUEUE, connection=get_redis())
    try:
        with get_redis().pipeline() as pipe:
            for run in ready:
                meta = correlation.job_meta(
                    assessment_id=assessment_ids[run.operation_id], operation_id=run.operation_id
                )
                _enqueue(queue, run, meta, pipeline=pipe)
            pipe.execute()
    except redis.RedisError:
        log.warning("Redis unreachable; %d fusions wait for the watchdog", len(ready))
        return
    now = utcnow()
    for run in ready:
        run.enqueued_at = now
    db.session.commit()


def _finish(operation: Operation, *, report: dict | None, error: str | None) -> None:
    """End the operation and its assessment in the same transaction as the last stage.

    Raises Superseded when another job ended the operation first: two fusion jobs can race (one
    the watchdog re-enqueued while the first still ran), and only one may end it and announce it.
    """
    if not _claim_end(
        operation, OperationStatus.COMPLETED if error is None else OperationStatus.FAILED
    ):
        raise Superseded(operation.id)
    now = utcnow()
    assessment = db.session.get(Assessment, operation.assessment_id)
    if error is None:
        operation.result = report
        operation.error_message = None
        assessment.status = AssessmentStatus.COMPLETED
        assessment.degraded = bool(report and report["degraded"])
    else:
        operation.result = None
        operation.error_message = error
        assessment.status = AssessmentStatus.FAILED
    assessment.completed_at = now
    progress.refresh_operation_progress(operation)
    if error is None:
        summary = (
            f"Scored {report['total']:g} of {report['max_total']:g} ({report['percentage']:g}%)"
        )
        summary += ": a partial report." if report["degraded"] else "."
    else:
        summary = f"Scoring failed: {error}"
    history.operation_changed(operation, summary)
    dispatch.emit(
        EventType.OPERATION_COMPLETED if error is None else EventType.OPERATION_FAILED,
        operation=operation,
    )
    history.assessment_changed(assessment, operation, summary)
    dispatch.emit(
        EventType.ASSESSMENT_COMPLETED if error is None else EventType.ASSESSMENT_FAILED,
        assessment=assessment,
        operation=operation,
    )


def _claim_end(operation: Operation, status: OperationStatus) -> bool:
    """Move an unfinished operation to `status` in one conditional UPDATE; False if it had ended.

    On PostgreSQL a second claimant waits for the first one's commit and then finds it ended.
    """
    ended = db.session.execute(
        update(Operation)
        .where(
            Operation.id == operation.id,
            Operation.status.not_in([OperationStatus.COMPLETED, OperationStatus.FAILED]),
        )
        .values(status=status, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    set_committed_value(operation, "status", status)
    return ended.rowcount == 1


def score_rules(assessment: Assessment) -> RuleScore:
    """Rule-score the answers and flag what is missing; run inline by submit and by rescore."""
    inputs = question_inputs(assessment)
    missing = missing_question_ids(inputs)
    assessment.degraded = bool(missing)
    assessment.missing_question_ids = missing
    return rule_score(inputs)


def create_scoring_operation(
    assessment: Assessment,
    score: RuleScore,
    *,
    requested_by: User,
    trigger: str,
    dedupe_key: str | None = None,
) -> Operation:
    """A new scoring operation with its stage runs and rule-score rows; the caller commits."""
    operation = Operation(
        operation_type=OperationType.ASSESSMENT_SCORING,
        assessment_id=assessment.id,
        user_id=assessment.user_id,
        dedupe_key=dedupe_key,
        params={"trigger": trigger, "requested_by": requested_by.id},
    )
    db.session.add(operation)
    db.session.flush()
    add_stage_runs(operation, rule_result=score.to_dict())
    for item in score.items:
        db.session.add(
            Score(
                operation_id=operation.id,
                question_id=item["question_id"],
                stage=Stage.RULE_SCORE,
                points=item["points"],
                max_points=item["max_points"],
                detail=item,
            )
        )
    return operation
