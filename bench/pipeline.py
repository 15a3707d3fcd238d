"""Benchmark 2: the scoring pipeline on two workers, against no-op RQ jobs on the same workers.

Throughput: stage jobs (gpt, rag, fusion) executed per second while two workers drain a backlog
of assessments scored offline, against the same number of no-op jobs on the same workers. Both
backlogs are queued in full while the workers are suspended, and both are timed from their own
timestamps (stage runs', RQ's; first start to last end, jobs started after the resume), so
enqueueing and polling are not part of either.

Latency: submit to completed for one assessment on idle workers, minus the stages' own work
(rule_score + max(gpt, rag) + fusion, from the stage runs): what queueing, job hand-over and
bookkeeping add.
"""

from __future__ import annotations

import statistics
import sys
import time
from datetime import UTC, datetime

from rq import Queue
from rq.job import Job, JobStatus
from rq.suspension import resume, suspend
from sqlalchemy import func, select

from bench import data
from bench.report import Figure
from bench.stack import Stack
from webapp.extensions import db
from webapp.models import Assessment, Operation, StageRun
from webapp.models.base import utcnow
from webapp.queues import SCORING_QUEUE, get_redis
from webapp.scoring.vocabulary import AssessmentStatus, Stage

WORKERS = ("bench-pipeline-1", "bench-pipeline-2")
NOOP_JOB = "worker.jobs.noop"
FINISHED = (AssessmentStatus.COMPLETED, AssessmentStatus.FAILED)
DONE_JOBS = {JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED}
LATENCY_SAMPLES = 5


def run(stack: Stack, app, *, smoke: bool) -> list[Figure]:
    """Start two workers, measure throughput then latency, and leave the workers stopped."""
    assessments = 20 if smoke else 200
    student = data.student()
    for name in WORKERS:
        stack.worker(name)
    try:
        warm = [data.submit(student) for _ in range(2)]  # every import and cache warm, both sides
        _wait_for(lambda: _finished(warm), 60, "the warm-up assessments")
        stage_jobs, stage_seconds, failed = _stage_throughput(student, assessments)
        noop_seconds = _noop_throughput(stage_jobs)
        overheads, work = _latency(student, 2 if smoke else LATENCY_SAMPLES)
    finally:
        resume(get_redis())
        stack.stop(*WORKERS)  # samples the workers' RSS for the memory benchmark first
    stage_rate, noop_rate = stage_jobs / stage_seconds, stage_jobs / noop_seconds
    _say(
        f"{stage_jobs} stage jobs in {stage_seconds:.2f} s ({stage_rate:.1f}/s, {failed} "
        f"assessments failed); {stage_jobs} no-op jobs in {noop_seconds:.2f} s "
        f"({noop_rate:.1f}/s); latency overheads {', '.join(f'{o:.3f}' for o in overheads)} s"
    )
    stack.extra["pipeline"] = {
        "assessments": assessments,
        "stage_jobs": stage_jobs,
        "stage_seconds": round(stage_seconds, 3),
        "noop_seconds": round(noop_seconds, 3),
        "failed_assessments": failed,
        "latency_overheads": [round(o, 4) for o in overheads],
        "latency_work": [round(w, 4) for w in work],
    }
    return [
        Figure("pipeline", "stage jobs/s (2 workers, offline scoring)", stage_rate, noop_rate,
               "ratio", 0.8, "no-op RQ jobs/s, same two workers, same job count"),
        Figure("pipeline", "submit-to-completed overhead, s (idle workers, median)",
               statistics.median(overheads), statistics.median(work), "max", 1.0,
               "the stages' own work, s (rule_score + max(gpt, rag) + fusion, median)"),
    ]  # fmt: skip


def _stage_throughput(student, count: int) -> tuple[int, float, int]:
    """Queue `count` assessments while the workers are suspended, then time the stage jobs."""
    connection = get_redis()
    suspend(connection)
    try:
        ids = [data.submit(student) for _ in range(count)]
    finally:
        resumed_at = utcnow()
        resume(connection)
    _wait_for(lambda: _finished(ids), 900, f"{count} assessments to be scored", pause=0.5)
    # The stage runs' own timestamps (RQ may expire finished jobs before a slow run ends). A
    # worker already waiting on the queue takes the first job enqueued despite the suspension
    # (RQ checks it between jobs), and then sleeps in 1 s steps while the rest are submitted:
    # only jobs started after the resume count, so the submitting isn't timed as scoring.
    first, last, jobs = db.session.execute(
        select(func.min(StageRun.started_at), func.max(StageRun.completed_at), func.count())
        .join(Operation, Operation.id == StageRun.operation_id)
        .where(
            Operation.assessment_id.in_(ids),
            StageRun.job_id.is_not(None),
            StageRun.started_at >= resumed_at,
        )
    ).one()
    failed = db.session.scalar(
        select(func.count()).where(
            Assessment.id.in_(ids), Assessment.status == AssessmentStatus.FAILED
        )
    )
    db.session.commit()
    return jobs, (last - first).total_seconds(), failed


def _noop_throughput(count: int) -> float:
    """Queue `count` no-op jobs while the workers are suspended; seconds from first start to
    last end."""
    connection = get_redis()
    queue = Queue(SCORING_QUEUE, connection=connection)
    suspend(connection)
    try:
        jobs = queue.enqueue_many([Queue.prepare_data(NOOP_JOB) for _ in range(count)])
    finally:
        resume(connection)
    ids = [job.id for job in jobs]

    def all_done() -> bool:
        statuses = [j.get_status(refresh=False) for j in Job.fetch_many(ids, connection) if j]
        return len(statuses) == len(ids) and all(s in DONE_JOBS for s in statuses)

    _wait_for(all_done, 600, f"{count} no-op jobs", pause=0.5)
    return _span(ids)


def _span(job_ids: list[str]) -> float:
    """Seconds from the first job's start to the last job's end, by RQ's job timestamps."""
    jobs = [j for j in Job.fetch_many(job_ids, get_redis()) if j is not None]
    if len(jobs) != len(job_ids):
        raise RuntimeError(f"{len(job_ids) - len(jobs)} jobs vanished before they were timed")
    starts = [j.started_at for j in jobs if j.started_at]
    ends = [j.ended_at for j in jobs if j.ended_at]
    timed = [j for j in jobs if j.started_at and j.ended_at]
    inside = [(j.ended_at - j.started_at).total_seconds() for j in timed]
    _say(f"{len(jobs)} jobs: {1000 * statistics.mean(inside):.1f} ms each inside the job (mean)")
    return (max(ends) - min(starts)).total_seconds()


def _latency(student, samples: int) -> tuple[list[float], list[float]]:
    """Per single assessment on idle workers: (submitted -> completed) - the stages' own work."""
    overheads, work = [], []
    for _ in range(samples):
        assessment_id = data.submit(student)
        _wait_for(lambda i=assessment_id: _finished([i]), 60, "one assessment to be scored")
        assessment = db.session.get(Assessment, assessment_id, populate_existing=True)
        runs = {
            run.name: _seconds(run.started_at, run.completed_at)
            for run in db.session.scalars(
                select(StageRun)
                .join(Operation, Operation.id == StageRun.operation_id)
                .where(Operation.assessment_id == assessment_id)
            )
        }
        own = runs[Stage.RULE_SCORE] + max(runs[Stage.GPT], runs[Stage.RAG]) + runs[Stage.FUSION]
        total = _seconds(assessment.submitted_at, assessment.completed_at)
        db.session.commit()
        overheads.append(total - own)
        work.append(own)
        time.sleep(0.5)  # idle workers: nothing of the previous one is still in flight
    return overheads, work


def _seconds(start: datetime | None, end: datetime | None) -> float:
    if start is None or end is None:
        return 0.0
    return (_aware(end) - _aware(start)).total_seconds()


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _finished(ids: list[int]) -> bool:
    """True once every one of these assessments is completed or failed (fresh from the db)."""
    left = db.session.scalar(
        select(func.count()).where(Assessment.id.in_(ids), Assessment.status.not_in(FINISHED))
    )
    db.session.commit()
    return left == 0


def _wait_for(predicate, timeout: float, what: str, pause: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"pipeline bench: {timeout:.0f} s passed waiting for {what}")
        time.sleep(pause)


def _say(message: str) -> None:
    print(f"bench: pipeline: {message}", file=sys.stderr, flush=True)
