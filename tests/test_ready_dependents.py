"""A dependent job RQ moved to "ready" but did not get onto its queue (its optimistic enqueue
lost a WATCH race against another worker finishing a job at the same moment) is enqueued by the
next job's worker, and by the watchdog, not ten minutes later by RQ's maintenance pass."""

from __future__ import annotations

import time

import pytest
from rq import Queue
from rq.job import JobStatus
from rq.utils import now

pytestmark = pytest.mark.db


def left_ready(queue: Queue, *, blocker_queue: Queue):
    """A job on `queue` in exactly the state a lost race leaves: status ready_to_enqueue, in the
    queue's ReadyJobRegistry, on no queue list."""
    blocker = blocker_queue.enqueue("worker.jobs.noop")  # never run here: keeps it deferred
    dependent = queue.enqueue("worker.jobs.noop", depends_on=blocker)
    assert dependent.get_status() == JobStatus.DEFERRED
    with queue.connection.pipeline() as pipe:
        pipe.multi()
        queue.ready_job_registry.register_jobs([dependent], pipeline=pipe)
        pipe.execute()
    assert dependent.get_status(refresh=True) == JobStatus.READY_TO_ENQUEUE
    assert dependent.id not in queue.get_job_ids()
    return dependent


def test_a_worker_enqueues_ready_dependents_after_its_job(app):
    from webapp.queues import get_redis
    from worker.__main__ import ScorelineWorker

    with app.app_context():
        connection = get_redis()
        queue = Queue(f"ready-{time.monotonic_ns()}", connection=connection)
        parked = Queue(f"parked-{time.monotonic_ns()}", connection=connection)
        dependent = left_ready(queue, blocker_queue=parked)
        other = queue.enqueue("worker.jobs.noop")
        worker = ScorelineWorker([queue], connection=connection, name=f"w-{time.monotonic_ns()}")
        worker.in_process_functions = frozenset({"worker.jobs.noop"})
        worker.last_cleaned_at = now()  # no maintenance pass at start: that would find it too
        worker.work(burst=True, with_scheduler=False)  # runs `other`, then what it enqueued
        assert other.get_status(refresh=True) == JobStatus.FINISHED
        assert dependent.get_status(refresh=True) == JobStatus.FINISHED
        assert connection.zcard(queue.ready_job_registry.key) == 0


def test_the_watchdog_enqueues_ready_dependents(app):
    from webapp.queues import SCORING_QUEUE, get_queue, get_redis
    from webapp.services.watchdog import reconcile

    with app.app_context():
        queue = get_queue(SCORING_QUEUE)
        parked = Queue(f"parked-{time.monotonic_ns()}", connection=get_redis())
        dependent = left_ready(queue, blocker_queue=parked)
        report = reconcile()
        assert report.ready >= 1
        assert "ready but not queued" in str(report)
        # Queued now (or already taken by the session's worker, if one is running).
        assert dependent.get_status(refresh=True) != JobStatus.READY_TO_ENQUEUE
