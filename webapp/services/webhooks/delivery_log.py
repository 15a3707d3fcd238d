"""The delivery log admins read: an endpoint's deliveries filtered by status and event type,
one delivery with its attempts, and sending one again."""

from __future__ import annotations

from sqlalchemy import select

from webapp.extensions import db
from webapp.models import Attempt, Delivery, DeliveryStatus, User, WebhookEndpoint, WebhookEvent
from webapp.request_values import invalid
from webapp.scoring.vocabulary import EventType
from webapp.services import audit
from webapp.services.audit import Action
from webapp.services.webhooks import recovery
from webapp.services.webhooks.exceptions import WebhookDeliveryNotFound

DELIVERY_PAGE = 100


def get_delivery(delivery_id: int) -> Delivery:
    """The delivery, or WebhookDeliveryNotFound (404)."""
    delivery = db.session.get(Delivery, delivery_id)
    if delivery is None:
        raise WebhookDeliveryNotFound(f"No webhook delivery has id {delivery_id}.")
    return delivery


def parse_status_filter(value: str | None) -> DeliveryStatus | None:
    """A delivery status filter, or ValidationFailed naming the valid ones."""
    if not value:
        return None
    try:
        return DeliveryStatus(value)
    except ValueError:
        raise invalid("status", f"must be one of {[s.value for s in DeliveryStatus]}") from None


def parse_event_type_filter(value: str | None) -> EventType | None:
    """An event type filter, or ValidationFailed naming the valid ones."""
    if not value:
        return None
    try:
        return EventType(value)
    except ValueError:
        raise invalid("event_type", f"must be one of {[t.value for t in EventType]}") from None


def list_deliveries(
    endpoint: WebhookEndpoint,
    *,
    status: DeliveryStatus | None = None,
    event_type: EventType | None = None,
    before_id: int | None = None,
    limit: int = DELIVERY_PAGE,
) -> list[Delivery]:
    """The endpoint's deliveries, newest first, filtered by status and event type."""
    query = (
        select(Delivery)
        .join(WebhookEvent, WebhookEvent.id == Delivery.event_id)
        .where(Delivery.endpoint_id == endpoint.id)
        .order_by(Delivery.id.desc())
        .limit(limit)
    )
    if status:
        query = query.where(Delivery.status == status)
    if event_type:
        query = query.where(WebhookEvent.type == event_type)
    if before_id:
        query = query.where(Delivery.id < before_id)
    return list(db.session.scalars(query))


def last_durations(delivery_ids: list[int]) -> dict[int, int]:
    """How long each delivery's latest attempt took (ms), for the deliveries that have one."""
    if not delivery_ids:
        return {}
    rows = db.session.execute(
        select(Attempt.delivery_id, Attempt.duration_ms)
        .where(Attempt.delivery_id.in_(delivery_ids))
        .order_by(Attempt.delivery_id, Attempt.number)
    )
    return {delivery_id: duration for delivery_id, duration in rows}


def redeliver(delivery: Delivery, actor: User) -> Delivery:
    """Send one delivery again now (same webhook-id and body); audited."""
    recovery.redeliver(delivery)
    db.session.commit()
    audit.record(
        Action.WEBHOOK_REDELIVERED,
        actor=actor,
        entity_type="webhook_delivery",
        entity_id=delivery.id,
        details={"webhook_id": delivery.event.webhook_id, "endpoint_id": delivery.endpoint_id},
    )
    return delivery
