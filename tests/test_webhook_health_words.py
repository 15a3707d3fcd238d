"""The webhook pages tell health in one unit, show response times, say honestly what is retried,
and poll the log no faster than a retry can happen."""

from __future__ import annotations

import re
from datetime import timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import select

from tests.support import ADMIN, log_in
from webapp.extensions import db
from webapp.models import (
    Attempt,
    AttemptTrigger,
    Delivery,
    DeliveryStatus,
    WebhookEndpoint,
    WebhookEvent,
)
from webapp.models.base import utcnow
from webapp.scoring.vocabulary import EventType
from webapp.views.admin.webhooks import POLL_SECONDS, SLOWEST_POLL_SECONDS, poll_seconds
from webapp.views.presentation import seconds_words

pytestmark = pytest.mark.db
NOW = utcnow()


def delivery(status: DeliveryStatus, next_in: float | None = None):
    """A stand-in delivery for the poll rule (it reads only these two fields)."""
    at = NOW + timedelta(seconds=next_in) if next_in is not None else None
    return SimpleNamespace(status=status, next_attempt_at=at)


@pytest.mark.parametrize(
    ("deliveries", "expected"),
    [
        ([delivery(DeliveryStatus.PENDING)], POLL_SECONDS),
        ([delivery(DeliveryStatus.RETRYING, 3)], POLL_SECONDS),
        ([delivery(DeliveryStatus.RETRYING, 40)], 20),
        ([delivery(DeliveryStatus.RETRYING, 1800)], SLOWEST_POLL_SECONDS),
        ([delivery(DeliveryStatus.RETRYING, 1800), delivery(DeliveryStatus.PENDING)], POLL_SECONDS),
        ([delivery(DeliveryStatus.SUCCEEDED)], POLL_SECONDS),
    ],
)
def test_the_log_polls_slower_when_the_next_retry_is_far(deliveries, expected):
    assert poll_seconds(deliveries, NOW) == expected


def test_health_counts_deliveries_not_attempts_and_the_log_shows_response_times(app):
    now = utcnow()
    with app.app_context():
        endpoint = WebhookEndpoint(url="https://hooks.example.invalid/health")
        db.session.add(endpoint)
        db.session.flush()
        plan = [(DeliveryStatus.SUCCEEDED, True), (DeliveryStatus.FAILED, False)]
        plan += [(DeliveryStatus.RETRYING, True)] * 7
        for index, (status, auto_retry) in enumerate(plan):
            event = WebhookEvent(
                webhook_id=f"msg_health_{index}", type=EventType.WEBHOOK_TEST, body=b"{}"
            )
            db.session.add(event)
            db.session.flush()
            row = Delivery(
                event_id=event.id, endpoint_id=endpoint.id, status=status, auto_retry=auto_retry,
                attempt_count=2, last_attempt_at=now, last_response_status=500,
                next_attempt_at=now + timedelta(minutes=30) if status == "retrying" else None,
            )  # fmt: skip
            db.session.add(row)
            db.session.flush()
            for number in (1, 2):
                db.session.add(
                    Attempt(
                        delivery_id=row.id, number=number, trigger=AttemptTrigger.SCHEDULED,
                        started_at=now, duration_ms=100 * number + index, url=endpoint.url,
                        response_status=500,
                    )
                )  # fmt: skip
        db.session.commit()
        endpoint_id = endpoint.id
    client = app.test_client()
    log_in(client, ADMIN)
    html = client.get(f"/admin/webhooks/{endpoint_id}").get_data(as_text=True)
    rate = re.search(r'data-testid="health-rate">(.*?)</dd>', html, re.DOTALL).group(1)
    assert "11% delivered" in rate and "(1 of 9)" in rate
    assert "1 failed" in rate and "7 still being tried" in rate
    assert 'data-testid="delivery-duration">in 208 ms<' in html  # the latest attempt's time
    assert "not retried: test events are tried once" in html
    assert 'data-poll-seconds="60"' in html  # the next retry is 30 minutes away
    with app.app_context():
        failed_test = db.session.scalar(
            select(Delivery.id).where(
                Delivery.endpoint_id == endpoint_id, Delivery.auto_retry.is_(False)
            )
        )
    detail = client.get(f"/admin/webhooks/deliveries/{failed_test}").text
    assert "Not retried: test events are tried once." in detail
    schedule = ", ".join(seconds_words(s) for s in app.config["WEBHOOK_RETRY_SCHEDULE"])
    index = client.get("/admin/webhooks").text
    assert f"tried again after {schedule}, then marked failed" in index
    assert "test events and manual sends are tried once" in index
