"""RQ's bug, reproduced, and the worker's one workaround.

RQ moves a finished job's dependents to the queue's ReadyJobRegistry, then enqueues each under a
WATCH of the whole registry: when anything else enters or leaves that registry meanwhile (another
worker's dependent, at the same moment), RQ skips the job "for now", leaving it for the worker
maintenance pass up to ten minutes later. gpt and rag finishing together on two workers do this
to fusion. ScorelineWorker.drain_ready enqueues such jobs after every job.
"""

from __future__ import annotations

import time

import pytest
import redis
from redis.client import Pipeline
from rq import Queue
from rq.job import Job, JobStatus
from rq.utils import now

pytestmark = pytest.mark.db


class RacingPipeline(Pipeline):
    """A pipeline that, the first time RQ reads `job`'s status under WATCH, has another client
    touch the ready registry: what another worker enqueuing its own ready job at that instant
    does (a member added and removed again)."""

    racing: RacingRedis

    def hget(self, name, key):
        race = self.racing
        if self.watching and not race.raced and name == race.job_key and key == "status":
            race.raced = True
            other = redis.Redis(connection_pool=self.connection_pool)
            other.zadd(race.registry_key, {"another-workers-job": 0})
            other.zrem(race.registry_key, "another-workers-job")
        return super().hget(name, key)


class RacingRedis(redis.Redis):
    """A Redis client whose transactions on `job_key` lose one WATCH race to another client."""

    job_key = ""
    registry_key = ""
    raced = False

    def pipeline(self, transaction=True, shard_hint=None):
        pipe = RacingPipeline(
            self.connection_pool, self.response_callbacks, transaction, shard_hint
        )
        pipe.racing = self
        return pipe


def racing_queue(redis_url: str) -> tuple[Queue, Job, Job]:
    """A queue of this test's own on a racing client; a parent job and its dependent on it, the
    dependent's enqueue set to lose its race."""
    connection = RacingRedis.from_url(redis_url)
    queue = Queue(f"ready-{time.monotonic_ns()}", connection=connection)
    parent = queue.enqueue("worker.jobs.noop")
    dependent = queue.enqueue("worker.jobs.noop", depends_on=parent)
    connection.job_key = (
        dependent.key.decode() if isinstance(dependent.key, bytes) else dependent.key
    )
    connection.registry_key = queue.ready_job_registry.key
    return queue, parent, dependent


def test_rq_leaves_a_ready_dependent_unqueued_when_its_registry_changes_meanwhile(redis_url):
    """The bug itself, in RQ alone. When RQ fixes it this test fails: drop drain_ready then."""
    queue, parent, dependent = racing_queue(redis_url)
    with queue.connection.pipeline() as pipe:
        pipe.watch(parent.dependents_key)
        ready = queue.move_dependents_to_ready(parent, pipeline=pipe)
        pipe.execute()
    queue.enqueue_ready_jobs_by_queue(ready)  # what RQ's worker does after a job succeeds
    assert queue.connection.raced
    assert dependent.get_status(refresh=True) == JobStatus.READY_TO_ENQUEUE
    assert dependent.id not in queue.get_job_ids()  # on no queue: nothing will run it


def test_a_worker_enqueues_the_dependent_rq_left_ready(redis_url):
    from worker.__main__ import ScorelineWorker

    queue, parent, dependent = racing_queue(redis_url)
    worker = ScorelineWorker([queue], connection=queue.connection, name=f"w-{time.monotonic_ns()}")
    worker.in_process_functions = frozenset({"worker.jobs.noop"})
    worker.last_cleaned_at = now()  # no maintenance pass at start: that would find it too
    worker.work(burst=True, with_scheduler=False)  # runs the parent, then what it enqueued
    assert queue.connection.raced, "RQ's enqueue of the dependent did not meet the race"
    assert parent.get_status(refresh=True) == JobStatus.FINISHED
    assert dependent.get_status(refresh=True) == JobStatus.FINISHED
    assert queue.connection.zcard(queue.ready_job_registry.key) == 0
