"""Webhooks: endpoints and their deliveries (admins), and per-assessment callbacks (owners)."""

from __future__ import annotations

from flask import make_response, url_for
from flask_login import current_user

from webapp.api.blueprint import admin_only, api_bp, problem_response
from webapp.api.schemas import (
    AssessmentPath,
    CallbackOut,
    CallbackRegistration,
    Deliveries,
    DeliveryFilter,
    DeliveryOut,
    DeliveryPath,
    EndpointChange,
    EndpointOut,
    EndpointPath,
    Endpoints,
    NewEndpoint,
    Recovered,
    Recovery,
)
from webapp.services.assessments import get_assessment
from webapp.services.webhooks import callbacks, delivery_log
from webapp.services.webhooks import endpoints as service
from webapp.services.webhooks.health import endpoint_health

ADMINS_ONLY = problem_response("FORBIDDEN: admins only.")
NO_ENDPOINT = problem_response("WEBHOOK_ENDPOINT_NOT_FOUND; FORBIDDEN for students.")
NO_DELIVERY = problem_response("WEBHOOK_DELIVERY_NOT_FOUND; FORBIDDEN for students.")
# What a schema cannot predict: where a host name resolves.
BAD_URL = problem_response(
    "INVALID_WEBHOOK_URL: not http(s), carries credentials, or reaches a private, loopback, "
    "link-local or reserved address (outside WEBHOOK_ALLOWED_CIDRS)."
)


def _endpoint_out(endpoint, health=None) -> dict:
    """An endpoint with its health at a glance."""
    health = health or endpoint_health([endpoint])[endpoint.id]
    return EndpointOut.of(endpoint, health).model_dump(mode="json")


def _delivery_out(delivery, *, with_attempts: bool) -> dict:
    """A delivery; its attempts only when asked (they can be many)."""
    exclude = None if with_attempts else {"attempts"}
    body = DeliveryOut.of(delivery, with_attempts=with_attempts)
    return body.model_dump(mode="json", exclude=exclude)


@api_bp.get("/webhook-endpoints", responses={200: Endpoints, 403: ADMINS_ONLY})
@admin_only
def list_webhook_endpoints():
    """Every endpoint with its health (admins)."""
    endpoints = service.list_endpoints()
    healths = endpoint_health(endpoints)
    return {"endpoints": [_endpoint_out(e, healths[e.id]) for e in endpoints]}


@api_bp.post("/webhook-endpoints", responses={201: EndpointOut, 403: ADMINS_ONLY, 422: BAD_URL})
@admin_only
def create_webhook_endpoint(body: NewEndpoint):
    """Register an endpoint (admins): 201 with its secret; `event_types` empty means every event."""
    endpoint = service.create_endpoint(body.model_dump(exclude_unset=True), current_user)
    response = make_response(_endpoint_out(endpoint), 201)
    response.headers["Location"] = url_for("api.show_webhook_endpoint", endpoint_id=endpoint.id)
    return response


@api_bp.get("/webhook-endpoints/<int:endpoint_id>", responses={200: EndpointOut, 404: NO_ENDPOINT})
@admin_only
def show_webhook_endpoint(path: EndpointPath):
    """One endpoint (admins)."""
    return _endpoint_out(service.get_endpoint(path.endpoint_id))


@api_bp.patch(
    "/webhook-endpoints/<int:endpoint_id>",
    responses={200: EndpointOut, 404: NO_ENDPOINT, 422: BAD_URL},
)
@admin_only
def update_webhook_endpoint(path: EndpointPath, body: EndpointChange):
    """Change url, description, event_types or enabled (admins)."""
    endpoint = service.get_endpoint(path.endpoint_id)
    changes = body.model_dump(exclude_unset=True)
    return _endpoint_out(service.update_endpoint(endpoint, changes, current_user))


@api_bp.delete(
    "/webhook-endpoints/<int:endpoint_id>",
    responses={204: None, 404: NO_ENDPOINT},
)
@admin_only
def delete_webhook_endpoint(path: EndpointPath):
    """Delete an endpoint and its delivery log (admins): 204."""
    service.delete_endpoint(service.get_endpoint(path.endpoint_id), current_user)
    return "", 204


@api_bp.post(
    "/webhook-endpoints/<int:endpoint_id>/rotate-secret",
    responses={200: EndpointOut, 404: NO_ENDPOINT},
)
@admin_only
def rotate_webhook_secret(path: EndpointPath):
    """A new secret; the previous one also signs for 24 hours (admins)."""
    endpoint = service.rotate_secret(service.get_endpoint(path.endpoint_id), current_user)
    return _endpoint_out(endpoint)


@api_bp.post(
    "/webhook-endpoints/<int:endpoint_id>/test",
    responses={202: DeliveryOut, 404: NO_ENDPOINT},
)
@admin_only
def test_webhook_endpoint(path: EndpointPath):
    """Send a `webhook.test` event to this endpoint (admins): 202 with the delivery to poll."""
    delivery = service.send_test(service.get_endpoint(path.endpoint_id), current_user)
    return _accepted(delivery)


@api_bp.post(
    "/webhook-endpoints/<int:endpoint_id>/recover",
    responses={202: Recovered, 404: NO_ENDPOINT},
)
@admin_only
def recover_webhook_endpoint(path: EndpointPath, body: Recovery):
    """Send again every failed or skipped delivery since `since` (admins): 202 with how many."""
    endpoint = service.get_endpoint(path.endpoint_id)
    found = service.recover(endpoint, body.since, current_user)
    return Recovered(
        endpoint_id=endpoint.id,
        since=body.since,
        recovered=len(found),
        delivery_ids=[d.id for d in found],
    ).model_dump(mode="json"), 202


@api_bp.get(
    "/webhook-endpoints/<int:endpoint_id>/deliveries",
    responses={200: Deliveries, 404: NO_ENDPOINT},
)
@admin_only
def list_webhook_deliveries(path: EndpointPath, query: DeliveryFilter):
    """The endpoint's deliveries, newest first, 100 a page (admins)."""
    endpoint = service.get_endpoint(path.endpoint_id)
    found = delivery_log.list_deliveries(
        endpoint, status=query.status, event_type=query.event_type, before_id=query.before
    )
    return {
        "endpoint_id": endpoint.id,
        "deliveries": [_delivery_out(d, with_attempts=False) for d in found],
        "count": len(found),
        "next_before": found[-1].id if len(found) == delivery_log.DELIVERY_PAGE else None,
    }


@api_bp.get("/webhook-deliveries/<int:delivery_id>", responses={200: DeliveryOut, 404: NO_DELIVERY})
@admin_only
def show_webhook_delivery(path: DeliveryPath):
    """One delivery with its payload and every attempt (admins)."""
    return _delivery_out(delivery_log.get_delivery(path.delivery_id), with_attempts=True)


@api_bp.post(
    "/webhook-deliveries/<int:delivery_id>/redeliver",
    responses={202: DeliveryOut, 404: NO_DELIVERY},
)
@admin_only
def redeliver_webhook_delivery(path: DeliveryPath):
    """Send a delivery again now, with the same webhook-id and body (admins): 202."""
    delivery = delivery_log.redeliver(delivery_log.get_delivery(path.delivery_id), current_user)
    return _accepted(delivery)


def _accepted(delivery):
    """202 pointing at the delivery to poll."""
    response = make_response(_delivery_out(delivery, with_attempts=True), 202)
    response.headers["Location"] = url_for("api.show_webhook_delivery", delivery_id=delivery.id)
    return response


@api_bp.post(
    "/assessments/<int:assessment_id>/webhook",
    responses={
        201: CallbackOut,
        404: problem_response("ASSESSMENT_NOT_FOUND, or FORBIDDEN for another account's."),
        422: BAD_URL,
    },
)
def register_assessment_webhook(path: AssessmentPath, body: CallbackRegistration):
    """Deliver every event of this assessment to `webhook_url` too, signed with the owner's
    secret (an integration's student's: the integration's); needs the `webhooks` scope.

    201; 422 INVALID_WEBHOOK_URL for a bad or forbidden URL."""
    assessment = get_assessment(path.assessment_id, current_user)
    callback = callbacks.register_callback(assessment, body.webhook_url, current_user)
    return CallbackOut(
        assessment_id=assessment.id,
        webhook_url=callback.url,
        registered_at=callback.registered_at,
        signing_secret=assessment.user.signer.signing_secret,
    ).model_dump(mode="json"), 201
