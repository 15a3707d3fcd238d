"""What can go wrong managing webhooks, as problem+json errors."""

from __future__ import annotations

from webapp.errors import ScorelineError


class WebhookEndpointNotFound(ScorelineError):
    status, code, title = 404, "WEBHOOK_ENDPOINT_NOT_FOUND", "Webhook endpoint not found"


class WebhookDeliveryNotFound(ScorelineError):
    status, code, title = 404, "WEBHOOK_DELIVERY_NOT_FOUND", "Webhook delivery not found"


class WebhookEndpointDisabled(ScorelineError):
    status, code, title = 409, "WEBHOOK_ENDPOINT_DISABLED", "Webhook endpoint is disabled"
