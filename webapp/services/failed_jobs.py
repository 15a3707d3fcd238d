"""What a failed RQ job was for, and the remedy that really mends its work.

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

from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.registry import FailedJobRegistry

from webapp.extensions import db
from webapp.models import Assessment, StageRun, User
from webapp.queues import QUEUE_NAMES, get_queue, get_redis
from webapp.services.generation import GENERATION_JOB
from webapp.services.pipeline import STAGE_JOB
from webapp.services.progress import latest_operation
from webapp.services.rescore import rescore_assessment
from webapp.services.webhooks.relay import DELIVER_ALL_JOB, DELIVER_JOB


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
