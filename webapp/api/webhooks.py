"""Webhooks: endpoints and their deliveries (admins), and per-assessment callbacks (owners)."""

from __future__ import annotations

from flask import make_response, request, url_for
from flask_login import current_user

from webapp.api import api_bp, json_body, require_admin
from webapp.models.base import isoformat
from webapp.request_values import parse_id
from webapp.services.assessments import get_assessment
from webapp.services.webhooks import endpoints as service


def _endpoint_body(endpoint, health=None) -> dict:
    """An endpoint with its health at a glance."""
    health = health or service.health([endpoint])[endpoint.id]
    return {**endpoint.to_dict(), "health": health.to_dict()}


@api_bp.get("/webhook-endpoints")
def list_webhook_endpoints():
    """Every endpoint with its health."""
    require_admin()
    endpoints = service.list_endpoints()
    healths = service.health(endpoints)
    return {"endpoints": [_endpoint_body(e, healths[e.id]) for e in endpoints]}


@api_bp.post("/webhook-endpoints")
def create_webhook_endpoint():
    """Register an endpoint -> 201 with its secret; 422 INVALID_WEBHOOK_URL for a bad URL."""
    require_admin()
    endpoint = service.create_endpoint(json_body(), current_user)
    response = make_response(_endpoint_body(endpoint), 201)
    response.headers["Location"] = url_for("api.show_webhook_endpoint", endpoint_id=endpoint.id)
    return response


@api_bp.get("/webhook-endpoints/<int:endpoint_id>")
def show_webhook_endpoint(endpoint_id: int):
    """One endpoint."""
    require_admin()
    return _endpoint_body(service.get_endpoint(endpoint_id))


@api_bp.patch("/webhook-endpoints/<int:endpoint_id>")
def update_webhook_endpoint(endpoint_id: int):
    """Change url, description, event_types or enabled."""
    require_admin()
    endpoint = service.get_endpoint(endpoint_id)
    return _endpoint_body(service.update_endpoint(endpoint, json_body(), current_user))


@api_bp.delete("/webhook-endpoints/<int:endpoint_id>")
def delete_webhook_endpoint(endpoint_id: int):
    """Delete an endpoint and its delivery log -> 204."""
    require_admin()
    service.delete_endpoint(service.get_endpoint(endpoint_id), current_user)
    return "", 204


@api_bp.post("/webhook-endpoints/<int:endpoint_id>/rotate-secret")
def rotate_webhook_secret(endpoint_id: int):
    """A new secret; the previous one also signs for 24 hours."""
    require_admin()
    endpoint = service.rotate_secret(service.get_endpoint(endpoint_id), current_user)
    return _endpoint_body(endpoint)


@api_bp.post("/webhook-endpoints/<int:endpoint_id>/test")
def test_webhook_endpoint(endpoint_id: int):
    """Send a `webhook.test` event to this endpoint -> 202 with the delivery to follow."""
    require_admin()
    delivery = service.send_test(service.get_endpoint(endpoint_id), current_user)
    return _accepted(delivery)


@api_bp.post("/webhook-endpoints/<int:endpoint_id>/recover")
def recover_webhook_endpoint(endpoint_id: int):
    """Send again every failed or skipped delivery since `since` -> 202 with how many."""
    require_admin()
    endpoint = service.get_endpoint(endpoint_id)
    since = service.parse_since(json_body().get("since"))
    found = service.recover(endpoint, since, current_user)
    return {
        "endpoint_id": endpoint.id,
        "since": isoformat(since),
        "recovered": len(found),
        "delivery_ids": [d.id for d in found],
    }, 202


@api_bp.get("/webhook-endpoints/<int:endpoint_id>/deliveries")
def list_webhook_deliveries(endpoint_id: int):
    """The endpoint's deliveries, newest first; ?status=&event_type=&before=<id> (100 a page)."""
    require_admin()
    endpoint = service.get_endpoint(endpoint_id)
    before = parse_id(request.args.get("before"), "before")
    found = service.list_deliveries(
        endpoint,
        status=service.parse_status_filter(request.args.get("status")),
        event_type=service.parse_event_type_filter(request.args.get("event_type")),
        before_id=before,
    )
    body = {"endpoint_id": endpoint.id, "deliveries": [d.to_dict() for d in found]}
    body["count"] = len(found)
    body["next_before"] = found[-1].id if len(found) == service.DELIVERY_PAGE else None
    return body


@api_bp.get("/webhook-deliveries/<int:delivery_id>")
def show_webhook_delivery(delivery_id: int):
    """One delivery with its payload and every attempt."""
    require_admin()
    return service.get_delivery(delivery_id).to_dict(with_attempts=True)


@api_bp.post("/webhook-deliveries/<int:delivery_id>/redeliver")
def redeliver_webhook_delivery(delivery_id: int):
    """Send a delivery again now, with the same webhook-id and body -> 202."""
    require_admin()
    delivery = service.redeliver(service.get_delivery(delivery_id), current_user)
    return _accepted(delivery)


def _accepted(delivery):
    """202 pointing at the delivery to poll."""
    response = make_response(delivery.to_dict(with_attempts=True), 202)
    response.headers["Location"] = url_for("api.show_webhook_delivery", delivery_id=delivery.id)
    return response


@api_bp.post("/assessments/<int:assessment_id>/webhook")
def register_assessment_webhook(assessment_id: int):
    """Deliver every event of this assessment to `webhook_url` too, signed with the owner's
    secret -> 201; 422 INVALID_WEBHOOK_URL for a bad or forbidden URL."""
    assessment = get_assessment(assessment_id, current_user)
    body = json_body()
    callback = service.register_callback(assessment, body.get("webhook_url"), current_user)
    return {
        "assessment_id": assessment.id,
        "webhook_url": callback.url,
        "registered_at": isoformat(callback.registered_at),
        "signing_secret": assessment.user.signer.signing_secret,
    }, 201
