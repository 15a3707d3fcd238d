"""Token usage of the provider calls and what it costs, for admins (per assessment, per hour)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import func, select

from webapp.extensions import db
from webapp.models import LlmCall
from webapp.models.base import utcnow


@dataclass
class Usage:
    """Tokens of one call, as the provider billed them."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    @classmethod
    def from_completion(cls, completion) -> Usage:
        """The `usage` block of an openai ChatCompletion (zeros where the provider sent none)."""
        usage = getattr(completion, "usage", None)
        if usage is None:
            return cls()
        details = getattr(usage, "prompt_tokens_details", None)
        return cls(
            prompt_tokens=usage.prompt_tokens or 0,
            completion_tokens=usage.completion_tokens or 0,
            cached_tokens=(getattr(details, "cached_tokens", 0) or 0) if details else 0,
        )


def record(stage_run_id: int, assessment_id: int, model: str, usage: Usage) -> None:
    """Add one call's usage to the session (committed with the progress it came with)."""
    db.session.add(
        LlmCall(
            stage_run_id=stage_run_id,
            assessment_id=assessment_id,
            model=model,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cached_tokens=usage.cached_tokens,
        )
    )


@dataclass
class CostLine:
    """Tokens and estimated cost of a group of calls (an assessment, an hour)."""

    label: str
    calls: int
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    cost: float
    key: int | datetime | None = None


def cost_of(prompt: int, cached: int, completion: int) -> float:
    """US dollars at the configured prices per 1,000 tokens (cached prompt tokens are cheaper)."""
    config = current_app.config
    return (
        (prompt - cached) * config["OPENAI_PRICE_PROMPT"]
        + cached * config["OPENAI_PRICE_CACHED"]
        + completion * config["OPENAI_PRICE_COMPLETION"]
    ) / 1000


_SUMS = (
    func.count(LlmCall.id),
    func.coalesce(func.sum(LlmCall.prompt_tokens), 0),
    func.coalesce(func.sum(LlmCall.cached_tokens), 0),
    func.coalesce(func.sum(LlmCall.completion_tokens), 0),
)


def _line(label: str, key, calls: int, prompt: int, cached: int, completion: int) -> CostLine:
    cost = cost_of(prompt, cached, completion)
    return CostLine(label, calls, prompt, cached, completion, cost, key)


def per_assessment(limit: int = 20) -> list[CostLine]:
    """The most recently scored assessments' tokens and cost, newest first."""
    rows = db.session.execute(
        select(LlmCall.assessment_id, *_SUMS)
        .group_by(LlmCall.assessment_id)
        .order_by(func.max(LlmCall.id).desc())
        .limit(limit)
    ).all()
    return [_line(f"Assessment {row[0]}", row[0], *row[1:]) for row in rows]


def per_hour(hours: int = 24, now: datetime | None = None) -> list[CostLine]:
    """Tokens and cost per clock hour over the last `hours`, newest first (hours with calls)."""
    since = (now or utcnow()) - timedelta(hours=hours)
    buckets: dict[datetime, list[int]] = {}
    # Grouped here rather than in SQL: hour truncation differs between SQLite and PostgreSQL,
    # and a day of calls is a few thousand small rows.
    rows = db.session.execute(
        select(
            LlmCall.created_at,
            LlmCall.prompt_tokens,
            LlmCall.cached_tokens,
            LlmCall.completion_tokens,
        ).where(LlmCall.created_at >= since)
    ).all()
    for created, prompt, cached, completion in rows:
        hour = created.replace(minute=0, second=0, microsecond=0)
        sums = buckets.setdefault(hour, [0, 0, 0, 0])
        for i, value in enumerate((1, prompt, cached, completion)):
            sums[i] += value
    return [
        _line(f"{hour:%Y-%m-%d %H}:00 UTC", hour, *buckets[hour])
        for hour in sorted(buckets, reverse=True)
    ]


def totals(hours: int = 24) -> CostLine:
    """All calls of the last `hours`."""
    since = utcnow() - timedelta(hours=hours)
    row = db.session.execute(select(*_SUMS).where(LlmCall.created_at >= since)).one()
    return _line(f"Last {hours} hours", None, *row)
