"""Benchmark 3: webhook fan-out throughput, and a healthy endpoint's latency beside a hanging one.

Deliveries are made through the app's own services (`events.write`, as the dispatcher does) and
delivered by real `python -m worker` processes to a local receiver (bench/receiver.py) in its
own process. Every time is the receiver's: when each request arrived.

1. Fan-out: N deliveries (events fanned out to several endpoints) all queued while the workers
   are suspended, then two workers deliver them; deliveries/s from the first arrival to the
   last, against plain `requests.post` of the same bodies and headers from two processes.
2. Isolation: an event every STREAM_INTERVAL s for STREAM_SECONDS s, each to a healthy and a
   hanging endpoint (no answer before the delivery timeout); the healthy endpoint's p95 from
   event created to arrival, against the same stream without the hanging endpoint.
"""

from __future__ import annotations

import multiprocessing
import statistics
import sys
import time

import requests

from bench.report import Figure
from bench.stack import Stack, free_port, wait_for_http

WORKERS = 2
FANOUT_ENDPOINTS = 4
ISOLATION_TIMEOUT = 3  # WEBHOOK_TIMEOUT of the isolation run's workers, in seconds
STREAM_INTERVAL = 0.15
PROBE_WORKER = "bench-webhooks-worker"


class Receiver:
    """The receiver process and what it recorded."""

    def __init__(self, stack: Stack, hang: float) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        argv = [sys.executable, "-m", "bench.receiver", "--port", str(self.port),
                "--hang", str(hang)]  # fmt: skip
        self.process = stack.spawn("webhook-receiver", argv, "receiver")
        wait_for_http(f"{self.base}/_arrivals", proc=self.process.proc)

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    def reset(self) -> None:
        requests.post(self.url("/_reset"), timeout=10).raise_for_status()

    def read(self) -> tuple[list[tuple[float, str, str]], float]:
        """Every arrival (unix time, webhook-id, path) and the receiver's CPU seconds so far."""
        document = requests.get(self.url("/_arrivals"), timeout=30).json()
        return [tuple(a) for a in document["arrivals"]], document["cpu_seconds"]

    def wait_for(self, count: int, timeout: float, prefix: str = "/") -> list[tuple]:
        """Block until `count` arrivals under `prefix` (or the timeout); return those seen."""
        deadline = time.monotonic() + timeout
        while True:
            arrivals = [a for a in self.read()[0] if a[2].startswith(prefix)]
            if len(arrivals) >= count or time.monotonic() > deadline:
                return arrivals
            time.sleep(0.2)


def run(stack: Stack, app, *, smoke: bool) -> list[Figure]:
    from webapp.queues import get_redis

    receiver = Receiver(stack, hang=ISOLATION_TIMEOUT * 10)
    connection = get_redis()
    try:
        fanout = _fanout(stack, receiver, connection, smoke=smoke)
        isolation = _isolation(stack, receiver, smoke=smoke)
    finally:
        from rq.suspension import resume

        resume(connection)
        stack.stop(*[p.name for p in stack.processes if p.name.startswith(PROBE_WORKER)])
        stack.stop("webhook-receiver")
    return [*fanout, *isolation]


# --- 1. fan-out throughput ----------------------------------------------------------------------


def _fanout(stack: Stack, receiver: Receiver, connection, *, smoke: bool) -> list[Figure]:
    from rq.suspension import resume, suspend

    total = 100 if smoke else 1000
    rounds = 1 if smoke else 2
    endpoints = _endpoints(receiver, [f"/fan/{n}" for n in range(FANOUT_ENDPOINTS)])
    names = [f"{PROBE_WORKER}-{n}" for n in range(WORKERS)]
    suspend(connection)
    for name in names:
        stack.worker(name)
    best_delivered = best_baseline = best_capacity = 0.0
    cpu_share = []
    try:
        for _ in range(rounds):
            # Delivered by the workers: everything queued first, then the workers let go.
            receiver.reset()
            suspend(connection)
            ids = _emit(total // FANOUT_ENDPOINTS, wait=0)
            _, cpu_before = receiver.read()
            resume(connection)
            arrivals = receiver.wait_for(total, timeout=120, prefix="/fan/")
            _check_all_arrived("fan-out", ids, arrivals, len(endpoints))
            _, cpu_after = receiver.read()
            rate, span = _rate(arrivals)
            cpu_share.append((cpu_after - cpu_before) / span if span else 0.0)
            best_delivered = max(best_delivered, rate)
            _check_succeeded(ids, len(endpoints))

            # The baseline: the same bodies and headers, plain requests.post from two processes.
            sends = _same_requests(ids)
            receiver.reset()
            _post_in_processes(sends, reuse=False)
            arrivals = receiver.wait_for(total, timeout=60, prefix="/fan/")
            best_baseline = max(best_baseline, _rate(arrivals)[0])

            # What the receiver itself can take (keep-alive clients): it must not be the limit.
            receiver.reset()
            _post_in_processes(sends, reuse=True)
            arrivals = receiver.wait_for(total, timeout=60, prefix="/fan/")
            best_capacity = max(best_capacity, _rate(arrivals)[0])
    finally:
        stack.stop(*names)
        _delete_endpoints(endpoints)
    stack.extra["webhooks_fanout"] = {
        "deliveries": total,
        "deliveries_per_s": round(best_delivered, 1),
        "baseline_posts_per_s": round(best_baseline, 1),
        "receiver_capacity_per_s": round(best_capacity, 1),
        "receiver_cpu_share_while_delivering": [round(c, 2) for c in cpu_share],
    }
    if best_capacity and best_delivered > 0.8 * best_capacity:
        print(f"bench: webhooks: the receiver may be the limit ({best_delivered:.0f}/s of its "
              f"{best_capacity:.0f}/s)", file=sys.stderr)  # fmt: skip
    return [
        Figure("webhooks", f"fan-out: deliveries/s ({total}, {WORKERS} workers)", best_delivered,
               best_baseline, "ratio", 0.5,
               f"plain requests.post of the same bodies+headers, {WORKERS} processes"),
    ]  # fmt: skip


def _rate(arrivals: list[tuple]) -> tuple[float, float]:
    """Arrivals per second from the first to the last, and that span in seconds."""
    if len(arrivals) < 2:
        return 0.0, 0.0
    times = sorted(a[0] for a in arrivals)
    span = times[-1] - times[0]
    return (len(times) - 1) / span if span > 0 else 0.0, span


def _same_requests(ids: list[int]) -> list[tuple[str, bytes, dict[str, str]]]:
    """(url, body, headers) of each delivery of these events, signed as a worker signs them."""
    from sqlalchemy import select

    from webapp.extensions import db
    from webapp.models import Delivery, WebhookEvent
    from webapp.services.webhooks import signing

    sends = []
    rows = db.session.scalars(select(Delivery).where(Delivery.event_id.in_(ids))).all()
    for delivery in rows:
        event: WebhookEvent = delivery.event
        headers = signing.headers(event.body, webhook_id=event.webhook_id,
                                  timestamp=int(time.time()),
                                  keys=delivery.endpoint.active_secrets())  # fmt: skip
        sends.append((delivery.endpoint.url, event.body, headers))
    db.session.commit()
    return sends


def _post_in_processes(sends: list[tuple], *, reuse: bool) -> None:
    from bench.receiver import post_all, post_all_reusing

    chunks = [sends[n::WORKERS] for n in range(WORKERS)]
    with multiprocessing.get_context("spawn").Pool(WORKERS) as pool:
        sent = pool.map(post_all_reusing if reuse else post_all, chunks)
    if sum(sent) != len(sends):
        raise RuntimeError(f"baseline: {len(sends) - sum(sent)} posts were not answered 2xx")


def _check_all_arrived(what: str, ids: list[int], arrivals: list[tuple], per_event: int) -> None:
    expected = len(ids) * per_event
    if len(arrivals) < expected:
        raise RuntimeError(f"{what}: {len(arrivals)} of {expected} deliveries arrived")


def _check_succeeded(ids: list[int], per_event: int) -> None:
    """Every delivery of these events is `succeeded` in the database, with one attempt."""
    from sqlalchemy import func, select

    from webapp.extensions import db
    from webapp.models import Delivery, DeliveryStatus

    deadline = time.monotonic() + 30
    while True:
        done = db.session.scalar(
            select(func.count()).where(
                Delivery.event_id.in_(ids),
                Delivery.status == DeliveryStatus.SUCCEEDED,
                Delivery.attempt_count == 1,
            )
        )
        db.session.commit()
        if done == len(ids) * per_event:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{done} of {len(ids) * per_event} deliveries recorded succeeded")
        time.sleep(0.2)


# --- 2. isolation -------------------------------------------------------------------------------


def _isolation(stack: Stack, receiver: Receiver, *, smoke: bool) -> list[Figure]:
    seconds = 4 if smoke else 15
    names = [f"{PROBE_WORKER}-iso-{n}" for n in range(WORKERS)]
    for name in names:
        stack.worker(name, WEBHOOK_TIMEOUT=str(ISOLATION_TIMEOUT))
    try:
        alone = _stream(receiver, ["/healthy/alone"], seconds)
        beside = _stream(receiver, ["/healthy/beside", "/hang/beside"], seconds)
    finally:
        stack.stop(*names)
    stack.extra["webhooks_isolation"] = {
        "events": beside["events"],
        "interval_s": STREAM_INTERVAL,
        "timeout_s": ISOLATION_TIMEOUT,
        "alone": {k: v for k, v in alone.items() if k != "events"},
        "beside_hanging": {k: v for k, v in beside.items() if k != "events"},
    }
    return [
        Figure("webhooks", "healthy endpoint p95 s beside a hanging one", beside["p95"],
               alone["p95"], "max", 1.0,
               f"the same stream without the hanging endpoint (event every "
               f"{STREAM_INTERVAL:g} s, {WORKERS} workers, timeout {ISOLATION_TIMEOUT} s)"),
    ]  # fmt: skip


def _stream(receiver: Receiver, paths: list[str], seconds: float) -> dict:
    """Emit an event every STREAM_INTERVAL s to these endpoints; the first one's latencies."""
    from webapp.extensions import db
    from webapp.models import WebhookEvent

    endpoints = _endpoints(receiver, paths)
    receiver.reset()
    try:
        ids = _emit(int(seconds / STREAM_INTERVAL), wait=STREAM_INTERVAL)
        created = {}
        for event_id in ids:
            event = db.session.get(WebhookEvent, event_id)
            created[event.webhook_id] = event.created_at.timestamp()
        db.session.commit()
        arrivals = receiver.wait_for(len(ids), timeout=30, prefix=paths[0])
        first = {}
        for at, webhook_id, _path in (a for a in arrivals if a[2] == paths[0]):
            first.setdefault(webhook_id, at)
        missing = [w for w in created if w not in first]
        latencies = sorted(first[w] - created[w] for w in created if w in first)
        latencies += [float("inf")] * len(missing)
        hung = sum(1 for a in receiver.read()[0] if a[2].startswith("/hang"))
    finally:
        _delete_endpoints(endpoints)
    return {
        "events": len(ids),
        "p50": _percentile(latencies, 50),
        "p95": _percentile(latencies, 95),
        "max": latencies[-1] if latencies else float("nan"),
        "missing": len(missing),
        "hanging_attempts": hung,
    }


def _percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(pct) - 1]


# --- data, through the app's services -----------------------------------------------------------


def _endpoints(receiver: Receiver, paths: list[str]) -> list[int]:
    """One endpoint per path on the receiver, each wanting `webhook.test` only."""
    from sqlalchemy import select

    from webapp.demo import DEMO_ADMIN
    from webapp.extensions import db
    from webapp.models import User
    from webapp.scoring.vocabulary import EventType
    from webapp.services.webhooks.endpoints import create_endpoint

    admin = db.session.scalar(select(User).where(User.email == DEMO_ADMIN[0]))
    body = {"event_types": [str(EventType.WEBHOOK_TEST)], "description": "bench"}
    return [create_endpoint({**body, "url": receiver.url(p)}, admin).id for p in paths]


def _delete_endpoints(ids: list[int]) -> None:
    from sqlalchemy import select

    from webapp.demo import DEMO_ADMIN
    from webapp.extensions import db
    from webapp.models import User
    from webapp.services.webhooks.endpoints import delete_endpoint, get_endpoint

    admin = db.session.scalar(select(User).where(User.email == DEMO_ADMIN[0]))
    for endpoint_id in ids:
        delete_endpoint(get_endpoint(endpoint_id), admin)


def _emit(count: int, *, wait: float) -> list[int]:
    """`count` events, each committed on its own (its deliveries enqueued after the commit),
    `wait` seconds apart; returns their ids."""
    from webapp.extensions import db
    from webapp.scoring.vocabulary import EventType
    from webapp.services.webhooks import events

    ids = []
    next_at = time.monotonic()
    for n in range(count):
        event = events.write(EventType.WEBHOOK_TEST, {"message": "bench", "n": n})
        db.session.commit()
        ids.append(event.id)
        if wait:
            next_at += wait
            time.sleep(max(0.0, next_at - time.monotonic()))
    return ids
