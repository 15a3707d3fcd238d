"""What a failed attempt does: the next retry's delay, and auto-disable of a failing target.

A failure waits the next WEBHOOK_RETRY_SCHEDULE delay with +-20% jitter, longer when the
receiver asked (Retry-After, capped at a day). A target that answers 410 Gone is disabled at
once; an endpoint that failed continuously for WEBHOOK_DISABLE_AFTER seconds is disabled with
a reason admins see, and its waiting deliveries are skipped (recover sends them later).
"""

from __future__ import annotations

import random
from datetime import UTC, datetime

from sqlalchemy import select

from webapp.extensions import db
from webapp.models import AttemptTrigger, Delivery, DeliveryStatus, WebhookEndpoint
from webapp.models.base import utcnow
from webapp.services.webhooks.events import SKIPPED_WHILE_DISABLED
from webapp.services.webhooks.sending import Outcome
from webapp.services.webhooks.status import set_status

JITTER = 0.2  # each scheduled delay is scaled by a random factor in [0.8, 1.2]
RETRY_AFTER_CAP = 24 * 3600  # a receiver's Retry-After is honoured up to a day


def retry_delay(scheduled: float, retry_after: float | None) -> float:
    """The scheduled delay with +-20% jitter, stretched to the receiver's Retry-After (capped)."""
    delay = scheduled * random.uniform(1 - JITTER, 1 + JITTER)
    if retry_after is not None:
        delay = max(delay, min(retry_after, RETRY_AFTER_CAP))
    return max(delay, 0.5)


def note_success(delivery: Delivery) -> None:
    """A success ends the endpoint's run of failures."""
    if delivery.endpoint is not None:
        delivery.endpoint.failing_since = None


def note_failure(delivery: Delivery, outcome: Outcome, disable_after: int) -> bool:
    """Note a failure against the target; True when the target is now disabled.

    410 Gone disables at once; otherwise an endpoint that has failed continuously for
    `disable_after` seconds is disabled, with the reason shown to admins.
    """
    now = utcnow()
    endpoint = delivery.endpoint
    if endpoint is None:
        callback = delivery.callback
        if outcome.status == 410:
            callback.disabled_at = now
            callback.disabled_reason = f"The receiver answered 410 Gone on {when(now)}."
        return not callback.enabled
    if outcome.status == 410:
        disable(endpoint, f"The endpoint answered 410 Gone on {when(now)}.")
        return True
    if endpoint.failing_since is None:
        endpoint.failing_since = outcome.started_at
    elif endpoint.enabled and (now - endpoint.failing_since).total_seconds() >= disable_after:
        disable(
            endpoint,
            f"Every delivery failed for {_duration(disable_after)} (since "
            f"{when(endpoint.failing_since)}); the last one: {outcome.summary()}.",
        )
        return True
    return not endpoint.enabled


def disable(endpoint: WebhookEndpoint, reason: str) -> None:
    """Disable an endpoint: its waiting deliveries are skipped (recover sends them later)."""
    endpoint.enabled = False
    endpoint.disabled_reason = reason
    endpoint.disabled_at = utcnow()
    waiting = db.session.scalars(
        select(Delivery).where(
            Delivery.endpoint_id == endpoint.id,
            Delivery.status.in_([DeliveryStatus.PENDING, DeliveryStatus.RETRYING]),
            Delivery.next_trigger == AttemptTrigger.SCHEDULED,
        )
    )
    for delivery in waiting:
        set_status(delivery, DeliveryStatus.SKIPPED, SKIPPED_WHILE_DISABLED)


def when(moment: datetime) -> str:
    """A moment as people read it in a reason: `24 Nov 2025, 14:03:05 UTC`."""
    return moment.astimezone(UTC).strftime("%-d %b %Y, %H:%M:%S UTC")


def _duration(seconds: float) -> str:
    """5 days, 3 hours, 20 minutes, 4 seconds: the largest unit that fits."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = round(seconds / size, 1)
            return f"{count:g} {unit}{'' if count == 1 else 's'}"
    return f"{seconds:g} second{'' if seconds == 1 else 's'}"
