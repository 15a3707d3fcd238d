"""Webhook endpoints: registering, changing, deleting, testing and recovering them.

Every change is audited after it commits; routes and pages call these and only render.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from webapp.errors import ValidationFailed
from webapp.extensions import db
from webapp.models import AttemptTrigger, Delivery, DeliveryStatus, User, WebhookEndpoint
from webapp.models.base import isoformat, utcnow
from webapp.request_values import invalid, parse_moment
from webapp.scoring.vocabulary import EventType
from webapp.services import audit
from webapp.services.audit import Action
from webapp.services.webhooks import bulkhead, events, failures, recovery, relay, signing_secrets
from webapp.services.webhooks.exceptions import WebhookEndpointDisabled, WebhookEndpointNotFound
from webapp.services.webhooks.url_guard import configured_guard, validate_url

MAX_DESCRIPTION = 500


def get_endpoint(endpoint_id: int) -> WebhookEndpoint:
    """The endpoint, or WebhookEndpointNotFound (404)."""
    endpoint = db.session.get(WebhookEndpoint, endpoint_id)
    if endpoint is None:
        raise WebhookEndpointNotFound(f"No webhook endpoint has id {endpoint_id}.")
    return endpoint


def list_endpoints() -> list[WebhookEndpoint]:
    """Every endpoint, oldest first."""
    return list(db.session.scalars(select(WebhookEndpoint).order_by(WebhookEndpoint.id)))


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
            failures.disable(endpoint, f"Disabled by {actor.email} on {failures.when(utcnow())}.")
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
    signing_secrets.rotate(endpoint, actor)
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
    relay.enqueue_after_commit(delivery, trigger=AttemptTrigger.MANUAL)
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
        recovery.redeliver(delivery)
    db.session.commit()
    _audit(
        Action.WEBHOOK_RECOVERED,
        actor,
        endpoint,
        {"since": isoformat(moment), "deliveries": len(found)},
    )
    return found


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
        fields["url"] = validate_url(body.get("url"), configured_guard())
    return fields


def _audit(action: Action, actor: User, endpoint: WebhookEndpoint, details: dict) -> None:
    audit.record(
        action, actor=actor, entity_type="webhook_endpoint", entity_id=endpoint.id, details=details
    )
