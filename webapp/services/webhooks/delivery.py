"""Delivering: one attempt of each delivery a job owns, its requests sent side by side.

A delivery job makes exactly one HTTP attempt per delivery it owns (an event's fan-out to every
endpoint is one job) and never sleeps: a failed delivery gets its next attempt scheduled with
RQ's scheduler, in a job of its own (`recording`). The deliveries are read in one query, each
target's in a thread of its own, each attempt in a slot of its target (`bulkhead`; a target
whose slots are taken gets the delivery deferred to its line, no attempt counted). No database
transaction stays open while requests are in flight.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from flask import current_app
from sqlalchemy import bindparam, select
from sqlalchemy.orm import joinedload

from webapp.extensions import db
from webapp.models import Assessment, AttemptTrigger, Delivery, DeliveryStatus
from webapp.services.webhooks import bulkhead, recording, relay, signing
from webapp.services.webhooks.events import SKIPPED_WHILE_DISABLED
from webapp.services.webhooks.recording import Attempted
from webapp.services.webhooks.sending import send
from webapp.services.webhooks.status import set_status
from webapp.services.webhooks.url_guard import AddressGuard, configured_guard

log = logging.getLogger(__name__)

SEND_THREADS = 8  # a job's requests to different targets go out side by side


@dataclass(frozen=True)
class Planned:
    """A delivery about to be attempted: everything the request needs, read in one query."""

    delivery_id: int
    job_id: str | None  # the job that owns the delivery
    trigger: AttemptTrigger
    slot: str
    url: str
    body: bytes
    webhook_id: str
    keys: list[str]
    holder: str | None = None  # the job holding the target's slot for it (the one running)

    @property
    def taken_along(self) -> bool:
        """Owned by a queued job the running one took along (relay.take_queued)."""
        return self.job_id != self.holder


def attempt(delivery_id: int, job_id: str | None) -> None:
    """Make one attempt of a delivery, if `job_id` still owns it; schedule a retry on failure."""
    attempt_all([delivery_id], job_id)


def attempt_all(delivery_ids: list[int], job_id: str | None) -> None:
    """Make one attempt of each of these deliveries that `job_id` still owns.

    The deliveries one transaction created share a job (relay.enqueue_after_commit). A job
    also takes along the delivery jobs queued behind it (relay.take_queued), so a burst of
    events is read, sent and recorded in a few jobs rather than one job per event. All are
    read in one query, sent side by side (one thread per target, so a hanging receiver holds
    up no other), and recorded in one transaction. Each attempt first takes a slot of its
    target (see `bulkhead`); when the target's slots are taken the delivery is deferred instead
    (a fresh job id, in the target's line), with no attempt counted. What was taken along and
    not sent within WEBHOOK_TIMEOUT (a slow target) goes back on the queue in its own job.
    """
    config = current_app.config
    timeout = config["WEBHOOK_TIMEOUT"]
    guard = configured_guard()
    owners = dict.fromkeys(delivery_ids, job_id)
    if job_id is not None:
        for other, ids in relay.take_queued():
            owners.update(dict.fromkeys(ids, other))
    groups: dict[str, list[Planned]] = {}
    for planned in sorted(_plan(owners, job_id), key=lambda p: p.taken_along):
        groups.setdefault(planned.slot, []).append(planned)  # its own first, then the others
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
            again = dataclasses.replace(planned, job_id=fresh, holder=fresh)
            sent += _attempt_group(None, [again], timeout, guard)
    recording.record_all(sent)
    if failure is not None:
        raise failure


# Built once: a job runs it for every batch, and building it costs more than its compilation.
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


def _send_by_target(groups: list[list[Planned]], timeout: float, guard: AddressGuard):
    """Each target's deliveries side by side: the first target in this thread, every other in a
    thread of its own. Returns the attempts made and the first exception raised on the way, if
    any (what was sent is still recorded before the job fails)."""
    app = current_app._get_current_object()
    futures = [_pool().submit(_attempt_group, app, g, timeout, guard) for g in groups[1:]]
    calls = [f.result for f in futures]
    if groups:
        calls.insert(0, lambda: _attempt_group(None, groups[0], timeout, guard))
    sent: list[Attempted] = []
    failure = None
    for call in calls:
        try:
            sent += call()
        except Exception as exc:
            failure = failure or exc
    return sent, failure


def _plan(owners: dict[int, str | None], holder: str | None) -> list[Planned]:
    """Read the deliveries (id -> the job that should own it) with their events and targets, in
    one query; skip those another job owns now, and those whose target was disabled; end the
    read transaction. `holder`: the job that runs (and takes the targets' slots)."""
    rows = db.session.scalars(_PLAN, {"ids": list(owners)}).all()
    found = {delivery.id for delivery in rows}
    for missing in sorted(set(owners) - found):
        log.info("delivery %s no longer exists; nothing to send", missing)
    planned = []
    for delivery in rows:
        job_id = owners[delivery.id]
        if job_id is not None and delivery.job_id != job_id:
            log.info("job %s is stale for delivery %s; skipping", job_id, delivery.id)
            continue
        trigger = AttemptTrigger(delivery.next_trigger)
        target = delivery.endpoint or delivery.callback
        if trigger == AttemptTrigger.SCHEDULED and not target.enabled:
            set_status(delivery, DeliveryStatus.SKIPPED, SKIPPED_WHILE_DISABLED)
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
                holder=holder,
            )
        )
    db.session.commit()  # end the read transaction: nothing is held while requests are out
    return planned


def _attempt_group(app, group: list[Planned], timeout: float, guard: AddressGuard):
    """One target's deliveries of a job, one after another in the slot the job holds; then
    the slot is freed and whoever waits for it woken. `app`: push its context (another thread).
    Returns the attempts made."""
    with app.app_context() if app is not None else contextlib.nullcontext():
        out: list[Attempted] = []
        started = time.monotonic()
        try:
            for index, planned in enumerate(group):
                if planned.taken_along and time.monotonic() - started > timeout:
                    # A slow target: what this job took along goes back in jobs of its own.
                    rest = [(p.delivery_id, p.job_id, None) for p in group[index:]]
                    relay.enqueue_jobs(rest)
                    break
                headers = signing.headers(
                    planned.body,
                    webhook_id=planned.webhook_id,
                    timestamp=int(time.time()),
                    keys=planned.keys,
                )
                outcome = send(planned.url, planned.body, headers, timeout=timeout, guard=guard)
                out.append(Attempted(planned.delivery_id, planned.job_id, planned.trigger, outcome))
        finally:
            first = group[0]
            if first.holder is not None:
                fast = None  # unknown, if the group did not get through
                if len(out) == len(group):
                    limit = bulkhead.fast_threshold(timeout) * 1000
                    fast = all(a.outcome.succeeded and a.outcome.duration_ms <= limit for a in out)
                woken = bulkhead.release(first.slot, first.holder, fast=fast)
                if woken:
                    relay.enqueue_jobs([(d, j, None) for d, j in woken])
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
    fresh = relay.new_job_id(delivery)
    delivery.job_id = fresh
    db.session.commit()
    entry = bulkhead.line_entry(delivery.id, fresh)
    if bulkhead.acquire(planned.slot, fresh, timeout, line_entry=entry):
        return fresh
    log.info("delivery %s deferred: %s is busy (%s)", delivery.id, planned.slot, fresh)
    return None


def signing_keys(delivery: Delivery) -> list[str]:
    """The secrets that sign this delivery: the endpoint's active ones, or the owner's."""
    if delivery.endpoint is not None:
        return delivery.endpoint.active_secrets()
    assessment = db.session.get(Assessment, delivery.callback.assessment_id)
    return assessment.user.signer.active_signing_secrets()
