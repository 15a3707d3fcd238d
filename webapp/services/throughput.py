"""Hourly throughput for the admin's charts: assessments finished and webhook attempts made."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from webapp.extensions import db
from webapp.models import Assessment, Attempt
from webapp.models.base import utcnow
from webapp.scoring.vocabulary import AssessmentStatus

CHART_HOURS = 12


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
