"""What admins see of the LLM provider: the breaker, the limits, waiting work, tokens and cost."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import redis
from flask import current_app
from sqlalchemy import select

from webapp.extensions import db
from webapp.models import Operation, StageRun
from webapp.queues import get_redis
from webapp.scoring.vocabulary import OperationStatus, Stage, StageStatus
from webapp.services.llm import usage
from webapp.services.llm.breaker import CircuitBreaker
from webapp.services.llm.leaders import LeaderSlots
from webapp.services.llm.rate_limit import FleetLimiter


@dataclass
class WaitingWork:
    """Unfinished gpt stage runs: not yet claimed, being scored, and waiting on the provider."""

    queued: int = 0
    scoring: int = 0
    waiting_on_provider: int = 0
    oldest: datetime | None = None


@dataclass
class LlmOverview:
    """The admin panel's facts."""

    enabled: bool
    model: str
    rpm: int
    tpm: int
    breaker: dict | None
    held_for: float
    batches: list[str]
    waiting: WaitingWork
    last_day: usage.CostLine
    hours: list[usage.CostLine]
    assessments: list[usage.CostLine]
    redis_down: bool = False


def overview() -> LlmOverview:
    """Everything the panel shows; Redis facts are left out (and said so) when it is down."""
    config = current_app.config
    connection = get_redis()
    breaker, held, batches, down = None, 0.0, [], False
    try:
        breaker = CircuitBreaker(connection, failures=config["LLM_BREAKER_FAILURES"]).state()
        held = FleetLimiter(connection, config["OPENAI_RPM"], config["OPENAI_TPM"]).held_for()
        batches = LeaderSlots(connection, config["LLM_BATCHES"]).live()
    except redis.RedisError:
        down = True
    return LlmOverview(
        enabled=bool(config.get("OPENAI_API_KEY")),
        model=config["OPENAI_MODEL"],
        rpm=config["OPENAI_RPM"],
        tpm=config["OPENAI_TPM"],
        breaker=breaker,
        held_for=held,
        batches=batches,
        waiting=waiting_work(),
        last_day=usage.totals(24),
        hours=usage.per_hour(24),
        assessments=usage.per_assessment(20),
        redis_down=down,
    )


def waiting_work() -> WaitingWork:
    """Count the unfinished gpt stage runs of running operations by what they wait for."""
    rows = db.session.execute(
        select(StageRun.status, StageRun.enqueued_at, StageRun.result)
        .join(Operation, Operation.id == StageRun.operation_id)
        .where(
            StageRun.name == Stage.GPT,
            StageRun.status.in_([StageStatus.QUEUED, StageStatus.IN_PROGRESS]),
            Operation.status.in_([OperationStatus.PENDING, OperationStatus.PROCESSING]),
        )
    ).all()
    work = WaitingWork()
    for status, enqueued_at, result in rows:
        if (result or {}).get("partial", {}).get("waiting_since"):
            work.waiting_on_provider += 1
        elif status == StageStatus.QUEUED:
            work.queued += 1
        else:
            work.scoring += 1
        if enqueued_at and (work.oldest is None or enqueued_at < work.oldest):
            work.oldest = enqueued_at
    return work


def epoch(seconds: float | None) -> datetime | None:
    """Epoch seconds (as the breaker keeps them) as a UTC datetime."""
    return datetime.fromtimestamp(seconds, UTC) if seconds else None
