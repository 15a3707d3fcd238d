"""The watchdog: re-enqueues scoring work whose job vanished, died or was never enqueued.

The database says what must happen; Redis only carries it. So for every unfinished stage the
watchdog asks Redis whether its current job can still finish it, and enqueues a fresh job when
not. Stage jobs are safe to run twice and a superseded job does nothing, so a false alarm costs a
little work, never a double score.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import redis
from flask import current_app
from rq import Worker
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from sqlalchemy import or_, select

from webapp import metrics
from webapp.extensions import db
from webapp.models import HistoryEvent, Operation, StageRun
from webapp.models.base import as_utc, utcnow
from webapp.queues import ALIVE, get_redis, popped_and_abandoned
from webapp.scoring.vocabulary import OperationStatus, OperationType, Stage, StageStatus
from webapp.services import generation, history, pipeline
from webapp.services.webhooks.recovery import requeue_lost

log = logging.getLogger(__name__)

# Work younger than this is left alone: it may be between its commit and its enqueue.
GRACE = timedelta(seconds=10)
# A stage re-enqueued this often is crashing its worker: fail it in words instead of looping.
MAX_REPAIRS = 3
REPAIR_MESSAGE = "Re-enqueued by the watchdog"
GAVE_UP_MESSAGE = f"Gave up after {MAX_REPAIRS} restarts"
NEVER_ENQUEUED = "never enqueued"


@dataclass
class Repair:
    """What one reconcile pass did."""

    operation_id: int
    stages: list[str]
    reason: str


@dataclass
class ReconcileReport:
    """Every repair of one pass, and whether Redis could be reached at all."""

    repairs: list[Repair] = field(default_factory=list)
    redis_down: bool = False
    deliveries: int = 0  # webhook deliveries whose job was lost, enqueued again

    def __str__(self) -> str:
        if self.redis_down:
            return "Redis is unreachable; nothing re-enqueued (will retry)."
        lines = [
            f"operation {r.operation_id}: re-enqueued {', '.join(r.stages) or 'nothing'}"
            f" ({r.reason})"
            for r in self.repairs
        ]
        if self.deliveries:
            lines.append(f"re-enqueued {self.deliveries} webhook deliveries whose job was lost")
        return "\n".join(lines) or "Nothing to repair."


def reconcile(grace: timedelta = GRACE) -> ReconcileReport:
    """Re-enqueue every unfinished scoring stage whose job can no longer finish it."""
    report = ReconcileReport()
    connection = get_redis()
    try:
        live_workers = _live_workers(connection)
    except redis.RedisError:
        report.redis_down = True
        return report
    cutoff = utcnow() - grace
    operations = db.session.scalars(
        select(Operation).where(
            Operation.operation_type == OperationType.ASSESSMENT_SCORING,
            Operation.status.in_([OperationStatus.PENDING, OperationStatus.PROCESSING]),
            Operation.created_at < cutoff,
        )
    ).all()
    for operation in operations:
        try:
            repair = _repair(operation, connection, live_workers, cutoff)
        except redis.RedisError:
            report.redis_down = True
            db.session.rollback()
            break
        if repair:
            report.repairs.append(repair)
    if not report.redis_down:
        report.repairs.extend(_repair_generations())
        report.deliveries = requeue_lost()
    _count(report)
    return report


def _count(report: ReconcileReport) -> None:
    """Add what this pass did to scoreline_watchdog_repairs_total, by kind."""
    for repair in report.repairs:
        if not repair.stages:
            metrics.watchdog_repair("gave_up")
        for stage in repair.stages:
            metrics.watchdog_repair("generation" if stage == "question_generation" else "stage")
    metrics.watchdog_repair("delivery", report.deliveries)


def _repair_generations() -> list[Repair]:
    """Re-enqueue question generations silent for longer than their job could run.

    A generation writes progress as it goes and a job past its timeout is killed by RQ, so a
    pending or processing operation untouched for that long has lost its job. Running one twice
    is safe: a finished operation is left alone.
    """
    stale_before = utcnow() - timedelta(seconds=generation.JOB_TIMEOUT + 60)
    repairs = []
    stale = db.session.scalars(
        select(Operation).where(
            Operation.operation_type == OperationType.QUESTION_GENERATION,
            Operation.status.in_([OperationStatus.PENDING, OperationStatus.PROCESSING]),
            Operation.updated_at < stale_before,
        )
    ).all()
    for operation in stale:
        if operation.repairs >= MAX_REPAIRS:
            generation.give_up(operation, f"{GAVE_UP_MESSAGE}.")
            repairs.append(Repair(operation.id, [], "gave up on a generation that kept stalling"))
            continue
        history.operation_changed(operation, f"{REPAIR_MESSAGE}: no progress for too long.")
        operation.repairs += 1
        operation.updated_at = utcnow()
        db.session.commit()
        if not generation.enqueue_generation(operation):
            break  # Redis went away mid-pass; the next pass tries again
        repairs.append(Repair(operation.id, ["question_generation"], "no progress for too long"))
    return repairs


def _repair(operation: Operation, connection, live_workers: set[str], cutoff) -> Repair | None:
    """Re-enqueue what this operation needs, if anything."""
    unfinished = [
        run
        for run in operation.stage_runs
        if run.name != Stage.RULE_SCORE and not StageStatus(run.status).finished
    ]
    if not unfinished:
        return None
    lost: dict[Stage, str] = {}
    for run in unfinished:
        reason = _why_lost(run, connection, live_workers, cutoff)
        if reason:
            lost[Stage(run.name)] = reason
    upstream_at_work = [
        stage
        for stage in (Stage.GPT, Stage.RAG)
        if stage not in lost and _unfinished(operation, stage)
    ]
    if (
        Stage.FUSION in lost
        and upstream_at_work
        and (
            lost[Stage.FUSION].endswith(f"as {JobStatus.FINISHED} without finishing the stage")
            or lost[Stage.FUSION] == NEVER_ENQUEUED
        )
    ):
        # With an API key, gpt is scored in a batch and fusion is enqueued by the later of rag
        # and the batch (webapp.services.pipeline.start_fusions_if_ready); a fusion job that
        # ran earlier found gpt unfinished and stepped aside. Nothing is lost while they work.
        lost.pop(Stage.FUSION)
    if not lost:
        return None
    for run in unfinished:
        stage = Stage(run.name)
        if stage in lost and run.repairs >= MAX_REPAIRS:
            pipeline.give_up(run, f"{GAVE_UP_MESSAGE}: {lost.pop(stage)}.")
    if not lost:
        # Failing gpt or rag leaves fusion to finish the report; fusion itself ends the operation.
        fusion = operation.stage(Stage.FUSION)
        if fusion is not None and not StageStatus(fusion.status).finished:
            lost[Stage.FUSION] = "its upstream stage was given up"
        else:
            return Repair(operation.id, [], "gave up on a crashing stage")
    stages = set(lost)
    # A fusion waiting on a job that is gone would wait forever: enqueue it again after the rest.
    if any(stage != Stage.FUSION for stage in stages) and _unfinished(operation, Stage.FUSION):
        stages.add(Stage.FUSION)
    ordered = [stage for stage in pipeline.WORKER_STAGES if stage in stages]
    waiting_on = [
        run.job_id
        for run in unfinished
        if Stage(run.name) not in stages and run.name != Stage.FUSION and run.job_id
    ]
    reason = "; ".join(f"{stage.value}: {why}" for stage, why in lost.items())
    log.warning("watchdog: operation %s: re-enqueueing %s (%s)", operation.id, ordered, reason)
    for run in operation.stage_runs:
        if Stage(run.name) in stages:
            why = lost.get(Stage(run.name), "re-queued after the stages it waits for")
            history.stage_changed(run, f"{REPAIR_MESSAGE}: {why}.")
            run.repairs += 1
    if not pipeline.enqueue_stages(operation, ordered, also_wait_for=waiting_on):
        raise redis.ConnectionError("enqueue failed")
    return Repair(operation.id, [s.value for s in ordered], reason)


def _live_workers(connection) -> set[str]:
    """Names of workers that heartbeat: a busy worker does so every WORKER_HEARTBEAT seconds.

    A worker killed with SIGKILL stays registered until its key expires; its stale heartbeat
    gives it away sooner.
    """
    oldest = heartbeat_deadline()
    return {
        w.name
        for w in Worker.all(connection=connection)
        if w.last_heartbeat is not None and as_utc(w.last_heartbeat) >= oldest
    }


def heartbeat_deadline() -> datetime:
    """A busy worker silent since before this is gone: 2 x WORKER_HEARTBEAT + 5 s ago."""
    interval = current_app.config.get("WORKER_HEARTBEAT", 30)
    return utcnow() - timedelta(seconds=2 * interval + 5)


def _unfinished(operation: Operation, stage: Stage) -> bool:
    """True when the operation's run of `stage` has not finished."""
    run = operation.stage(stage)
    return run is not None and not StageStatus(run.status).finished


def _why_lost(run: StageRun, connection, live_workers: set[str], cutoff) -> str | None:
    """Why this stage's job can no longer finish it, or None while it still can."""
    if run.job_id is None or run.enqueued_at is None:
        return NEVER_ENQUEUED if run.updated_at < cutoff else None
    try:
        job = Job.fetch(run.job_id, connection=connection)
    except NoSuchJobError:
        return "its job vanished from Redis"
    status = job.get_status(refresh=False)
    if status not in ALIVE:
        if _finished_now(run):
            return None  # its job finished it after this pass read the run
        return f"its job ended as {status} without finishing the stage"
    waiting = (JobStatus.DEFERRED, JobStatus.READY_TO_ENQUEUE)
    if status in waiting and _upstream_finished_before(run, cutoff):
        return "the stages it waits for finished, but its job was never released"
    if status == JobStatus.QUEUED and run.enqueued_at < cutoff and popped_and_abandoned(job):
        return "its job was taken off the queue by a worker that died before starting it"
    if status == JobStatus.STARTED and job.worker_name and job.worker_name not in live_workers:
        return f"the worker running it ({job.worker_name}) is gone"
    return None


def _finished_now(run: StageRun) -> bool:
    """The run's status read again, outside this pass's transaction (whose snapshot, on SQLite,
    is as old as its first read): True when a job has finished the stage since."""
    with db.engine.connect() as connection:
        status = connection.scalar(select(StageRun.status).where(StageRun.id == run.id))
    return status is not None and StageStatus(status).finished


def _upstream_finished_before(run: StageRun, cutoff: datetime) -> bool:
    """True when `run` is fusion and every stage it waits for finished before `cutoff`.

    A worker killed after its stage committed but before RQ recorded the job as finished leaves
    fusion deferred on a job that never finishes (RQ's own cleanup of it takes many minutes).
    """
    if run.name != Stage.FUSION:
        return False
    upstream = [r for r in run.operation.stage_runs if r.name in (Stage.GPT, Stage.RAG)]
    return all(
        StageStatus(r.status).finished and r.completed_at is not None and r.completed_at < cutoff
        for r in upstream
    )


def recent_repairs(limit: int = 20) -> list[HistoryEvent]:
    """The watchdog's latest re-enqueues and give-ups as history tells them, newest first."""
    return list(
        db.session.scalars(
            select(HistoryEvent)
            .where(
                or_(
                    HistoryEvent.message.startswith(REPAIR_MESSAGE),
                    HistoryEvent.message.startswith(GAVE_UP_MESSAGE),
                )
            )
            .order_by(HistoryEvent.id.desc())
            .limit(limit)
        )
    )
