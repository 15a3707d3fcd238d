"""Fault injection with real processes: a worker killed mid-stage, and a graceful SIGTERM."""

from __future__ import annotations

import contextlib
import signal
import time
from datetime import timedelta

import psutil
import pytest
import redis
from sqlalchemy import text

from tests.openai_server import rubric_reply
from tests.support import HEARTBEAT, explain, stack, start_worker, status, submit_through, wait_for
from webapp import create_app
from webapp.extensions import db
from webapp.queues import ensure_embedded_redis
from webapp.services.watchdog import reconcile

pytestmark = pytest.mark.db


def slow_openai(openai_server, seconds: float):
    """Every essay takes `seconds` to score, so a stage is reliably caught half-way."""
    reply = rubric_reply()
    reply.delay = seconds
    openai_server.default = reply
    return {
        "OPENAI_API_KEY": "test-key",
        "OPENAI_BASE_URL": openai_server.base_url,
        "OPENAI_TIMEOUT": "10",
        "WORKER_HEARTBEAT": HEARTBEAT,
    }


def submit(app, tokens) -> int:
    return submit_through(app, tokens)[0]["id"]


def stage(body: dict, name: str) -> dict:
    return next(s for s in body["stages"] if s["name"] == name)


def test_worker_killed_mid_stage_is_replaced_and_the_assessment_completes(
    base_dir, db_url, tokens, worker_factory, openai_server
):
    env = slow_openai(openai_server, seconds=1.5)
    doomed, redis_url = worker_factory(**env)
    app = create_app(
        {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": db_url,
            "REDIS_URL": redis_url,
            "WORKER_HEARTBEAT": int(HEARTBEAT),  # every process of a deployment shares this
        }
    )
    assessment_id = submit(app, tokens)
    wait_for(
        lambda: stage(status(app, tokens, assessment_id), "gpt")["status"] == "in_progress",
        20,
        "the gpt stage to start",
    )
    process = psutil.Process(doomed.process.pid)
    for victim in [*process.children(recursive=True), process]:
        victim.send_signal(signal.SIGKILL)  # no goodbye: the work horse dies mid-essay
    doomed.process.wait(timeout=10)
    killed_at = time.monotonic()

    replacement = start_worker(base_dir, db_url, redis_url, **env)
    try:
        with app.app_context():
            report = wait_for(
                lambda: reconcile(grace=timedelta(0)).repairs, 30, "the watchdog to notice"
            )
        assert "gone" in report[0].reason
        body = wait_for(
            lambda: (
                (b := status(app, tokens, assessment_id))["status"] in ("completed", "failed") and b
            ),
            60,
            "the assessment to finish",
            lambda: explain(app, tokens, assessment_id, doomed, replacement),
        )
        recovered_in = time.monotonic() - killed_at
    finally:
        replacement.stop()
    assert body["status"] == "completed"
    assert body["degraded"] is False  # the gpt stage ran again in full, nothing was lost
    assert stage(body, "gpt")["status"] == "completed"
    # The bound the README states: detection (2 x heartbeat + 5 s) plus the stages' own work.
    assert recovered_in < 30


def test_sigterm_lets_the_current_job_finish(
    base_dir, db_url, tokens, worker_factory, openai_server
):
    env = slow_openai(openai_server, seconds=1.0)
    worker, redis_url = worker_factory(**env)
    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": db_url, "REDIS_URL": redis_url})
    assessment_id = submit(app, tokens)
    wait_for(
        lambda: stage(status(app, tokens, assessment_id), "gpt")["status"] == "in_progress",
        20,
        "the gpt stage to start",
    )
    worker.process.send_signal(signal.SIGTERM)
    assert worker.process.wait(timeout=30) == 0
    body = status(app, tokens, assessment_id)
    assert stage(body, "gpt")["status"] == "completed"  # finished, not abandoned
    assert body["status"] == "processing"  # rag and fusion wait for the next worker
    successor = start_worker(base_dir, db_url, redis_url, **env)
    try:
        done = wait_for(
            lambda: (b := status(app, tokens, assessment_id))["status"] == "completed" and b,
            30,
            "the successor to finish",
            lambda: explain(app, tokens, assessment_id, worker, successor),
        )
    finally:
        successor.stop()
    assert done["overall_progress"] == 100


def test_redis_flushall_mid_stage_the_watchdog_brings_it_to_the_end(
    base_dir, tmp_path, db_url, tokens, openai_server
):
    env = {**slow_openai(openai_server, seconds=1.0), "WATCHDOG_INTERVAL": "1"}
    redis_url = ensure_embedded_redis(tmp_path)  # a server of its own: FLUSHALL hits no one else
    worker = start_worker(base_dir, db_url, redis_url, **env)
    app = stack(db_url, redis_url)
    try:
        first = submit(app, tokens)
        wait_for(
            lambda: stage(status(app, tokens, first), "gpt")["status"] == "in_progress",
            20,
            "the gpt stage to start",
        )
        # The worker is busy scoring the first one's essays: the second one's jobs wait in Redis.
        second = submit(app, tokens)
        redis.Redis.from_url(redis_url).flushall()  # every queue, job, registry and worker key
        bodies = [
            wait_for(
                lambda aid=aid: (
                    (b := status(app, tokens, aid))["status"] in ("completed", "failed") and b
                ),
                60,
                "the watchdog to bring the assessment to the end",
                lambda aid=aid: explain(app, tokens, aid, worker),
            )
            for aid in (first, second)
        ]
    finally:
        worker.stop()
        with contextlib.suppress(redis.RedisError):
            redis.Redis.from_url(redis_url).shutdown(nosave=True)
    assert [b["status"] for b in bodies] == ["completed", "completed"]
    assert not any(b["degraded"] for b in bodies)
    history = app.test_client().get(
        f"/api/v1/assessments/{second}/history",
        headers={"Authorization": f"Bearer {tokens['student']}"},
    )
    assert any(e["message"].startswith("Re-enqueued") for e in history.get_json()["history"])


def test_redis_stopped_submit_accepted_redis_started_and_the_assessment_completes(
    base_dir, tmp_path, db_url, tokens
):
    url = ensure_embedded_redis(tmp_path)  # a Redis server of this test's own, to stop and start
    worker = start_worker(base_dir, db_url, url, WATCHDOG_INTERVAL="1", WORKER_HEARTBEAT=HEARTBEAT)
    app = stack(db_url, url)
    try:
        with contextlib.suppress(redis.ConnectionError):
            redis.Redis.from_url(url).shutdown(nosave=True)
        wait_for(lambda: not (tmp_path / "redis.sock").exists(), 10, "Redis to stop")
        assessment_id = submit(app, tokens)  # accepted while Redis is down
        assert status(app, tokens, assessment_id)["status"] == "submitted"
        assert ensure_embedded_redis(tmp_path) == url  # Redis is back, empty
        body = wait_for(
            lambda: (b := status(app, tokens, assessment_id))["status"] == "completed" and b,
            90,
            "the assessment to complete after Redis came back",
            lambda: explain(app, tokens, assessment_id, worker),
        )
    finally:
        worker.stop()
        with contextlib.suppress(redis.RedisError):
            redis.Redis.from_url(url).shutdown(nosave=True)
    assert body["overall_progress"] == 100


@pytest.mark.postgres
def test_a_database_connection_cut_mid_stage_retries_the_stage(
    app, db_url, tokens, worker_factory, openai_server
):
    assert db_url.startswith("postgresql"), "this test cuts PostgreSQL connections (CI's PG pass)"
    env = slow_openai(openai_server, seconds=1.5)
    worker, redis_url = worker_factory(**env)
    scoring = stack(db_url, redis_url)
    assessment_id = submit(scoring, tokens)
    wait_for(
        lambda: stage(status(scoring, tokens, assessment_id), "gpt")["status"] == "in_progress",
        20,
        "the gpt stage to start",
    )
    time.sleep(0.5)  # inside the slow model calls
    with app.app_context():
        killed = db.session.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND backend_type = 'client backend'"
            )
        ).scalar()
        db.session.commit()
    assert killed >= 1
    body = wait_for(
        lambda: (
            (b := status(scoring, tokens, assessment_id))["status"] in ("completed", "failed") and b
        ),
        60,
        "the assessment to finish",
        lambda: explain(scoring, tokens, assessment_id, worker),
    )
    assert body["status"] == "completed"
    assert body["degraded"] is False  # the stage ran again; nothing failed, nothing half-written
    assert stage(body, "gpt")["status"] == "completed"
    # A gpt batch holds no transaction while calls are in flight: its next write checks the
    # connection out again (pool_pre_ping) and goes on; a stage caught mid-transaction is run
    # again from the start ("lost its database connection"). Either way, nothing twice:
    with app.app_context():
        scores = db.session.execute(
            text("SELECT count(*) FROM scores s JOIN operations o ON o.id = s.operation_id "
                 "WHERE o.assessment_id = :a AND s.stage = 'gpt'"),
            {"a": assessment_id},
        ).scalar()  # fmt: skip
    assert scores == 2  # one row per essay, not one per try


def test_an_idle_worker_exits_promptly_on_sigterm(worker_factory):
    idle, _ = worker_factory()
    started = time.monotonic()
    idle.process.send_signal(signal.SIGTERM)
    # Warm shutdown may first finish a startup cron job (prune, watchdog); it must not hang.
    assert idle.process.wait(timeout=20) == 0
    assert time.monotonic() - started < 10


def test_workers_register_again_after_redis_restarts_empty(base_dir, tmp_path, db_url):
    """Workers that live through a Redis restart are seen again (by the watchdog and /readyz),
    not taken for dead while they keep working."""
    from rq import Worker

    url = ensure_embedded_redis(tmp_path)
    worker = start_worker(base_dir, db_url, url, WORKER_HEARTBEAT=HEARTBEAT, WATCHDOG_INTERVAL="1")
    app = stack(db_url, url)
    try:
        redis.Redis.from_url(url).shutdown(nosave=True)
        wait_for(lambda: not (tmp_path / "redis.sock").exists(), 10, "Redis to stop")
        (tmp_path / "redis.rdb").unlink(missing_ok=True)
        assert ensure_embedded_redis(tmp_path) == url  # back, and empty

        def registered() -> bool:
            workers = Worker.all(connection=redis.Redis.from_url(url))
            return any(w.pid == worker.process.pid for w in workers)

        wait_for(registered, 30, "the worker to register again", worker.log)
        assert app.test_client().get("/readyz").status_code == 200
    finally:
        worker.stop()
        with contextlib.suppress(redis.RedisError):
            redis.Redis.from_url(url).shutdown(nosave=True)


def test_a_worker_started_while_redis_is_down_waits_for_it(base_dir, tmp_path, db_url):
    """A worker (re)started during a Redis outage waits for Redis instead of exiting."""
    from concurrent.futures import ThreadPoolExecutor

    url = ensure_embedded_redis(tmp_path)
    redis.Redis.from_url(url).shutdown(nosave=True)
    wait_for(lambda: not (tmp_path / "redis.sock").exists(), 10, "Redis to stop")
    with ThreadPoolExecutor(1) as pool:
        starting = pool.submit(start_worker, base_dir, db_url, url, 90, WORKER_HEARTBEAT=HEARTBEAT)
        time.sleep(8)  # the worker meets no Redis while it starts
        assert ensure_embedded_redis(tmp_path) == url
        worker = starting.result(timeout=120)  # registered: it waited and went on
    try:
        assert worker.process.poll() is None
    finally:
        worker.stop()
        with contextlib.suppress(redis.RedisError):
            redis.Redis.from_url(url).shutdown(nosave=True)
