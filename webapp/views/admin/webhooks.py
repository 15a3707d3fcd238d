"""Admin: webhook endpoints with their health, secrets, test events, delivery log and attempts."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from flask import current_app, flash, make_response, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import DateTimeLocalField, SelectMultipleField, StringField, TextAreaField, widgets
from wtforms.fields.choices import SelectChoice
from wtforms.validators import InputRequired, Length

from webapp.errors import ScorelineError, ValidationFailed
from webapp.fast_polls import STOP_POLLING
from webapp.models import DeliveryStatus, ErrorClass
from webapp.models.base import utcnow
from webapp.request_values import parse_id
from webapp.scoring.vocabulary import EVENT_TYPE_DESCRIPTIONS, EventType
from webapp.services.webhooks import delivery_log
from webapp.services.webhooks import endpoints as service
from webapp.services.webhooks.health import endpoint_health
from webapp.views.admin import bp
from webapp.views.presentation import seconds_words

# The types an endpoint can subscribe to (test events go to the endpoint they test, always).
SUBSCRIBABLE = [t for t in EventType if t != EventType.WEBHOOK_TEST]
DELIVERY_STATUS_WORDS: dict[DeliveryStatus, str] = {
    DeliveryStatus.PENDING: "Pending",
    DeliveryStatus.RETRYING: "Retrying",
    DeliveryStatus.SUCCEEDED: "Delivered",
    DeliveryStatus.FAILED: "Failed",
    DeliveryStatus.SKIPPED: "Skipped",
}
ERROR_WORDS: dict[ErrorClass, str] = {
    ErrorClass.TIMEOUT: "Timed out",
    ErrorClass.DNS: "Host name did not resolve",
    ErrorClass.CONNECTION: "Could not connect",
    ErrorClass.TLS: "TLS handshake or certificate failed",
    ErrorClass.BLOCKED: "Blocked: private or reserved address",
    ErrorClass.REDIRECT: "Redirect (not followed)",
}
# The delivery log re-polls this often while a delivery is about to be tried; a retry minutes
# away is polled less often (up to SLOWEST_POLL_SECONDS), since nothing can change before it.
POLL_SECONDS = 2
SLOWEST_POLL_SECONDS = 60


def poll_seconds(deliveries, now: datetime) -> int:
    """How soon the log should look again: soon while an attempt is due, later when the next
    retry is far away (half the wait, between POLL_SECONDS and SLOWEST_POLL_SECONDS)."""
    waiting = [d for d in deliveries if not DeliveryStatus(d.status).finished]
    if any(d.next_attempt_at is None or d.status == DeliveryStatus.PENDING for d in waiting):
        return POLL_SECONDS
    if not waiting:
        return POLL_SECONDS
    soonest = min(d.next_attempt_at for d in waiting)
    wait = (soonest - now).total_seconds()
    return int(min(SLOWEST_POLL_SECONDS, max(POLL_SECONDS, wait / 2)))


def retry_schedule_words() -> str:
    """The retry schedule in words: `5 s, 5 min, 30 min, ...`."""
    schedule = current_app.config["WEBHOOK_RETRY_SCHEDULE"]
    return ", ".join(seconds_words(seconds) for seconds in schedule)


class EndpointForm(FlaskForm):
    """An endpoint's URL, description and event filter (none ticked = every event)."""

    url = StringField("Endpoint URL", validators=[InputRequired(), Length(max=2048)])
    description = TextAreaField("Description", validators=[Length(max=service.MAX_DESCRIPTION)])
    event_types = SelectMultipleField(
        "Events to send",
        choices=[SelectChoice(t.value) for t in SUBSCRIBABLE],
        option_widget=widgets.CheckboxInput(),
        widget=widgets.ListWidget(prefix_label=False),
    )

    def body(self) -> dict:
        """The service's input."""
        return {
            "url": (self.url.data or "").strip(),
            "description": self.description.data or "",
            "event_types": list(self.event_types.data or []),
        }


class RecoverForm(FlaskForm):
    """Re-send failed and skipped deliveries since a moment (UTC)."""

    # Sent as UTC; static/js/local-time.js lets people type their own time and converts it.
    since = DateTimeLocalField(
        "Since (UTC)",
        format="%Y-%m-%dT%H:%M",
        validators=[InputRequired()],
        render_kw={"data-utc": ""},
    )


class ActionForm(FlaskForm):
    """A button that changes something: CSRF only."""


@bp.context_processor
def webhook_words() -> dict:
    """Names and wording the webhook pages share."""
    return {
        "EVENT_TYPE_DESCRIPTIONS": EVENT_TYPE_DESCRIPTIONS,
        "DELIVERY_STATUS_WORDS": DELIVERY_STATUS_WORDS,
        "ERROR_WORDS": ERROR_WORDS,
        "WEBHOOK_POLL_SECONDS": POLL_SECONDS,
        "to_the_second": to_the_second,
        "retry_schedule_words": retry_schedule_words,
    }


def to_the_second(moment) -> str:
    """`24 Nov 2025, 14:03:05 UTC`: attempts happen seconds apart."""
    return moment.astimezone(UTC).strftime("%-d %b %Y, %H:%M:%S UTC") if moment else ""


@bp.get("/webhooks")
def webhooks():
    """Every endpoint with its health at a glance, banners for disabled ones, and the add form."""
    return _index(EndpointForm(formdata=None))


def _index(form: EndpointForm, status: int = 200):
    endpoints = service.list_endpoints()
    return render_template(
        "admin/webhooks.html",
        endpoints=endpoints,
        health=endpoint_health(endpoints),
        form=form,
        subscribable=SUBSCRIBABLE,
    ), status


@bp.post("/webhooks")
def create_webhook():
    """Add an endpoint; a bad URL re-renders the form saying why."""
    form = EndpointForm()
    if not form.validate_on_submit():
        flash("Check the form: " + _form_errors(form), "error")
        return _index(form, 422)
    try:
        endpoint = service.create_endpoint(form.body(), current_user)
    except ScorelineError as exc:
        form.url.errors = [exc.detail]
        flash(f"Endpoint not added: {exc.detail}", "error")
        return _index(form, 422)
    flash("Endpoint added. Send a test event to check it receives and verifies.", "success")
    return redirect(url_for("admin.webhook", endpoint_id=endpoint.id))


@bp.get("/webhooks/<int:endpoint_id>")
def webhook(endpoint_id: int):
    """One endpoint: settings, secret, actions and its delivery log."""
    endpoint = service.get_endpoint(endpoint_id)
    return _detail(endpoint, EndpointForm(formdata=None, obj=endpoint))


def _detail(endpoint, form: EndpointForm, status: int = 200):
    body = render_template(
        "admin/webhooks_endpoint.html",
        endpoint=endpoint,
        health=endpoint_health([endpoint])[endpoint.id],
        form=form,
        recover_form=RecoverForm(formdata=None),
        subscribable=SUBSCRIBABLE,
        **_log(endpoint),
    )
    response = make_response(body, status)
    response.headers["Cache-Control"] = "no-store"  # the page holds the signing secret
    return response


def _log(endpoint) -> dict:
    """The delivery log of an endpoint, filtered by ?status= and ?event_type=."""
    filters = {
        "status": request.args.get("status", ""),
        "event_type": request.args.get("event_type", ""),
    }
    try:
        status = delivery_log.parse_status_filter(filters["status"])
        event_type = delivery_log.parse_event_type_filter(filters["event_type"])
    except ScorelineError:
        status = event_type = None
        filters = {"status": "", "event_type": ""}
    try:
        before = parse_id(request.args.get("before"), "before")
    except ValidationFailed:
        before = None  # a page link no one wrote: show the newest, as for a bad filter
    found = delivery_log.list_deliveries(
        endpoint, status=status, event_type=event_type, before_id=before
    )
    chosen = {name: value for name, value in filters.items() if value}
    older = None
    if len(found) == delivery_log.DELIVERY_PAGE:
        older = url_for("admin.webhook", endpoint_id=endpoint.id, before=found[-1].id, **chosen)
    return {
        "deliveries": found,
        "durations": delivery_log.last_durations([d.id for d in found]),
        "poll_every": poll_seconds(found, utcnow()),
        "filters": filters,
        "waiting": any(not DeliveryStatus(d.status).finished for d in found),
        "poll_url": url_for(
            "admin.webhook_deliveries",
            endpoint_id=endpoint.id,
            **({"before": before} if before else {}),
            **chosen,
        ),
        "older_url": older,
    }


@bp.get("/webhooks/<int:endpoint_id>/deliveries")
def webhook_deliveries(endpoint_id: int):
    """The delivery log partial (and, out of band, the health), polled while a delivery in it
    is waiting; 286 stops the poll."""
    endpoint = service.get_endpoint(endpoint_id)
    context = _log(endpoint)
    body = render_template(
        "admin/_webhook_deliveries.html",
        endpoint=endpoint,
        health=endpoint_health([endpoint])[endpoint.id],
        health_oob=True,
        **context,
    )
    response = make_response(body, 200 if context["waiting"] else STOP_POLLING)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/webhooks/<int:endpoint_id>")
def update_webhook(endpoint_id: int):
    """Save URL, description and event filter."""
    endpoint = service.get_endpoint(endpoint_id)
    form = EndpointForm()
    if not form.validate_on_submit():
        flash("Check the form: " + _form_errors(form), "error")
        return _detail(endpoint, form, 422)
    try:
        service.update_endpoint(endpoint, form.body(), current_user)
    except ScorelineError as exc:
        form.url.errors = [exc.detail]
        flash(f"Not saved: {exc.detail}", "error")
        return _detail(endpoint, form, 422)
    flash("Endpoint saved.", "success")
    return redirect(url_for("admin.webhook", endpoint_id=endpoint.id))


@bp.post("/webhooks/<int:endpoint_id>/enabled")
def toggle_webhook(endpoint_id: int):
    """Enable (clearing the reason it was disabled) or disable an endpoint."""
    endpoint = service.get_endpoint(endpoint_id)
    if _checked(ActionForm()):
        enable = request.form.get("enabled") == "1"
        service.update_endpoint(endpoint, {"enabled": enable}, current_user)
        flash(
            "Endpoint enabled. Recover what it missed below."
            if enable
            else "Endpoint disabled; its events are kept as skipped deliveries.",
            "success",
        )
    return redirect(url_for("admin.webhook", endpoint_id=endpoint.id))


@bp.post("/webhooks/<int:endpoint_id>/rotate")
def rotate_webhook_secret(endpoint_id: int):
    """New signing secret; the old one keeps signing for 24 hours."""
    endpoint = service.get_endpoint(endpoint_id)
    if _checked(ActionForm()):
        service.rotate_secret(endpoint, current_user)
        flash(
            "Secret rotated. For 24 hours every delivery carries two signatures, one per secret: "
            "switch your receiver to the new secret within that time.",
            "success",
        )
    return redirect(url_for("admin.webhook", endpoint_id=endpoint.id, _anchor="secret"))


@bp.post("/webhooks/<int:endpoint_id>/test")
def test_webhook(endpoint_id: int):
    """Send a `webhook.test` event now."""
    endpoint = service.get_endpoint(endpoint_id)
    if _checked(ActionForm()):
        delivery = service.send_test(endpoint, current_user)
        flash(f"Test event {delivery.event.webhook_id} sent; the log below updates.", "success")
    return redirect(url_for("admin.webhook", endpoint_id=endpoint.id, _anchor="deliveries"))


@bp.post("/webhooks/<int:endpoint_id>/recover")
def recover_webhook(endpoint_id: int):
    """Re-send every failed or skipped delivery since the given moment."""
    endpoint = service.get_endpoint(endpoint_id)
    form = RecoverForm()
    if not form.validate_on_submit():
        flash("Give the moment to recover from, as a date and time (UTC).", "error")
    else:
        try:
            since = service.parse_since(form.since.data.replace(tzinfo=UTC).isoformat())
            found = service.recover(endpoint, since, current_user)
        except ScorelineError as exc:
            flash(f"Nothing recovered: {exc.detail}", "error")
        else:
            count = len(found)
            flash(f"Sending {count} deliver{'y' if count == 1 else 'ies'} again.", "success")
    return redirect(url_for("admin.webhook", endpoint_id=endpoint.id, _anchor="deliveries"))


@bp.post("/webhooks/<int:endpoint_id>/delete")
def delete_webhook(endpoint_id: int):
    """Delete the endpoint and its log."""
    endpoint = service.get_endpoint(endpoint_id)
    if _checked(ActionForm()):
        url = endpoint.url
        service.delete_endpoint(endpoint, current_user)
        flash(f"Endpoint {url} deleted with its delivery log.", "success")
        return redirect(url_for("admin.webhooks"))
    return redirect(url_for("admin.webhook", endpoint_id=endpoint.id))


@bp.get("/webhooks/deliveries/<int:delivery_id>")
def webhook_delivery(delivery_id: int):
    """A delivery: its payload and every attempt, request and response."""
    delivery = delivery_log.get_delivery(delivery_id)
    return render_template(
        "admin/webhooks_delivery.html",
        delivery=delivery,
        payload=json.dumps(delivery.event.payload(), indent=2, ensure_ascii=False),
        waiting=not DeliveryStatus(delivery.status).finished,
        poll_every=poll_seconds([delivery], utcnow()),
    )


@bp.post("/webhooks/deliveries/<int:delivery_id>/redeliver")
def redeliver_webhook(delivery_id: int):
    """Send the delivery again now, with the same webhook-id."""
    delivery = delivery_log.get_delivery(delivery_id)
    if _checked(ActionForm()):
        delivery_log.redeliver(delivery, current_user)
        flash("Sending it again now, with the same webhook-id.", "success")
    return redirect(url_for("admin.webhook_delivery", delivery_id=delivery.id))


def _checked(form: FlaskForm) -> bool:
    """True when the form's CSRF token is good; otherwise say so."""
    if form.validate_on_submit():
        return True
    flash("The form expired; please try again.", "error")
    return False


def _form_errors(form: FlaskForm) -> str:
    """Every field error in one sentence."""
    return "; ".join(
        f"{getattr(form, name).label.text}: {', '.join(errors)}"
        for name, errors in form.errors.items()
    )
