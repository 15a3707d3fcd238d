"""A delivery's status: each change is written to the history (SPEC 7) with the change."""

from __future__ import annotations

from webapp.models import Delivery, DeliveryStatus, Entity
from webapp.models.base import isoformat
from webapp.services import history

# How a status reads in the history: "Webhook <type> (<webhook-id>) <words>".
_WORDS = {
    DeliveryStatus.SUCCEEDED: "delivered",
    DeliveryStatus.RETRYING: "failed; retry scheduled",
    DeliveryStatus.FAILED: "failed; no more retries",
    DeliveryStatus.SKIPPED: "skipped",
    DeliveryStatus.PENDING: "queued",
}


def set_status(delivery: Delivery, status: DeliveryStatus, note: str | None = None) -> None:
    """Change a delivery's status and record it in the history; a finished delivery lets go of
    its job and its next attempt time. `note` says why (the error, or why it was skipped)."""
    columns = change(delivery, status, note)
    if columns is not None:
        history.add(columns)


def change(delivery: Delivery, status: DeliveryStatus, note: str | None = None) -> dict | None:
    """`set_status`, except that the history event is returned (for `history.add_all`) rather
    than written; None when the status did not change."""
    if status.finished:
        delivery.job_id = None
        delivery.next_attempt_at = None
    if status == DeliveryStatus.SKIPPED:
        delivery.last_error = note
    if delivery.status == status:
        return None
    delivery.status = status
    event = delivery.event
    message = f"Webhook {event.type} ({event.webhook_id}) {_WORDS[status]}"
    return history.entry(
        Entity.DELIVERY,
        status,
        assessment_id=event.assessment_id,
        operation_id=event.operation_id,
        entity_id=delivery.id,
        message=f"{message}: {note}" if note else f"{message}.",
        metadata={
            "event_type": event.type,
            "webhook_id": event.webhook_id,
            "endpoint_id": delivery.endpoint_id,
            "callback_id": delivery.callback_id,
            "attempts": delivery.attempt_count,
            "next_attempt_at": isoformat(delivery.next_attempt_at),
        },
    )
