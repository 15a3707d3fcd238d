"""Managing webhook endpoints and assessment callbacks: create, change, rotate, test, recover.

Every change is audited after it commits; routes and pages call these and only render.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from flask import current_app
from sqlalchemy import case, func, select

from webapp.errors import ScorelineError, ValidationFailed
from webapp.extensions import db
from webapp.models import (
    Assessment,
    AssessmentCallback,
    Attempt,
    AttemptTrigger,
    Delivery,
    DeliveryStatus,
    EventType,
    User,
    WebhookEndpoint,
)
from webapp.models.accounts import ROTATION_GRACE, new_signing_secret
from webapp.models.base import isoformat, utcnow
from webapp.request_values import invalid, parse_moment
from webapp.services import audit
from webapp.services.audit import Action
from webapp.services.webhooks import bulkhead, events
from webapp.services.webhooks import delivery as deliveries
from webapp.services.webhooks.url_guard import AddressGuard, validate_url

MAX_DESCRIPTION = 500
HEALTH_WINDOW = timedelta(hours=24)
DELIVERY_PAGE = 100


class WebhookEndpointNotFound(ScorelineError):
    status, code, title = 404, "WEBHOOK_ENDPOINT_NOT_FOUND", "Webhook endpoint not found"


class WebhookDeliveryNotFound(ScorelineError):
    status, code, title = 404, "WEBHOOK_DELIVERY_NOT_FOUND", "Webhook delivery not found"


class WebhookEndpointDisabled(ScorelineError):
    status, code, title = 409, "WEBHOOK_ENDPOINT_DISABLED", "Webhook endpoint is disabled"


def address_guard() -> AddressGuard:
    """The guard configured by WEBHOOK_ALLOWED_CIDRS."""
    return AddressGuard.from_cidrs(current_app.config["WEBHOOK_ALLOWED_CIDRS"])


# --- reading ------------------------------------------------------------------------------------


def get_endpoint(endpoint_id: int) -> WebhookEndpoint:
    """The endpoint, or WebhookEndpointNotFound (404)."""
    endpoint = db.session.get(WebhookEndpoint, endpoint_id)
    if endpoint is None:
        raise WebhookEndpointNotFound(f"No webhook endpoint has id {endpoint_id}.")
    return endpoint


def get_delivery(delivery_id: int) -> Delivery:
    """The delivery, or WebhookDeliveryNotFound (404)."""
    delivery = db.session.get(Delivery, delivery_id)
    if delivery is None:
        raise WebhookDeliveryNotFound(f"No webhook delivery has id {delivery_id}.")
    return delivery


def list_endpoints() -> list[WebhookEndpoint]:
    """Every endpoint, oldest first."""
    return list(db.session.scalars(select(WebhookEndpoint).order_by(WebhookEndpoint.id)))


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
    from webapp.models import WebhookEvent

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


def health(endpoints: list[WebhookEndpoint]) -> dict[int, Health]:
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
        if next_retry is not None and next_retry.tzinfo is None:
            next_retry = next_retry.replace(tzinfo=UTC)
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


# --- changing -----------------------------------------------------------------------------------


def create_endpoint(body: dict, actor: User) -> WebhookEndpoint:
    """Register an endpoint from `{url, description?, event_types?, enabled?}`."""
    fields = _fields(body, partial=False)
    endpoint = WebhookEndpoint(
        url=fields["url"],
        description=fields.get("description", ""),
        event_types=fields.get("event_types", []),
        enabled=fields.get("enabled", True),
    )
    if not endpoint.enabled:
        endpoint.disabled_reason = f"Created disabled by {actor.email}."
        endpoint.disabled_at = utcnow()
    db.session.add(endpoint)
    db.session.commit()
    _audit(Action.WEBHOOK_ENDPOINT_CREATED, actor, endpoint, {"url": endpoint.url})
    return endpoint


def update_endpoint(endpoint: WebhookEndpoint, body: dict, actor: User) -> WebhookEndpoint:
    """Change any of url, description, event_types, enabled; re-enabling clears the failure run."""
    fields = _fields(body, partial=True)
    changed = {}
    for name in ("url", "description", "event_types"):
        if name in fields and fields[name] != getattr(endpoint, name):
            changed[name] = fields[name]
            setattr(endpoint, name, fields[name])
    if "enabled" in fields and fields["enabled"] != endpoint.enabled:
        changed["enabled"] = fields["enabled"]
        if fields["enabled"]:
            endpoint.enabled = True
            endpoint.disabled_reason = None
            endpoint.disabled_at = None
            endpoint.failing_since = None
        else:
            deliveries.disable(
                endpoint, f"Disabled by {actor.email} on {deliveries.when(utcnow())}."
            )
    db.session.commit()
    if "url" in changed:
        bulkhead.forget(bulkhead.target_key(endpoint.id, None))  # another receiver now
    if changed:
        _audit(Action.WEBHOOK_ENDPOINT_UPDATED, actor, endpoint, {"changed": changed})
    return endpoint


def delete_endpoint(endpoint: WebhookEndpoint, actor: User) -> None:
    """Delete an endpoint with its deliveries and their attempts."""
    endpoint_id, url = endpoint.id, endpoint.url
    db.session.delete(endpoint)
    db.session.commit()
    bulkhead.forget(bulkhead.target_key(endpoint_id, None))
    audit.record(
        Action.WEBHOOK_ENDPOINT_DELETED,
        actor=actor,
        entity_type="webhook_endpoint",
        entity_id=endpoint_id,
        details={"url": url},
    )


def rotate_secret(endpoint: WebhookEndpoint, actor: User) -> WebhookEndpoint:
    """A new secret signs from now on; the old one keeps signing too for 24 hours."""
    endpoint.sealed_previous_secret = endpoint.sealed_secret  # moved as sealed: nothing opened
    endpoint.previous_secret_expires_at = utcnow() + ROTATION_GRACE
    endpoint.secret = new_signing_secret()
    db.session.commit()
    _audit(
        Action.WEBHOOK_SECRET_ROTATED,
        actor,
        endpoint,
        {"previous_secret_expires_at": isoformat(endpoint.previous_secret_expires_at)},
    )
    return endpoint


def send_test(endpoint: WebhookEndpoint, actor: User) -> Delivery:
    """Send a `webhook.test` event to this endpoint alone (even if disabled or filtered out)."""
    event = events.new_event(
        EventType.WEBHOOK_TEST,
        {
            "endpoint_id": endpoint.id,
            "message": "A test event from Scoreline. If you can read this, delivery works.",
            "sent_by": actor.email,
        },
    )
    delivery = Delivery(event_id=event.id, endpoint_id=endpoint.id, auto_retry=False)
    db.session.add(delivery)
    db.session.flush()
    events.enqueue_after_commit(delivery, trigger=AttemptTrigger.MANUAL)
    db.session.commit()
    return delivery


def recover(endpoint: WebhookEndpoint, moment: datetime, actor: User) -> list[Delivery]:
    """Send again every failed or skipped delivery of the endpoint created since `moment`."""
    if not endpoint.enabled:
        raise WebhookEndpointDisabled("Enable the endpoint first; recovering sends to it at once.")
    found = list(
        db.session.scalars(
            select(Delivery)
            .where(
                Delivery.endpoint_id == endpoint.id,
                Delivery.status.in_([DeliveryStatus.FAILED, DeliveryStatus.SKIPPED]),
                Delivery.created_at >= moment,
            )
            .order_by(Delivery.id)
        )
    )
    for delivery in found:
        deliveries.redeliver(delivery)
    db.session.commit()
    _audit(
        Action.WEBHOOK_RECOVERED,
        actor,
        endpoint,
        {"since": isoformat(moment), "deliveries": len(found)},
    )
    return found


def redeliver(delivery: Delivery, actor: User) -> Delivery:
    """Send one delivery again now (same webhook-id and body); audited."""
    deliveries.redeliver(delivery)
    db.session.commit()
    audit.record(
        Action.WEBHOOK_REDELIVERED,
        actor=actor,
        entity_type="webhook_delivery",
        entity_id=delivery.id,
        details={"webhook_id": delivery.event.webhook_id, "endpoint_id": delivery.endpoint_id},
    )
    return delivery


def register_callback(assessment: Assessment, url: object, actor: User) -> AssessmentCallback:
    """Register (or replace) the callback URL of an assessment; audited."""
    checked = validate_url(url, address_guard(), field="webhook_url")
    callback = db.session.scalar(
        select(AssessmentCallback).where(AssessmentCallback.assessment_id == assessment.id)
    )
    if callback is None:
        callback = AssessmentCallback(assessment_id=assessment.id)
        db.session.add(callback)
    callback.url = checked
    callback.registered_at = utcnow()
    callback.registered_by_id = actor.id
    callback.disabled_at = None
    callback.disabled_reason = None
    db.session.commit()
    bulkhead.forget(bulkhead.target_key(None, callback.id))  # maybe another receiver now
    audit.record(
        Action.ASSESSMENT_CALLBACK_REGISTERED,
        actor=actor,
        entity_type="assessment",
        entity_id=assessment.id,
        details={"webhook_url": checked},
    )
    return callback


def callbacks_of(user: User) -> list[AssessmentCallback]:
    """The callbacks registered on the user's assessments, newest first."""
    return list(
        db.session.scalars(
            select(AssessmentCallback)
            .join(Assessment, Assessment.id == AssessmentCallback.assessment_id)
            .where(Assessment.user_id == user.id)
            .order_by(AssessmentCallback.registered_at.desc())
        )
    )


# --- input --------------------------------------------------------------------------------------


def parse_since(value: object) -> datetime:
    """An ISO 8601 moment in the past (no zone means UTC); ValidationFailed otherwise."""
    moment = parse_moment(value, "since")
    if moment > utcnow():
        raise invalid("since", "must not be in the future")
    return moment


def _fields(body: dict, *, partial: bool) -> dict:
    """Validated endpoint fields: InvalidWebhookUrl (422) for the URL, ValidationFailed else."""
    unknown = set(body) - {"url", "description", "event_types", "enabled"}
    errors = [{"field": name, "message": "is not a field of an endpoint"} for name in unknown]
    fields: dict = {}
    if "description" in body:
        description = body["description"]
        if description is None:
            description = ""
        if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
            errors.append(
                {
                    "field": "description",
                    "message": f"must be a string of at most {MAX_DESCRIPTION} characters",
                }
            )
        else:
            fields["description"] = description.strip()
    if "event_types" in body:
        value = body["event_types"]
        if value is None:
            value = []
        valid = {t.value for t in EventType}
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            errors.append({"field": "event_types", "message": "must be a list of event types"})
        elif bad := [v for v in value if v not in valid]:
            errors.append(
                {"field": "event_types", "message": f"unknown {bad}; valid: {sorted(valid)}"}
            )
        else:
            fields["event_types"] = [t.value for t in EventType if t.value in value]
    if "enabled" in body:
        if not isinstance(body["enabled"], bool):
            errors.append({"field": "enabled", "message": "must be true or false"})
        else:
            fields["enabled"] = body["enabled"]
    if errors:
        raise ValidationFailed("Some fields are invalid.", errors=errors)
    if "url" in body or not partial:
        fields["url"] = validate_url(body.get("url"), address_guard())
    return fields


def _audit(action: Action, actor: User, endpoint: WebhookEndpoint, details: dict) -> None:
    audit.record(
        action, actor=actor, entity_type="webhook_endpoint", entity_id=endpoint.id, details=details
    )
