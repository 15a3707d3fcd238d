"""The operations overview: assessments, queues, workers, failed jobs, repairs and throughput.

Everything here reads; only `requeue_job` and `requeue_failed` change anything. The database
answers in a few aggregate queries; Redis in one round trip per queue plus one for the jobs.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from rq import Worker
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job, validate_job_id
from rq.registry import FailedJobRegistry
from sqlalchemy import Select, func, or_, select

from webapp.errors import ValidationFailed
from webapp.extensions import db
from webapp.models import Assessment, Attempt, HistoryEvent, Operation, QuestionSet, User
from webapp.models.base import utcnow
from webapp.queues import QUEUE_NAMES, get_queue, get_redis
from webapp.request_values import parse_date, parse_id
from webapp.scoring.vocabulary import AssessmentStatus, OperationType
from webapp.services.failed_jobs import (  # noqa: F401  (UnknownQueue: raised from here too)
    Purpose,
    Remedy,
    UnknownQueue,
    failed_registry,
    purpose_of,
)
from webapp.services.watchdog import MAX_REPAIRS, REPAIR_MESSAGE, aware, heartbeat_deadline

# The assessments table shows at most this many, newest first.
ASSESSMENT_LIMIT = 100
FAILED_JOB_LIMIT = 50
REPAIR_LIMIT = 20
CHART_HOURS = 12
GAVE_UP_MESSAGE = f"Gave up after {MAX_REPAIRS} restarts"


# --- assessments ---------------------------------------------------------------------------


@dataclass
class AssessmentFilters:
    """Validated filters for the assessments table; `errors` says what was ignored and why."""

    status: AssessmentStatus | None = None
    question_set_id: int | None = None
    degraded: bool | None = None
    created_from: date | None = None
    created_to: date | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def active(self) -> bool:
        """True when any filter narrows the table."""
        return any(
            value is not None
            for value in (
                self.status,
                self.question_set_id,
                self.degraded,
                self.created_from,
                self.created_to,
            )
        )


def parse_filters(args) -> AssessmentFilters:
    """Filters from query arguments; a bad value is dropped and explained in `errors`."""
    filters = AssessmentFilters()
    status = (args.get("status") or "").strip()
    if status:
        try:
            filters.status = AssessmentStatus(status)
        except ValueError:
            filters.errors.append(f"Unknown status “{status}”; showing every status.")
    try:
        question_set = parse_id(args.get("question_set"), "question_set")
        known = question_set is None or db.session.get(QuestionSet, question_set) is not None
    except ValidationFailed:
        question_set, known = None, False
    if known:
        filters.question_set_id = question_set
    else:
        filters.errors.append("No such question set; showing every set.")
    degraded = (args.get("degraded") or "").strip().lower()
    if degraded in ("yes", "no"):
        filters.degraded = degraded == "yes"
    elif degraded:
        filters.errors.append("Partial report must be yes or no; showing both.")
    for name, label in (("created_from", "From"), ("created_to", "To")):
        value = (args.get(name) or "").strip()
        try:
            setattr(filters, name, parse_date(value, name))
        except ValidationFailed:
            filters.errors.append(f"{label} date “{value}” is not a date (YYYY-MM-DD); ignored.")
    if filters.created_from and filters.created_to and filters.created_from > filters.created_to:
        filters.errors.append("The From date is after the To date; both ignored.")
        filters.created_from = filters.created_to = None
    return filters


@dataclass
class AssessmentRow:
    """One line of the assessments table."""

    id: int
    status: AssessmentStatus
    degraded: bool
    created_at: datetime
    completed_at: datetime | None
    student: str
    question_set: str
    progress: int | None


def assessments(filters: AssessmentFilters, limit: int = ASSESSMENT_LIMIT) -> list[AssessmentRow]:
    """The newest assessments matching `filters`, with student, set and latest progress.

    One query: the latest scoring operation per assessment comes from a grouped subquery.
    """
    latest = (
        select(Operation.assessment_id, func.max(Operation.id).label("operation_id"))
        .where(Operation.operation_type == OperationType.ASSESSMENT_SCORING)
        .group_by(Operation.assessment_id)
        .subquery()
    )
    query: Select = (
        select(Assessment, User.email, QuestionSet.title, Operation.progress)
        .join(User, User.id == Assessment.user_id)
        .join(QuestionSet, QuestionSet.id == Assessment.question_set_id)
        .outerjoin(latest, latest.c.assessment_id == Assessment.id)
        .outerjoin(Operation, Operation.id == latest.c.operation_id)
        .order_by(Assessment.created_at.desc(), Assessment.id.desc())
        .limit(limit)
    )
    if filters.status is not None:
        query = query.where(Assessment.status == filters.status)
    if filters.question_set_id is not None:
        query = query.where(Assessment.question_set_id == filters.question_set_id)
    if filters.degraded is not None:
        query = query.where(Assessment.degraded.is_(filters.degraded))
    if filters.created_from is not None:
        query = query.where(Assessment.created_at >= _start_of(filters.created_from))
    if filters.created_to is not None:
        query = query.where(Assessment.created_at < _start_of(filters.created_to + timedelta(1)))
    return [
        AssessmentRow(
            id=assessment.id,
            status=AssessmentStatus(assessment.status),
            degraded=bool(assessment.degraded),
            created_at=assessment.created_at,
            completed_at=assessment.completed_at,
            student=email,
            question_set=title,
            progress=progress,
        )
        for assessment, email, title, progress in db.session.execute(query)
    ]


def question_sets() -> list[tuple[int, str]]:
    """(id, title) of every question set, for the filter's choices."""
    return list(db.session.execute(select(QuestionSet.id, QuestionSet.title).order_by("title")))


def _start_of(day: date) -> datetime:
    """Midnight UTC at the start of `day`."""
    return datetime.combine(day, time.min, tzinfo=UTC)


# --- queues and workers --------------------------------------------------------------------


@dataclass
class QueueStats:
    """What one RQ queue holds right now."""

    name: str
    queued: int
    oldest_age: timedelta | None
    started: int
    failed: int
    scheduled: int


@dataclass
class WorkerInfo:
    """One registered RQ worker."""

    name: str
    state: str
    alive: bool
    last_heartbeat: datetime | None
    queues: list[str]
    job_id: str | None
    job_description: str | None


def queue_stats() -> list[QueueStats]:
    """Length, oldest queued job's age and registry sizes of every queue (raises RedisError)."""
    connection = get_redis()
    now = utcnow()
    stats = []
    for name in QUEUE_NAMES:
        queue = get_queue(name)
        with connection.pipeline(transaction=False) as pipe:
            pipe.llen(queue.key)
            pipe.lindex(queue.key, 0)
            pipe.zcard(queue.started_job_registry.key)
            pipe.zcard(queue.failed_job_registry.key)
            pipe.zcard(queue.scheduled_job_registry.key)
            queued, oldest_id, started, failed, scheduled = pipe.execute()
        oldest_age = None
        if oldest_id:
            oldest = Job.fetch_many([oldest_id.decode()], connection=connection)[0]
            if oldest is not None and oldest.enqueued_at is not None:
                oldest_age = max(timedelta(0), now - aware(oldest.enqueued_at))
        stats.append(QueueStats(name, queued, oldest_age, started, failed, scheduled))
    return stats


def workers() -> list[WorkerInfo]:
    """Every registered worker, with the watchdog's rule for whether it is alive.

    A busy worker heartbeats every WORKER_HEARTBEAT seconds, so one silent for longer than
    twice that plus 5 s is gone (SIGKILLed workers stay registered until their key expires). An
    idle worker blocks on its queues and heartbeats rarely; being registered is its sign of life.
    """
    connection = get_redis()
    oldest = heartbeat_deadline()
    found = Worker.all(connection=connection)
    job_ids = [w.get_current_job_id() for w in found]
    jobs = Job.fetch_many([j for j in job_ids if j], connection=connection)
    descriptions = {job.id: job.description for job in jobs if job is not None}
    out = []
    for worker, job_id in zip(found, job_ids, strict=True):
        state = str(worker.get_state())
        heartbeat = aware(worker.last_heartbeat) if worker.last_heartbeat else None
        busy = state == "busy" or job_id is not None
        alive = not busy or (heartbeat is not None and heartbeat >= oldest)
        out.append(
            WorkerInfo(
                name=worker.name,
                state=state,
                alive=alive,
                last_heartbeat=heartbeat,
                queues=worker.queue_names(),
                job_id=job_id,
                job_description=descriptions.get(job_id) if job_id else None,
            )
        )
    return sorted(out, key=lambda w: w.name)


# --- failed jobs ---------------------------------------------------------------------------


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


def failed_jobs(limit: int = FAILED_JOB_LIMIT) -> list[FailedJob]:
    """The newest failed jobs across every queue (raises RedisError)."""
    connection = get_redis()
    ids_by_queue = {
        name: FailedJobRegistry(queue=get_queue(name)).get_job_ids(0, limit - 1, desc=True)
        for name in QUEUE_NAMES
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
                failed_at=aware(job.ended_at) if job.ended_at else None,
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


def requeue_job(queue_name: str, job_id: str) -> bool:
    """Put one failed job back on its queue; False when it is no longer in the failed list."""
    registry = failed_registry(queue_name)
    try:
        validate_job_id(job_id)  # RQ raises ValueError for any other id: no such job exists
    except ValueError:
        return False
    try:
        registry.requeue(job_id)
    except (NoSuchJobError, InvalidJobOperation):
        return False
    return True


def requeue_failed(queue_name: str) -> int:
    """Run again every failed job of one queue that only running again can mend (jobs this app
    doesn't know); returns how many went back. Scoring, delivery and generation jobs stay."""
    registry = failed_registry(queue_name)
    jobs = Job.fetch_many(registry.get_job_ids(), connection=get_redis())
    wanted = [job for job in jobs if job is not None and purpose_of(job).remedy == Remedy.REQUEUE]
    return sum(requeue_job(queue_name, job.id) for job in wanted)


# --- repairs -------------------------------------------------------------------------------


def repairs(limit: int = REPAIR_LIMIT) -> list[HistoryEvent]:
    """The watchdog's latest re-enqueues and give-ups, newest first."""
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


# --- throughput ----------------------------------------------------------------------------


@dataclass
class HourCounts:
    """Counts per series for one hour, the hour starting at `start` (UTC)."""

    start: datetime
    counts: dict[str, int]


def _hours(now: datetime, hours: int) -> list[datetime]:
    """The starts of the last `hours` hours, oldest first, the current (partial) hour last."""
    current = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return [current - timedelta(hours=offset) for offset in range(hours - 1, -1, -1)]


def _bucket(moments, series: list[str], now: datetime, hours: int) -> list[HourCounts]:
    """Count (moment, series) pairs into hourly buckets."""
    starts = _hours(now, hours)
    counter: Counter = Counter()
    for moment, name in moments:
        counter[(moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0), name)] += 1
    return [HourCounts(hour, {name: counter[(hour, name)] for name in series}) for hour in starts]


def scoring_throughput(hours: int = CHART_HOURS, now: datetime | None = None) -> list[HourCounts]:
    """Assessments finished per hour over the last `hours` hours: scored and failed."""
    now = now or utcnow()
    since = _hours(now, hours)[0]
    rows = db.session.execute(
        select(Assessment.completed_at, Assessment.status).where(
            Assessment.completed_at >= since,
            Assessment.status.in_([AssessmentStatus.COMPLETED, AssessmentStatus.FAILED]),
        )
    )
    return _bucket(((at, str(status)) for at, status in rows), ["completed", "failed"], now, hours)


def delivery_throughput(hours: int = CHART_HOURS, now: datetime | None = None) -> list[HourCounts]:
    """Webhook delivery attempts per hour over the last `hours` hours, by outcome.

    An attempt succeeded when the receiver answered 2xx; anything else (an error status, a
    timeout, a refused connection) failed.
    """
    now = now or utcnow()
    since = _hours(now, hours)[0]
    rows = db.session.execute(
        select(Attempt.started_at, Attempt.response_status, Attempt.error).where(
            Attempt.started_at >= since
        )
    )
    return _bucket(
        (
            (at, "succeeded" if error is None and status and 200 <= status < 300 else "failed")
            for at, status, error in rows
        ),
        ["succeeded", "failed"],
        now,
        hours,
    )
