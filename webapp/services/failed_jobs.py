"""Failed RQ jobs: the newest of them, what each was for, and the remedy that really mends its work.

Requeueing a job "as it was" heals nothing here: every job is idempotent and keyed to the database
(a stage that already failed, a delivery whose retry has a newer job id, a finished generation are
all left alone when the same job runs again). So a failed scoring stage is mended by scoring the
assessment again (every stage and the report run anew); a failed delivery by its own retries or
the Redeliver button; a failed generation by generating again. Plain requeue stays only for jobs
this app does not know, where running them again is all there is to do.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime

from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job
from rq.registry import FailedJobRegistry

from webapp.extensions import db
from webapp.models import Assessment, StageRun, User
from webapp.models.base import as_utc
from webapp.queues import (
    DELIVER_ALL_JOB,
    DELIVER_JOB,
    GENERATION_JOB,
    QUEUE_NAMES,
    STAGE_JOB,
    get_queue,
    get_redis,
)
from webapp.services.progress import latest_operation
from webapp.services.rescore import rescore_assessment


class Remedy(enum.StrEnum):
    """What the failed-jobs list offers for a job."""

    RESCORE = "rescore"  # score the assessment again: the stage and the report run anew
    REQUEUE = "requeue"  # a job this app doesn't know: run it again as it was
    NONE = "none"  # nothing to run again (see `reason`); it can only be cleared


@dataclass
class Purpose:
    """What a failed job was doing, and what can mend it."""

    remedy: Remedy
    reason: str = ""
    assessment_id: int | None = None
    stage: str | None = None
    operation_id: int | None = None
    delivery_ids: list[int] = field(default_factory=list)


FAILED_JOB_LIMIT = 50


class UnknownQueue(ValueError):
    """The name is not one of QUEUE_NAMES."""


class NothingToMend(Exception):
    """The job can't be run again usefully; the message says why."""


def purpose_of(job: Job) -> Purpose:
    """Read a failed job's function and arguments (ids) against the database."""
    args = list(job.args or [])
    if job.func_name == STAGE_JOB and args:
        return _stage_purpose(args[0])
    if job.func_name in (DELIVER_JOB, DELIVER_ALL_JOB) and args:
        ids = args[0] if isinstance(args[0], list) else [args[0]]
        return Purpose(
            Remedy.NONE,
            "A failed delivery is retried on its schedule; open it to redeliver now.",
            delivery_ids=[int(i) for i in ids],
        )
    if job.func_name == GENERATION_JOB and args:
        return Purpose(
            Remedy.NONE,
            "The generation ended as failed; generate the question again instead.",
            operation_id=int(args[0]),
        )
    return Purpose(Remedy.REQUEUE)


def _stage_purpose(stage_run_id: int) -> Purpose:
    """A scoring stage's job: rescore its assessment, if that is what would mend it now."""
    run = db.session.get(StageRun, int(stage_run_id))
    if run is None or run.operation.assessment_id is None:
        return Purpose(Remedy.NONE, "Its scoring run no longer exists.")
    assessment = db.session.get(Assessment, run.operation.assessment_id)
    found = Purpose(
        Remedy.RESCORE,
        assessment_id=assessment.id,
        stage=run.name,
        operation_id=run.operation_id,
    )
    latest = latest_operation(assessment.id)
    if latest is not None and latest.id != run.operation_id:
        found.remedy, found.reason = Remedy.NONE, "A later scoring run has replaced this one."
    elif not assessment.is_finished:
        found.remedy = Remedy.NONE
        found.reason = "Its assessment is still being scored; rescore it once it has finished."
    return found


@dataclass
class FailedJob:
    """A job in a queue's failed registry."""

    id: str
    queue: str
    description: str
    failed_at: datetime | None
    error: str
    traceback: str = ""
    purpose: Purpose | None = None


def newest(limit: int = FAILED_JOB_LIMIT) -> list[FailedJob]:
    """The newest failed jobs across every queue (raises RedisError)."""
    connection = get_redis()
    ids_by_queue = {
        name: failed_registry(name).get_job_ids(0, limit - 1, desc=True) for name in QUEUE_NAMES
    }
    pairs = [(name, job_id) for name, ids in ids_by_queue.items() for job_id in ids]
    jobs = Job.fetch_many([job_id for _, job_id in pairs], connection=connection)
    out = []
    for (name, job_id), job in zip(pairs, jobs, strict=True):
        if job is None:  # expired between the two reads
            continue
        out.append(
            FailedJob(
                id=job_id,
                queue=name,
                description=job.description or job.func_name or "",
                failed_at=as_utc(job.ended_at) if job.ended_at else None,
                error=_last_line(_traceback(job)),
                traceback=_traceback(job),
                purpose=purpose_of(job),
            )
        )
    never = datetime.min.replace(tzinfo=UTC)
    out.sort(key=lambda j: j.failed_at or never, reverse=True)
    return out[:limit]


def _traceback(job: Job) -> str:
    """The job's traceback as RQ stored it (empty when it kept none)."""
    result = job.latest_result()
    return ((result.exc_string if result is not None else None) or "").strip()


def _last_line(text: str) -> str:
    """The last line of a traceback: the exception and its message."""
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def failed_registry(queue_name: str) -> FailedJobRegistry:
    """The failed registry of one of the app's queues."""
    if queue_name not in QUEUE_NAMES:
        raise UnknownQueue(queue_name)
    return FailedJobRegistry(queue=get_queue(queue_name))


def fetch_failed(queue_name: str, job_id: str) -> Job | None:
    """A job in the queue's failed list, or None."""
    registry = failed_registry(queue_name)
    if job_id not in registry.get_job_ids():
        return None
    try:
        return Job.fetch(job_id, connection=get_redis())
    except NoSuchJobError:
        return None


def mend(queue_name: str, job_id: str, actor: User) -> Purpose:
    """Apply the job's remedy and take it off the failed list; raises NothingToMend."""
    job = fetch_failed(queue_name, job_id)
    if job is None:
        raise NothingToMend(f"Job {job_id} is no longer in the failed list; nothing to do.")
    purpose = purpose_of(job)
    if purpose.remedy == Remedy.NONE:
        raise NothingToMend(purpose.reason)
    if purpose.remedy == Remedy.REQUEUE:
        failed_registry(queue_name).requeue(job_id)
        return purpose
    rescore_assessment(db.session.get(Assessment, purpose.assessment_id), actor)
    failed_registry(queue_name).remove(job, delete_job=True)
    return purpose


def requeue_failed(queue_name: str) -> int:
    """Run again every failed job of one queue that only running again can mend (jobs this app
    doesn't know); returns how many went back. Scoring, delivery and generation jobs stay."""
    registry = failed_registry(queue_name)
    count = 0
    for job in Job.fetch_many(registry.get_job_ids(), connection=get_redis()):
        if job is None or purpose_of(job).remedy != Remedy.REQUEUE:
            continue
        try:
            registry.requeue(job.id)
        except (NoSuchJobError, InvalidJobOperation):
            continue  # gone from the list meanwhile
        count += 1
    return count


def clear(queue_name: str, job_ids: list[str] | None = None) -> int:
    """Delete failed jobs (these, or every one of the queue); returns how many went."""
    registry = failed_registry(queue_name)
    wanted = registry.get_job_ids() if job_ids is None else job_ids
    present = set(registry.get_job_ids())
    count = 0
    for job_id in wanted:
        if job_id in present:
            registry.remove(job_id, delete_job=True)
            count += 1
    return count
