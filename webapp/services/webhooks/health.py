"""Endpoint health for admins: the last attempt, the 24-hour success rate, the next retry."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import case, func, select

from webapp.extensions import db
from webapp.models import Delivery, DeliveryStatus, WebhookEndpoint
from webapp.models.base import as_utc, utcnow

HEALTH_WINDOW = timedelta(hours=24)


@dataclass(frozen=True)
class Health:
    """An endpoint at a glance: its last attempt, its recent success rate, its next retry."""

    last_attempt_at: datetime | None = None
    last_response_status: int | None = None
    last_error: str | None = None
    succeeded: int = 0
    failed: int = 0
    waiting: int = 0
    next_retry_at: datetime | None = None

    @property
    def last_ok(self) -> bool | None:
        """Whether the latest attempt succeeded; None before any attempt."""
        if self.last_attempt_at is None:
            return None
        status = self.last_response_status
        return self.last_error is None and status is not None and 200 <= status < 300

    @property
    def success_rate(self) -> float | None:
        """Share of the window's finished deliveries that succeeded, in percent."""
        done = self.succeeded + self.failed
        return round(100 * self.succeeded / done, 1) if done else None


def endpoint_health(endpoints: list[WebhookEndpoint]) -> dict[int, Health]:
    """Health of each endpoint over the last 24 hours: one aggregate query plus one per endpoint."""
    if not endpoints:
        return {}
    ids = [e.id for e in endpoints]
    counts = {
        row.endpoint_id: row
        for row in db.session.execute(
            select(
                Delivery.endpoint_id,
                func.sum(case((Delivery.status == DeliveryStatus.SUCCEEDED, 1), else_=0)).label(
                    "succeeded"
                ),
                func.sum(case((Delivery.status == DeliveryStatus.FAILED, 1), else_=0)).label(
                    "failed"
                ),
                func.sum(
                    case(
                        (
                            Delivery.status.in_([DeliveryStatus.PENDING, DeliveryStatus.RETRYING]),
                            1,
                        ),
                        else_=0,
                    )
                ).label("waiting"),
                func.min(
                    case((Delivery.status == DeliveryStatus.RETRYING, Delivery.next_attempt_at))
                ).label("next_retry_at"),
            )
            .where(Delivery.endpoint_id.in_(ids), Delivery.created_at >= utcnow() - HEALTH_WINDOW)
            .group_by(Delivery.endpoint_id)
        )
    }
    out = {}
    for endpoint_id in ids:
        last = db.session.scalar(
            select(Delivery)
            .where(Delivery.endpoint_id == endpoint_id, Delivery.last_attempt_at.is_not(None))
            .order_by(Delivery.last_attempt_at.desc())
            .limit(1)
        )
        row = counts.get(endpoint_id)
        next_retry = row.next_retry_at if row else None
        if isinstance(next_retry, str):  # SQLite hands MIN() over a CASE back as text
            next_retry = datetime.fromisoformat(next_retry)
        if next_retry is not None:
            next_retry = as_utc(next_retry)
        out[endpoint_id] = Health(
            last_attempt_at=last.last_attempt_at if last else None,
            last_response_status=last.last_response_status if last else None,
            last_error=last.last_error if last else None,
            succeeded=int(row.succeeded or 0) if row else 0,
            failed=int(row.failed or 0) if row else 0,
            waiting=int(row.waiting or 0) if row else 0,
            next_retry_at=next_retry,
        )
    return out
