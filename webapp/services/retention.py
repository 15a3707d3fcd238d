"""Retention (SPEC 7): history capped per assessment and kept HISTORY_RETENTION; expired
idempotency keys go, and sign-in links a day after they expired.

`prune()` is what `flask prune` runs and what the worker schedules every PRUNE_INTERVAL seconds
(`worker.jobs.scheduled_prune`, an RQ cron job). Running it twice, or in two places at once, is
harmless: every step is a DELETE of rows that are already past their limit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import delete, func, select

from webapp.extensions import db
from webapp.models import HistoryEvent
from webapp.models.base import utcnow
from webapp.services import idempotency, sign_in_links
from webapp.services.history import PER_ASSESSMENT_CAP

log = logging.getLogger(__name__)

# Rows per DELETE, so a long backlog never holds locks for long.
BATCH_SIZE = 5000


@dataclass(frozen=True)
class PruneReport:
    """How many rows each rule removed."""

    history_over_cap: int
    history_expired: int
    idempotency_keys_expired: int
    sign_in_links_expired: int

    def __str__(self) -> str:
        return (
            f"history events over the cap of {PER_ASSESSMENT_CAP} per assessment: "
            f"{self.history_over_cap}; history events older than the retention window: "
            f"{self.history_expired}; expired idempotency keys: {self.idempotency_keys_expired}; "
            f"sign-in links expired over a day ago: {self.sign_in_links_expired}"
        )


def prune(now: datetime | None = None) -> PruneReport:
    """Apply every retention rule once; returns what was removed."""
    now = now or utcnow()
    retention = timedelta(seconds=current_app.config["HISTORY_RETENTION"])
    report = PruneReport(
        history_over_cap=cap_history(PER_ASSESSMENT_CAP),
        history_expired=expire_history(now - retention),
        idempotency_keys_expired=idempotency.prune_expired(now),
        sign_in_links_expired=sign_in_links.prune_expired(now),
    )
    log.info("pruned %s", report)
    return report


def cap_history(cap: int) -> int:
    """Keep only the newest `cap` events of each assessment; returns how many were deleted."""
    over = db.session.execute(
        select(HistoryEvent.assessment_id)
        .where(HistoryEvent.assessment_id.is_not(None))
        .group_by(HistoryEvent.assessment_id)
        .having(func.count() > cap)
    ).scalars()
    deleted = 0
    for assessment_id in list(over):
        # The id of the oldest event to keep; everything older goes.
        oldest_kept = db.session.scalar(
            select(HistoryEvent.id)
            .where(HistoryEvent.assessment_id == assessment_id)
            .order_by(HistoryEvent.id.desc())
            .offset(cap - 1)
            .limit(1)
        )
        if oldest_kept is None:
            continue
        result = db.session.execute(
            delete(HistoryEvent).where(
                HistoryEvent.assessment_id == assessment_id, HistoryEvent.id < oldest_kept
            )
        )
        db.session.commit()
        deleted += result.rowcount or 0
    return deleted


def expire_history(cutoff: datetime) -> int:
    """Delete events older than `cutoff`, a batch at a time; returns how many."""
    deleted = 0
    while True:
        batch = select(HistoryEvent.id).where(HistoryEvent.created_at < cutoff).limit(BATCH_SIZE)
        result = db.session.execute(delete(HistoryEvent).where(HistoryEvent.id.in_(batch)))
        db.session.commit()
        count = result.rowcount or 0
        deleted += count
        if count < BATCH_SIZE:
            return deleted
