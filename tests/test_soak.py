"""A bounded chaos soak (CI's PostgreSQL pass): submissions arrive steadily while workers are
SIGKILLed, Redis restarts empty and the web restarts; every assessment must still finish with
exactly one scoring operation and exactly one verified `assessment.completed` webhook.

Everything is real: gunicorn for the web, `python -m worker` processes, a Redis server of the
test's own (so it can be restarted empty), PostgreSQL, and an HTTP receiver that checks each
signature with `standardwebhooks`. Short heartbeat and watchdog settings keep it to ~2 minutes.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
import redis
import requests
from sqlalchemy import func, select

from tests.support import (
    WorkerProcess,
    explain,
    full_answers,
    process_env,
    stack,
    start_worker,
    wait_for,
)
from webapp.config import PROJECT_ROOT
from webapp.extensions import db
from webapp.models import Assessment, Delivery, Operation, WebhookEvent
from webapp.queues import ensure_embedded_redis

# About 2 minutes of chaos plus the session's setup, on a machine that may be busy.
pytestmark = [pytest.mark.db, pytest.mark.postgres, pytest.mark.timeout(900)]

SUBMITTING = 80.0  # seconds of submissions
RATE = 2.0  # submissions a second
WORKERS = 3
KILL_EVERY = 15.0  # a worker SIGKILLed (and replaced) this often
REDIS_RESTART_AT = 25.0  # Redis shut down without saving, and started again empty
WEB_RESTART_AT = 50.0  # gunicorn SIGKILLed and started again
# After the last submission the backlog drains: a busy machine may take a while, but an
# assessment left behind shows as no assessment finishing for STALL seconds.
STALL = 60.0
DRAIN = 300.0
GIVE_UP = 180.0  # one API call retried this long at most (a restarted web may be slow to boot)
REGISTER_WITHIN = 90.0  # a worker starting on a busy machine (CI) may take a while

SOAK_ENV = {
    "SECRET_KEY": "test-secret",
    "WORKER_HEARTBEAT": "2",  # a killed worker is called dead after 2 x 2 + 5 s
    "WATCHDOG_INTERVAL": "3",
    "IDEMPOTENCY_LOCK_TIMEOUT": "5",  # a key held by a request the web lost is free again soon
    "WEBHOOK_ALLOWED_CIDRS": "127.0.0.0/8",
    "WEBHOOK_RETRY_SCHEDULE": "1,1,2,3,5,8,13",
    "WEBHOOK_TIMEOUT": "2",
    "RATE_LIMIT_POLL": "100000/minute",
    "RATE_LIMIT_WRITE": "100000/minute",
    "RATE_LIMIT_DEFAULT": "100000/minute",
}


class Web:
    """gunicorn serving wsgi:app as the Procfile does, on one port across restarts."""

    def __init__(self, base_dir: Path, env: dict[str, str]) -> None:
        with contextlib.closing(socket.socket()) as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**env, "HOST": "127.0.0.1", "PORT": str(self.port), "WEB_CONCURRENCY": "2"}
        self.log_path = base_dir / f"soak-web-{time.monotonic_ns()}.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        handle = open(self.log_path, "a")  # noqa: SIM115  (the child owns it for its lifetime)
        self.process = subprocess.Popen(
            [str(Path(sys.executable).parent / "gunicorn"), "wsgi:app", "-c", "gunicorn.conf.py"],
            cwd=PROJECT_ROOT,
            env=self.env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
        wait_for(
            self._answers,
            120,
            "gunicorn to answer /healthz",
            lambda: self.log_path.read_text(errors="replace")[-3000:],
        )

    def _answers(self) -> bool:
        try:  # the submitters' retries queue up ahead of this on a busy machine
            return requests.get(f"{self.url}/healthz", timeout=5).ok
        except requests.RequestException:
            return False

    def kill(self) -> None:
        """SIGKILL the master and its workers: requests in flight are cut, nothing is saved."""
        if self.process is not None:
            kill_tree(self.process.pid)
            self.process.wait(timeout=10)


def kill_tree(pid: int) -> None:
    """SIGKILL a process and everything under it (no goodbye, as a crash or OOM kill)."""
    with contextlib.suppress(psutil.NoSuchProcess):
        process = psutil.Process(pid)
        for victim in [*process.children(recursive=True), process]:
            with contextlib.suppress(psutil.NoSuchProcess):
                victim.send_signal(signal.SIGKILL)


class Submitter:
    """Submits RATE assessments a second through the web, each call retried (with its
    Idempotency-Key) through restarts until it gets a 2xx answer; records every 5xx."""

    def __init__(self, web: Web, token: str) -> None:
        self.web, self.token = web, token
        self.assessments: list[int] = []
        self.server_errors: list[str] = []
        self.gave_up: list[str] = []
        self.retries = Counter()
        self._lock = threading.Lock()

    def call(self, method: str, path: str, body: dict) -> dict | None:
        key = uuid.uuid4().hex
        headers = {"Authorization": f"Bearer {self.token}", "Idempotency-Key": key}
        deadline = time.monotonic() + GIVE_UP
        while time.monotonic() < deadline:
            try:
                response = requests.request(
                    method, f"{self.web.url}/api/v1{path}", json=body, headers=headers, timeout=10
                )
            except requests.RequestException as exc:
                self._note("connection", type(exc).__name__)
                time.sleep(0.5)
                continue
            if response.status_code < 300:
                return response.json()
            if response.status_code >= 500:
                with self._lock:
                    self.server_errors.append(f"{method} {path}: {response.text[:300]}")
            elif response.status_code != 409:  # 409: the key's first try is still held
                with self._lock:
                    self.gave_up.append(f"{method} {path}: {response.status_code} {response.text}")
                return None
            self._note(str(response.status_code), path)
            time.sleep(0.5)
        with self._lock:
            self.gave_up.append(f"{method} {path}: no answer within {GIVE_UP} s")
        return None

    def _note(self, what: str, _detail: str) -> None:
        with self._lock:
            self.retries[what] += 1

    def submit_one(self) -> None:
        assessment = self.call("POST", "/assessments", {"question_set": "python-basics"})
        if assessment is None:
            return
        with self._lock:
            self.assessments.append(assessment["id"])
        self.call(
            "POST",
            f"/assessments/{assessment['id']}/submit",
            {"responses": full_answers(assessment)},
        )


def test_chaos_soak_every_assessment_finishes_once_with_one_verified_webhook(
    app, base_dir, tmp_path, db_url, tokens, receivers
):
    assert db_url.startswith("postgresql"), "the soak runs in CI's PostgreSQL pass"
    redis_dir = tmp_path / "redis"
    redis_url = ensure_embedded_redis(redis_dir)
    env = process_env(base_dir, db_url, redis_url, **SOAK_ENV)
    web = Web(base_dir, env)
    web.start()
    worker_args = (base_dir, db_url, redis_url, REGISTER_WITHIN)
    workers = [start_worker(*worker_args, **SOAK_ENV) for _ in range(WORKERS)]
    chaos: Chaos | None = None
    receiver = receivers()
    pool = ThreadPoolExecutor(max_workers=32)
    try:
        endpoint = requests.post(
            f"{web.url}/api/v1/webhook-endpoints",
            json={"url": receiver.url, "event_types": ["assessment.completed"]},
            headers={"Authorization": f"Bearer {tokens['admin']}"},
            timeout=10,
        )
        assert endpoint.status_code == 201, endpoint.text
        secret = endpoint.json()["secret"]
        submitter = Submitter(web, tokens["student"])

        chaos = Chaos(web, redis_dir, workers, lambda: start_worker(*worker_args, **SOAK_ENV))
        chaos.start()
        started = time.monotonic()
        sent = 0
        futures = []
        while (elapsed := time.monotonic() - started) < SUBMITTING:
            while sent < elapsed * RATE:
                futures.append(pool.submit(submitter.submit_one))
                sent += 1
            time.sleep(0.05)
        chaos.join()
        if chaos.failure is not None:
            raise chaos.failure
        for future in futures:
            future.result(timeout=GIVE_UP * 2 + 30)

        ids = sorted(submitter.assessments)
        assert ids, "nothing was submitted"
        with app.app_context():
            drain_started = time.monotonic()
            wait_while_progressing(
                lambda: unfinished(ids),
                "every assessment to finish",
                lambda: diagnose(stack(db_url, redis_url), tokens, ids, chaos.started, web),
            )
            drained_in = time.monotonic() - drain_started
            wait_while_progressing(
                lambda: sorted(set(ids) - set(completed_messages(receiver, secret))),
                "a completion webhook for every assessment",
                lambda: f"missing: {sorted(set(ids) - set(completed_messages(receiver, secret)))}",
            )
            statuses = Counter(
                db.session.scalars(select(Assessment.status).where(Assessment.id.in_(ids)))
            )
            operations = dict(
                db.session.execute(
                    select(Operation.assessment_id, func.count())
                    .where(Operation.assessment_id.in_(ids))
                    .group_by(Operation.assessment_id)
                ).all()
            )
            deliveries = Counter(
                db.session.scalars(
                    select(Delivery.status)
                    .join(WebhookEvent, WebhookEvent.id == Delivery.event_id)
                    .where(WebhookEvent.assessment_id.in_(ids))
                )
            )
            db.session.rollback()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        if chaos is not None:
            chaos.spawner.shutdown(wait=True)
        web.kill()
        for worker in chaos.started if chaos else workers:
            worker.stop(signal.SIGKILL)
        with contextlib.suppress(redis.RedisError):
            redis.Redis.from_url(redis_url).shutdown(nosave=True)

    messages = completed_messages(receiver, secret)
    print(
        f"\nsoak: {len(ids)} assessments (backlog drained in {drained_in:.0f} s), statuses "
        f"{dict(statuses)}, deliveries "
        f"{dict(deliveries)}, {len(receiver.received)} webhook requests received, "
        f"{sum(len(m) > 1 for m in messages.values())} messages received more than once "
        f"(at least once delivery), client retries {dict(submitter.retries)}"
    )
    assert submitter.server_errors == [], submitter.server_errors
    assert submitter.gave_up == [], submitter.gave_up
    assert statuses == {"completed": len(ids)}
    assert operations == dict.fromkeys(ids, 1)
    # Exactly one message per assessment (its webhook-id the same on every attempt).
    assert sorted(messages) == ids
    assert all(len(set(copies)) == 1 for copies in messages.values()), messages
    assert deliveries == {"succeeded": len(ids)}


class Chaos(threading.Thread):
    """The faults, on their own timeline: a worker SIGKILLed every KILL_EVERY seconds (a
    replacement started at once, without waiting for it), Redis restarted empty, and the web
    SIGKILLed and started again."""

    def __init__(self, web: Web, redis_dir: Path, workers: list[WorkerProcess], new_worker):
        super().__init__(daemon=True, name="chaos")
        self.web, self.redis_dir, self.new_worker = web, redis_dir, new_worker
        self.started = list(workers)  # every worker that registered, killed ones included
        self.spawner = ThreadPoolExecutor(max_workers=4)
        self.replacements: list[Future] = []
        self.failure: BaseException | None = None
        kills = [
            (KILL_EVERY * n, self.kill_a_worker)
            for n in range(1, int(SUBMITTING // KILL_EVERY) + 1)
        ]
        self.timeline = sorted(
            [*kills, (REDIS_RESTART_AT, self.restart_redis), (WEB_RESTART_AT, self.restart_web)],
            key=lambda item: item[0],
        )

    def run(self) -> None:
        started = time.monotonic()
        try:
            for at, fault in self.timeline:
                time.sleep(max(0.0, started + at - time.monotonic()))
                fault()
            for replacement in self.replacements:
                replacement.result()  # a replacement that never registered fails the soak
        except BaseException as exc:  # re-raised by the test thread
            self.failure = exc

    def kill_a_worker(self) -> None:
        alive = [w for w in self.started if w.process.poll() is None]
        if alive:
            kill_tree(alive[0].process.pid)
            alive[0].process.wait(timeout=10)
        self.replacements.append(self.spawner.submit(self._replace))

    def _replace(self) -> WorkerProcess:
        worker = self.new_worker()
        self.started.append(worker)
        return worker

    def restart_redis(self) -> None:
        restart_redis_empty(self.redis_dir, self.web.env["REDIS_URL"])

    def restart_web(self) -> None:
        self.web.kill()
        self.web.start()


def wait_while_progressing(left, what: str, explain) -> None:
    """Wait until `left()` is empty; fail when it stops shrinking for STALL s (or after DRAIN)."""
    deadline = time.monotonic() + DRAIN
    remaining = left()
    moved = time.monotonic()
    while remaining:
        now = time.monotonic()
        if now - moved > STALL or now > deadline:
            raise AssertionError(f"{len(remaining)} left waiting for {what}\n{explain()}")
        time.sleep(0.5)
        current = left()
        if len(current) < len(remaining):
            moved = time.monotonic()
        remaining = current


def restart_redis_empty(directory: Path, url: str) -> None:
    """Shut the test's Redis down without saving, drop any snapshot, and start it again."""
    with contextlib.suppress(redis.RedisError):
        redis.Redis.from_url(url).shutdown(nosave=True)
    wait_for(lambda: not (directory / "redis.sock").exists(), 10, "Redis to stop")
    time.sleep(1.0)  # down for a moment, as a restart is
    (directory / "redis.rdb").unlink(missing_ok=True)
    assert ensure_embedded_redis(directory) == url  # empty: workers and web meet no old keys


def unfinished(ids: list[int]) -> list[tuple[int, str]]:
    """(id, status) of the assessments not completed or failed yet."""
    rows = db.session.execute(
        select(Assessment.id, Assessment.status).where(
            Assessment.id.in_(ids), Assessment.status.not_in(("completed", "failed"))
        )
    ).all()
    db.session.rollback()
    return [tuple(row) for row in rows]


def completed_messages(receiver, secret: str) -> dict[int, list[str]]:
    """assessment id -> the webhook-id of every verified assessment.completed request for it."""
    out: dict[int, list[str]] = defaultdict(list)
    for request in list(receiver.received):
        payload = request.verify(secret)
        if payload["type"] == "assessment.completed":
            out[payload["data"]["assessment_id"]].append(request.webhook_id)
    return dict(out)


def diagnose(app, tokens, ids: list[int], workers: list[WorkerProcess], web: Web) -> str:
    """What is left unfinished, what the API and database say of the first one, and the logs."""
    stuck = unfinished(ids)
    web_log = web.log_path.read_text(errors="replace").splitlines()[-30:]
    return "\n".join(
        [
            f"unfinished: {stuck}",
            explain(app, tokens, stuck[0][0], *workers) if stuck else "",
            f"--- web log ({web.log_path}) ---",
            *web_log,
        ]
    )
