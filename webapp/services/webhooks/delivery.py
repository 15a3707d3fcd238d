"""Delivering: attempts, their log, the retry schedule, auto-disable, redeliver, recover.

A delivery job makes exactly one HTTP attempt per delivery it owns (an event's fan-out to every
endpoint is one job) and never sleeps: a failed delivery gets its next attempt scheduled with
RQ's scheduler (`enqueue_at`), in a job of its own. No database transaction stays open while
requests are in flight.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

import redis
import requests
import urllib3
from flask import current_app
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from sqlalchemy import bindparam, select
from sqlalchemy.orm import joinedload

from webapp import metrics
from webapp.extensions import db
from webapp.models import (
    Assessment,
    AssessmentCallback,
    Attempt,
    AttemptTrigger,
    Delivery,
    DeliveryStatus,
    Entity,
    ErrorClass,
    WebhookEndpoint,
)
from webapp.models.base import isoformat, utcnow
from webapp.queues import get_redis, popped_and_abandoned
from webapp.services import history
from webapp.services.webhooks import bulkhead, events, signing
from webapp.services.webhooks.url_guard import (
    AddressGuard,
    BlockedAddress,
    InvalidWebhookUrl,
    parse_url,
    shared_session,
)

log = logging.getLogger(__name__)

RESPONSE_BODY_LIMIT = 4096
SEND_THREADS = 8  # a job's requests to different targets go out side by side
JITTER = 0.2  # each scheduled delay is scaled by a random factor in [0.8, 1.2]
RETRY_AFTER_CAP = 24 * 3600  # a receiver's Retry-After is honoured up to a day
# A pending delivery whose job is missing this long after it was due is re-enqueued.
WATCHDOG_GRACE = timedelta(seconds=30)
_ALIVE = {JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED, JobStatus.STARTED}


@dataclass
class Outcome:
    """What one HTTP attempt did, before anything is written."""

    url: str
    started_at: datetime
    request_headers: dict[str, str]
    duration_ms: int = 0
    status: int | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    body: str | None = None
    error: ErrorClass | None = None
    detail: str | None = None

    @property
    def succeeded(self) -> bool:
        """2xx, and nothing else, is success."""
        return self.error is None and self.status is not None and 200 <= self.status < 300

    def retry_after(self) -> float | None:
        """The receiver's Retry-After in seconds (delta or HTTP date), if it sent a valid one."""
        raw = (self.response_headers.get("retry-after") or "").strip()
        if not raw:
            return None
        if raw.isdigit():
            return float(raw)
        try:
            moment = parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return max(0.0, (moment - utcnow()).total_seconds())

    def summary(self) -> str:
        """The attempt in a few words, for lists and reasons."""
        if self.error == ErrorClass.REDIRECT:
            return f"HTTP {self.status}, redirect not followed"
        if self.error is not None:
            return f"{self.error}: {self.detail}" if self.detail else str(self.error)
        return f"HTTP {self.status}"


# --- sending (no database) ---------------------------------------------------------------------


def send(url: str, body: bytes, headers: dict[str, str], *, timeout: float, guard: AddressGuard):
    """POST the body once: no redirects, no proxies, only addresses the guard checked."""
    outcome = Outcome(url=url, started_at=utcnow(), request_headers=signing.redacted(headers))
    started = time.monotonic()
    try:
        parse_url(url)
        http = shared_session(guard)
        response = http.post(
            url,
            data=body,
            headers=headers,
            timeout=(timeout, timeout),
            allow_redirects=False,
            stream=True,
        )
        with response:
            outcome.status = response.status_code
            outcome.response_headers = {k.lower(): v for k, v in response.headers.items()}
            outcome.body = _read_body(response)
    except (BlockedAddress, InvalidWebhookUrl) as exc:
        outcome.error, outcome.detail = ErrorClass.BLOCKED, getattr(exc, "detail", str(exc))
    except requests.exceptions.SSLError as exc:
        outcome.error, outcome.detail = ErrorClass.TLS, _reason(exc)
    except requests.exceptions.Timeout:
        outcome.error, outcome.detail = ErrorClass.TIMEOUT, f"no answer within {timeout:g} s"
    except requests.exceptions.ConnectionError as exc:
        dns = _caused_by(exc, urllib3.exceptions.NameResolutionError)
        outcome.error = ErrorClass.DNS if dns else ErrorClass.CONNECTION
        outcome.detail = _reason(exc)
    except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError) as exc:
        outcome.error, outcome.detail = ErrorClass.CONNECTION, _reason(exc)
    outcome.duration_ms = round((time.monotonic() - started) * 1000)
    if outcome.status is not None and 300 <= outcome.status < 400:
        location = outcome.response_headers.get("location", "")
        outcome.error = ErrorClass.REDIRECT
        outcome.detail = f"redirects are not followed (Location: {location or 'none'})"
    return outcome


def _read_body(response: requests.Response) -> str:
    """The first 4 KB of the response body, as text; a body that stalls is noted, not fatal."""
    try:
        raw = response.raw.read(RESPONSE_BODY_LIMIT, decode_content=True) or b""
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        return f"(body not read: {type(exc).__name__})"
    return raw[:RESPONSE_BODY_LIMIT].decode(response.encoding or "utf-8", errors="replace")


def _caused_by(exc: BaseException, kind: type) -> bool:
    """True when `kind` is anywhere in the exception's chain (urllib3 nests it in MaxRetryError)."""
    seen = set()
    stack = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, kind):
            return True
        stack.extend([current.__cause__, current.__context__, getattr(current, "reason", None)])
        stack.extend(a for a in getattr(current, "args", ()) if isinstance(a, BaseException))
    return False


def _reason(exc: BaseException) -> str:
    """The innermost useful message of a requests/urllib3 error."""
    inner = exc
    while True:
        nxt = getattr(inner, "reason", None)
        if not isinstance(nxt, BaseException):
            args = [a for a in getattr(inner, "args", ()) if isinstance(a, BaseException)]
            nxt = args[0] if args else None
        if nxt is None or nxt is inner:
            break
        inner = nxt
    text = str(inner)
    if "): " in text:  # urllib3 prefixes "HTTPConnection(host=..., port=...): "
        text = text.split("): ", 1)[1]
    return text[:500]


# --- attempts: one per delivery a job owns -----------------------------------------------------


@dataclass(frozen=True)
class Planned:
    """A delivery about to be attempted: everything the request needs, read in one query."""

    delivery_id: int
    job_id: str | None
    trigger: AttemptTrigger
    slot: str
    url: str
    body: bytes
    webhook_id: str
    keys: list[str]


def attempt(delivery_id: int, job_id: str | None) -> None:
    """Make one attempt of a delivery, if `job_id` still owns it; schedule a retry on failure."""
    attempt_all([delivery_id], job_id)


def attempt_all(delivery_ids: list[int], job_id: str | None) -> None:
    """Make one attempt of each of these deliveries that `job_id` still owns.

    The deliveries one transaction created share a job (events.enqueue_after_commit): they are
    read in one query, sent side by side (one thread per target, so a hanging receiver holds up
    no other), and recorded in one transaction. Each attempt first takes a slot of its target
    (see `bulkhead`); when the target's slots are taken the delivery is deferred instead (a
    fresh job id, in the target's line), with no attempt counted.
    """
    config = current_app.config
    timeout = config["WEBHOOK_TIMEOUT"]
    guard = _guard(tuple(config["WEBHOOK_ALLOWED_CIDRS"]))
    groups: dict[str, list[Planned]] = {}
    for planned in _plan(delivery_ids, job_id):
        groups.setdefault(planned.slot, []).append(planned)
    waiting: list[Planned] = []  # their target's slots were all taken
    if job_id is not None and groups:
        # One slot per target for the job, all asked for in one round trip.
        granted = bulkhead.acquire_all(list(groups), job_id, timeout)
        for slot in [slot for slot, ok in zip(list(groups), granted, strict=True) if not ok]:
            waiting += groups.pop(slot)
    sent, failure = _send_by_target(list(groups.values()), timeout, guard)
    for planned in waiting:  # in the target's line, or now if a slot came free meanwhile
        fresh = _defer(planned, timeout)
        if fresh is not None:
            sent += _attempt_group(
                None, [dataclasses.replace(planned, job_id=fresh)], timeout, guard
            )
    record_all(sent)
    if failure is not None:
        raise failure


# Built once: a job runs them for every delivery, and building the statement costs more than
# its cached compilation.
_PLAN = (
    select(Delivery)
    .where(Delivery.id.in_(bindparam("ids", expanding=True)))
    .options(
        joinedload(Delivery.endpoint),
        joinedload(Delivery.callback),
        joinedload(Delivery.event),
    )
    .order_by(Delivery.id)
    .execution_options(populate_existing=True)
)
_RECORD = (
    select(Delivery)
    .where(Delivery.id.in_(bindparam("ids", expanding=True)))
    .options(joinedload(Delivery.endpoint))
    .order_by(Delivery.id)
    .with_for_update(of=Delivery)
    .execution_options(populate_existing=True)
)


def _send_by_target(groups: list[list[Planned]], timeout: float, guard: AddressGuard):
    """Each target's deliveries side by side: the first target in this thread, every other in a
    thread of its own. Returns the (planned, outcome) pairs sent and the first exception raised
    on the way, if any (what was sent is still recorded before the job fails)."""
    app = current_app._get_current_object()
    futures = [_pool().submit(_attempt_group, app, g, timeout, guard) for g in groups[1:]]
    calls = [f.result for f in futures]
    if groups:
        calls.insert(0, lambda: _attempt_group(None, groups[0], timeout, guard))
    sent: list[tuple[Planned, Outcome]] = []
    failure = None
    for call in calls:
        try:
            sent += call()
        except Exception as exc:
            failure = failure or exc
    return sent, failure


def _plan(delivery_ids: list[int], job_id: str | None) -> list[Planned]:
    """Read the deliveries with their events and targets (one query); skip those another job
    owns now, and those whose target was disabled; end the read transaction."""
    rows = db.session.scalars(_PLAN, {"ids": delivery_ids}).all()
    found = {delivery.id for delivery in rows}
    for missing in sorted(set(delivery_ids) - found):
        log.info("delivery %s no longer exists; nothing to send", missing)
    planned = []
    for delivery in rows:
        if job_id is not None and delivery.job_id != job_id:
            log.info("job %s is stale for delivery %s; skipping", job_id, delivery.id)
            continue
        trigger = AttemptTrigger(delivery.next_trigger)
        target = delivery.endpoint or delivery.callback
        if trigger == AttemptTrigger.SCHEDULED and not target.enabled:
            _set_status(delivery, DeliveryStatus.SKIPPED, events.SKIPPED_WHILE_DISABLED)
            continue
        planned.append(
            Planned(
                delivery_id=delivery.id,
                job_id=job_id,
                trigger=trigger,
                slot=bulkhead.target_key(delivery.endpoint_id, delivery.callback_id),
                url=target.url,
                body=delivery.event.body,
                webhook_id=delivery.event.webhook_id,
                keys=signing_keys(delivery),
            )
        )
    db.session.commit()  # end the read transaction: nothing is held while requests are out
    return planned


def _attempt_group(app, group: list[Planned], timeout: float, guard: AddressGuard):
    """One target's deliveries of a job, one after another in the slot the job holds; then
    the slot is freed and whoever waits for it woken. `app`: push its context (another thread).
    Returns (planned, outcome) of each."""
    with app.app_context() if app is not None else contextlib.nullcontext():
        out: list[tuple[Planned, Outcome]] = []
        try:
            for planned in group:
                headers = signing.headers(
                    planned.body,
                    webhook_id=planned.webhook_id,
                    timestamp=int(time.time()),
                    keys=planned.keys,
                )
                outcome = send(planned.url, planned.body, headers, timeout=timeout, guard=guard)
                out.append((planned, outcome))
        finally:
            first = group[0]
            if first.job_id is not None:
                fast = None  # unknown, if the group did not get through
                if len(out) == len(group):
                    limit = bulkhead.fast_threshold(timeout) * 1000
                    fast = all(o.succeeded and o.duration_ms <= limit for _, o in out)
                woken = bulkhead.release(first.slot, first.job_id, fast=fast)
                if woken:
                    events.enqueue_jobs([(d, j, None) for d, j in woken])
        return out


_executor: tuple[int, ThreadPoolExecutor] | None = None


def _pool() -> ThreadPoolExecutor:
    """This process's sending threads (a forked child makes its own)."""
    global _executor
    if _executor is None or _executor[0] != os.getpid():
        _executor = (os.getpid(), ThreadPoolExecutor(SEND_THREADS, "webhook-send"))
    return _executor[1]


def _defer(planned: Planned, timeout: float) -> str | None:
    """Put the delivery in its target's line under a fresh job id (no attempt counted).

    The fresh id is committed before the delivery joins the line, so the job that wakes it owns
    it. Returns that id when a slot came free meanwhile (the caller attempts now), else None.
    """
    delivery = db.session.get(Delivery, planned.delivery_id, populate_existing=True)
    if delivery is None or (planned.job_id is not None and delivery.job_id != planned.job_id):
        db.session.commit()
        return None  # deleted, or another job owns it now
    fresh = events.new_job_id(delivery)
    delivery.job_id = fresh
    db.session.commit()
    entry = bulkhead.line_entry(delivery.id, fresh)
    if bulkhead.acquire(planned.slot, fresh, timeout, line_entry=entry):
        return fresh
    log.info("delivery %s deferred: %s is busy (%s)", delivery.id, planned.slot, fresh)
    return None


@functools.lru_cache(maxsize=8)
def _guard(cidrs: tuple[str, ...]) -> AddressGuard:
    """The guard for WEBHOOK_ALLOWED_CIDRS (one per setting, so its connections are reused)."""
    return AddressGuard.from_cidrs(cidrs)


def signing_keys(delivery: Delivery) -> list[str]:
    """The secrets that sign this delivery: the endpoint's active ones, or the owner's."""
    if delivery.endpoint is not None:
        return delivery.endpoint.active_secrets()
    assessment = db.session.get(Assessment, delivery.callback.assessment_id)
    return assessment.user.signer.active_signing_secrets()


def record_all(attempts: list[tuple[Planned, Outcome]]) -> None:
    """Log each attempt, then settle its delivery: succeeded, retrying (scheduled) or failed;
    all in one transaction."""
    if not attempts:
        return
    config = current_app.config
    rows = db.session.scalars(
        _RECORD, {"ids": [planned.delivery_id for planned, _ in attempts]}
    ).all()
    by_id = {delivery.id: delivery for delivery in rows}
    for planned, outcome in attempts:
        delivery = by_id.get(planned.delivery_id)
        if delivery is not None:  # else deleted with its endpoint while the request was out
            _settle(delivery, planned.job_id, planned.trigger, outcome, config)
    db.session.commit()


def _settle(delivery: Delivery, job_id, trigger: AttemptTrigger, outcome: Outcome, config) -> None:
    delivery.attempt_count += 1
    entry = Attempt(
        delivery_id=delivery.id,
        number=delivery.attempt_count,
        trigger=trigger,
        started_at=outcome.started_at,
        duration_ms=outcome.duration_ms,
        url=outcome.url,
        request_headers=outcome.request_headers,
        response_status=outcome.status,
        response_headers={k: v[:1000] for k, v in list(outcome.response_headers.items())[:50]},
        response_body=outcome.body,
        error=outcome.error,
        error_detail=outcome.detail,
    )
    db.session.add(entry)
    delivery.last_attempt_at = outcome.started_at
    delivery.last_response_status = outcome.status
    delivery.last_error = None if outcome.succeeded else outcome.summary()
    # An admin may have asked for another attempt meanwhile; that one decides what comes next.
    current = job_id is None or delivery.job_id == job_id
    kind = "success" if outcome.succeeded else str(outcome.error or "http_error")
    metrics.webhook_attempt(kind, outcome.duration_ms / 1000)
    event = delivery.event
    log.info(
        "webhook %s attempt %d of delivery %d: %s",
        event.type,
        delivery.attempt_count,
        delivery.id,
        outcome.summary(),
        extra={
            "delivery_id": delivery.id,
            "webhook_id": event.webhook_id,
            "event_type": event.type,
            "assessment_id": event.assessment_id,
            "outcome": kind,
            "duration_ms": outcome.duration_ms,
        },
    )
    if outcome.succeeded:
        _healthy(delivery)
        if current:
            _set_status(delivery, DeliveryStatus.SUCCEEDED)
            metrics.webhook_delivered(event.type, (utcnow() - event.created_at).total_seconds())
    else:
        gone = _failing(delivery, outcome, config["WEBHOOK_DISABLE_AFTER"])
        schedule = config["WEBHOOK_RETRY_SCHEDULE"]
        if not current:
            pass
        elif not gone and delivery.auto_retry and delivery.retries_used < len(schedule):
            delay = retry_delay(schedule[delivery.retries_used], outcome.retry_after())
            delivery.retries_used += 1
            events.enqueue_after_commit(delivery, delay)
            entry.next_attempt_at = delivery.next_attempt_at
            _set_status(delivery, DeliveryStatus.RETRYING, delivery.last_error)
        else:
            _set_status(delivery, DeliveryStatus.FAILED, delivery.last_error)


def retry_delay(scheduled: float, retry_after: float | None) -> float:
    """The scheduled delay with +-20% jitter, stretched to the receiver's Retry-After (capped)."""
    delay = scheduled * random.uniform(1 - JITTER, 1 + JITTER)
    if retry_after is not None:
        delay = max(delay, min(retry_after, RETRY_AFTER_CAP))
    return max(delay, 0.5)


def _set_status(delivery: Delivery, status: DeliveryStatus, note: str | None = None) -> None:
    """Change a delivery's status and record it in the history (SPEC 7)."""
    if status.finished:
        delivery.job_id = None
        delivery.next_attempt_at = None
    if status == DeliveryStatus.SKIPPED:
        delivery.last_error = note
    if delivery.status == status:
        return
    delivery.status = status
    event = delivery.event
    words = {
        DeliveryStatus.SUCCEEDED: "delivered",
        DeliveryStatus.RETRYING: "failed; retry scheduled",
        DeliveryStatus.FAILED: "failed; no more retries",
        DeliveryStatus.SKIPPED: "skipped",
        DeliveryStatus.PENDING: "queued",
    }[status]
    message = f"Webhook {event.type} ({event.webhook_id}) {words}"
    history.record(
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


def _healthy(delivery: Delivery) -> None:
    """A success ends the endpoint's run of failures."""
    if delivery.endpoint is not None:
        delivery.endpoint.failing_since = None


def _failing(delivery: Delivery, outcome: Outcome, disable_after: int) -> bool:
    """Note a failure against the target; True when the target is now disabled.

    410 Gone disables at once; otherwise an endpoint that has failed continuously for
    `disable_after` seconds is disabled, with the reason shown to admins.
    """
    now = utcnow()
    endpoint = delivery.endpoint
    if endpoint is None:
        callback: AssessmentCallback = delivery.callback
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
        _set_status(delivery, DeliveryStatus.SKIPPED, events.SKIPPED_WHILE_DISABLED)


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


# --- manual attempts ----------------------------------------------------------------------------


def redeliver(delivery: Delivery) -> None:
    """Send a delivery again now, once (trigger manual), with the same webhook-id and body.

    A delivery waiting for a retry keeps its schedule if this attempt fails too; a finished one
    gets exactly this one attempt. The caller commits; the job is enqueued after the commit.
    """
    if DeliveryStatus(delivery.status).finished:
        delivery.auto_retry = False
        _set_status(delivery, DeliveryStatus.PENDING)
        delivery.last_error = None
    events.enqueue_after_commit(delivery, trigger=AttemptTrigger.MANUAL)


# --- the watchdog's part ------------------------------------------------------------------------


def pending_deliveries_without_job(grace: timedelta = WATCHDOG_GRACE) -> list[Delivery]:
    """Pending or retrying deliveries overdue by `grace` whose job is not alive in Redis.

    Their job was never enqueued (Redis was down at commit), was lost with Redis's data, or was
    taken off its queue by a worker that died before starting it.
    Raises redis.RedisError when Redis is unreachable.
    """
    overdue = db.session.scalars(
        select(Delivery).where(
            Delivery.status.in_([DeliveryStatus.PENDING, DeliveryStatus.RETRYING]),
            Delivery.next_attempt_at < utcnow() - grace,
        )
    ).all()
    connection = get_redis()
    waiting = bulkhead.in_line([d.job_id for d in overdue if d.job_id])
    lost = []
    for delivery in overdue:
        if delivery.job_id in waiting:
            continue  # deferred behind a busy target: alive, its turn comes
        try:
            job = Job.fetch(delivery.job_id, connection=connection) if delivery.job_id else None
        except NoSuchJobError:
            job = None
        status = job.get_status(refresh=False) if job is not None else None
        if status not in _ALIVE or (status == JobStatus.QUEUED and popped_and_abandoned(job)):
            lost.append(delivery)
    return lost


def requeue_lost(grace: timedelta = WATCHDOG_GRACE) -> int:
    """Enqueue a fresh job for every delivery whose job vanished; returns how many (0 if Redis
    is down: the rows wait for the next pass)."""
    try:
        woken = bulkhead.wake_stalled()
        if woken:
            events.enqueue_jobs([(d, j, None) for d, j in woken])
        lost = pending_deliveries_without_job(grace)
    except redis.RedisError:
        log.warning("watchdog: Redis unreachable; webhook deliveries wait for the next pass")
        return 0
    for delivery in lost:
        events.enqueue_after_commit(delivery, trigger=AttemptTrigger(delivery.next_trigger))
    db.session.commit()
    if lost:
        log.warning("watchdog: re-enqueued %d webhook deliveries", len(lost))
    return len(lost)
