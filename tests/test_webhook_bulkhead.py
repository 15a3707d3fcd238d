"""The bulkhead: a hanging endpoint holds at most one worker, so a sustained stream of events to
it and to a healthy endpoint never stalls the healthy one; deferred deliveries count no attempt."""

from __future__ import annotations

import itertools
import re
import time
import uuid

import pytest

from tests.support import add_endpoint, deliveries_of
from tests.webhook_receiver import Answer

pytestmark = pytest.mark.db


def test_a_hanging_endpoint_takes_one_worker_while_events_keep_coming(
    webhook_site, receivers, tokens
):
    from webapp.extensions import db
    from webapp.scoring.vocabulary import EventType
    from webapp.services.webhooks import events

    hanging = receivers(default=Answer(200, delay=5))  # never answers within the 1 s timeout
    healthy = receivers()
    site = webhook_site(workers=2)
    admin = site.client(tokens["admin"])
    slow = add_endpoint(admin, hanging.url)
    fast = add_endpoint(admin, healthy.url)

    sent = []
    with site.app.app_context():
        for n in range(20):  # an event every 0.15 s for 3 s, each to both endpoints
            events.write(EventType.WEBHOOK_TEST, {"n": n})
            db.session.commit()
            sent.append(time.monotonic())
            time.sleep(0.15)
        db.session.remove()

    arrived = healthy.wait_for(len(sent), timeout=10)
    latencies = sorted(r.at - s for r, s in zip(arrived, sent, strict=True))
    print(f"healthy latencies beside a hanging endpoint: {latencies}")
    assert latencies[int(len(latencies) * 0.95) - 1] < 1.0, latencies

    # At most one attempt waits on the hanging endpoint at a time: each starts after the last
    # one timed out (1 s).
    starts = [r.at for r in hanging.received]
    assert len(starts) >= 2
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) > 0.9, gaps

    # Deferred deliveries waited in line without an attempt: every attempt logged is one the
    # receiver saw (one more may be out right now), numbered without gaps.
    rows = deliveries_of(admin, slow["id"])
    assert len(rows) == len(sent)
    logged = 0
    for row in rows:
        detail = admin.get(f"/api/v1/webhook-deliveries/{row['id']}").get_json()
        numbers = [a["number"] for a in detail["attempts"]]
        assert numbers == list(range(1, len(numbers) + 1))
        assert all(a["error"] == "timeout" for a in detail["attempts"])
        logged += len(numbers)
    assert logged <= len(hanging.received) <= logged + 1
    assert all(d["status"] == "succeeded" for d in deliveries_of(admin, fast["id"]))


def test_slots_lines_and_leases(app):
    from webapp.services.webhooks import bulkhead

    with app.app_context():
        target = f"endpoint:test-{uuid.uuid4().hex}"
        # A target not known fast gets one slot; the next attempt waits in line.
        assert bulkhead.acquire(target, "job-a", timeout=1)
        assert not bulkhead.acquire(target, "job-b", 1, line_entry=bulkhead.line_entry(7, "job-b"))
        assert bulkhead.in_line(["job-b", "job-x"]) == {"job-b"}
        # The attempt ends slow: the next in line may go, and only it.
        assert bulkhead.release(target, "job-a", fast=False) == [(7, "job-b")]
        assert bulkhead.in_line(["job-b"]) == set()
        assert bulkhead.acquire(target, "job-b", 1)
        # A fast answer opens more slots.
        bulkhead.release(target, "job-b", fast=True)
        taken = [bulkhead.acquire(target, f"job-{n}", 1) for n in range(bulkhead.FAST_IN_FLIGHT)]
        assert all(taken)
        assert not bulkhead.acquire(target, "job-z", 1)


def test_a_line_whose_slot_holder_died_is_woken_by_the_watchdog(app):
    from webapp.queues import get_redis
    from webapp.services.webhooks import bulkhead

    with app.app_context():
        target = f"callback:test-{uuid.uuid4().hex}"
        # A lease that ran out (its worker was killed mid-request) frees the slot.
        assert bulkhead.acquire(target, "dead-job", timeout=-bulkhead.LEASE_MARGIN - 1)
        assert bulkhead.acquire(target, "job-c", 1)
        assert not bulkhead.acquire(target, "job-d", 1, line_entry=bulkhead.line_entry(9, "job-d"))
        assert (9, "job-d") not in bulkhead.wake_stalled()  # job-c holds a live lease
        get_redis().zadd(f"webhooks:inflight:{target}", {"job-c": time.time() - 1})
        assert (9, "job-d") in bulkhead.wake_stalled()


def test_an_endpoint_known_fast_starts_over_when_its_url_changes_or_it_is_deleted(
    app, client, tokens
):
    """SQLite gives a deleted endpoint's id to the next one: that one must not inherit eight
    slots from a receiver it has nothing to do with (nor a changed URL from the old one)."""
    from webapp.queues import get_redis
    from webapp.services.webhooks import bulkhead

    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {tokens['admin']}"
    endpoint = add_endpoint(client, "http://93.184.215.14/a")
    target = bulkhead.target_key(endpoint["id"], None)

    def known_fast() -> bool:
        with app.app_context():
            return bool(get_redis().exists(f"webhooks:fast:{target}"))

    def answer_fast() -> None:
        with app.app_context():
            assert bulkhead.acquire(target, "job-1", timeout=1)
            bulkhead.release(target, "job-1", fast=True)

    answer_fast()
    assert known_fast()
    response = client.patch(
        f"/api/v1/webhook-endpoints/{endpoint['id']}", json={"description": "x"}
    )
    assert response.status_code == 200
    assert known_fast()  # the same receiver
    response = client.patch(
        f"/api/v1/webhook-endpoints/{endpoint['id']}", json={"url": "http://93.184.215.14/b"}
    )
    assert response.status_code == 200
    assert not known_fast()

    answer_fast()
    assert client.delete(f"/api/v1/webhook-endpoints/{endpoint['id']}").status_code == 204
    assert not known_fast()


def test_one_transactions_fan_out_is_one_job_and_a_hanging_target_in_it_delays_no_other(
    webhook_site, receivers, tokens
):
    """An event to three endpoints is one RQ job (read and recorded in one transaction each);
    its requests go out side by side, so the one that hangs holds up neither of the others,
    even with a single worker."""
    from sqlalchemy import select

    from webapp.extensions import db
    from webapp.models import Delivery, DeliveryStatus
    from webapp.queues import DELIVER_ALL_JOB
    from webapp.scoring.vocabulary import EventType
    from webapp.services.webhooks import events

    hanging = receivers(default=Answer(200, delay=5))  # past the 1 s timeout
    first, second = receivers(), receivers()
    site = webhook_site(workers=1)
    admin = site.client(tokens["admin"])
    for receiver in (hanging, first, second):
        add_endpoint(admin, receiver.url)

    with site.app.app_context():
        event = events.write(EventType.WEBHOOK_TEST, {"n": 1})
        db.session.commit()
        emitted = time.monotonic()
        event_id = event.id
        db.session.remove()
    arrivals = [r.wait_for(1, timeout=10)[0].at - emitted for r in (first, second)]
    assert max(arrivals) < 0.8, arrivals  # not behind the hanging one's 1 s

    with site.app.app_context():
        deadline = time.monotonic() + 15
        while True:
            rows = db.session.scalars(select(Delivery).where(Delivery.event_id == event_id)).all()
            states = sorted(str(d.status) for d in rows)
            ids = sorted(d.id for d in rows)
            db.session.rollback()
            if DeliveryStatus.PENDING not in states or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert states == sorted(
            [str(DeliveryStatus.SUCCEEDED)] * 2 + [str(DeliveryStatus.RETRYING)]
        ), states
    # One job took them all: RQ logs each job it starts as "<queue>: <call> (<job id>)".
    started = re.findall(r"webhooks: (worker\.jobs\.\w+)\(([^)]*)\)", site.workers[0].log())
    # (A retry of the hanging one, a job of its own, may have started since.)
    fan_outs = [args for name, args in started if name == DELIVER_ALL_JOB]
    assert started[0][0] == DELIVER_ALL_JOB and len(fan_outs) == 1, started
    assert sorted(int(n) for n in fan_outs[0].strip("[]").split(",")) == ids
