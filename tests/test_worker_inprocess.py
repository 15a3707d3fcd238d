"""Webhook deliveries run in the worker's own process (no forked horse), with heartbeats kept
up while one runs; scoring jobs still run in a forked horse."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis
from rq import Worker

from tests.support import add_endpoint
from tests.webhook_receiver import Answer

pytestmark = pytest.mark.db


def horses(pid: int) -> list[int]:
    """Child processes of the worker (a forked work horse would be one)."""
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_a_delivery_runs_in_the_worker_process_with_its_heartbeat_kept(
    webhook_site, receivers, tokens
):
    from webapp.extensions import db
    from webapp.scoring.vocabulary import EventType
    from webapp.services.webhooks import events

    slow = receivers(default=Answer(200, delay=4))  # answers after 4 s, within the timeout
    site = webhook_site(workers=1, WEBHOOK_TIMEOUT="8", WORKER_HEARTBEAT="1")
    worker = site.workers[0]
    admin = site.client(tokens["admin"])
    add_endpoint(admin, slow.url)
    # RQ's scheduler runs in a child of its own (and a cron job's horse may come and go now).
    idle_children = set(horses(worker.process.pid))
    with site.app.app_context():
        events.write(EventType.WEBHOOK_TEST, {"n": 1})
        db.session.commit()
        db.session.remove()

    connection = redis.Redis.from_url(site.redis_url)
    deadline = time.monotonic() + 10
    while not slow.received and time.monotonic() < deadline:
        time.sleep(0.05)
    assert slow.received, "the delivery never started"
    time.sleep(2.5)  # well into the 4 s answer: a forking worker would have a horse now
    [rq_worker] = [w for w in Worker.all(connection=connection)]
    assert rq_worker.get_state() == "busy"
    # Busy with the delivery, the worker runs nothing else: a new child would be its horse.
    assert set(horses(worker.process.pid)) <= idle_children
    age = time.time() - rq_worker.last_heartbeat.timestamp()
    assert age < 2.0, f"last heartbeat {age:.1f} s ago while busy"
    assert slow.wait_for(1, timeout=10)


def test_stages_run_in_the_worker_process_and_others_fork(app, redis_url, monkeypatch):
    """Without an OpenAI key a scoring stage is milliseconds of local work: it runs in the
    worker's process. With a key too (a gpt job is a batch whose calls wait in threads). Any
    other job forks a horse as RQ does."""
    from rq import Queue

    from webapp.queues import get_redis
    from worker.__main__ import ScorelineWorker, make_worker

    forks = []
    original = ScorelineWorker.fork_work_horse

    def counting(self, *args, **kwargs):
        forks.append(args[0].func_name)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ScorelineWorker, "fork_work_horse", counting)
    with app.app_context():
        assert app.config["OPENAI_API_KEY"] == ""
        offline = make_worker(app, name=f"offline-{time.monotonic_ns()}")
        assert "worker.jobs.run_stage" in offline.in_process_functions
        monkeypatch.setitem(app.config, "OPENAI_API_KEY", "sk-test")
        online = make_worker(app, name=f"online-{time.monotonic_ns()}")
        # With a key, a gpt job is a batch whose calls wait in threads: in-process too.
        assert "worker.jobs.run_stage" in online.in_process_functions
        monkeypatch.setitem(app.config, "OPENAI_API_KEY", "")

        # The same job, in-process when its function is one of them, forked otherwise (on a
        # queue of this test's own, which no other worker takes from).
        queue = Queue(f"inprocess-{time.monotonic_ns()}", connection=get_redis())
        for in_process, expected_forks in ((frozenset({"worker.jobs.noop"}), 0), (frozenset(), 1)):
            worker = ScorelineWorker(
                [queue], connection=get_redis(), name=f"w-{time.monotonic_ns()}"
            )
            worker.in_process_functions = in_process
            forks.clear()
            job = queue.enqueue("worker.jobs.noop")
            worker.work(burst=True, with_scheduler=False)
            assert job.get_status(refresh=True) == "finished"
            assert len(forks) == expected_forks, forks
