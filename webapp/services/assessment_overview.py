"""The admin's assessments table: filters read from the query string, and the rows they select."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import Select, func, select

from webapp.errors import ValidationFailed
from webapp.extensions import db
from webapp.models import Assessment, Operation, QuestionSet, User
from webapp.request_values import parse_date, parse_id
from webapp.scoring.vocabulary import AssessmentStatus, OperationType

# The assessments table shows at most this many, newest first.
ASSESSMENT_LIMIT = 100


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
