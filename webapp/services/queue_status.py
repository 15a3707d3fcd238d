"""What RQ holds right now: each queue's length, oldest job and registries, and every worker.

Redis answers in one round trip per queue plus one for the jobs; each function raises
redis.RedisError when Redis is unreachable.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from rq import Worker
from rq.job import Job

from webapp.models.base import as_utc, utcnow
from webapp.queues import QUEUE_NAMES, get_queue, get_redis
from webapp.services.watchdog import heartbeat_deadline


@dataclass
class QueueStats:
    """What one RQ queue holds right now."""

    name: str
    queued: int
    oldest_age: timedelta | None
    started: int
    failed: int
    scheduled: int


@dataclass
class WorkerInfo:
    """One registered RQ worker."""

    name: str
    state: str
    alive: bool
    last_heartbeat: datetime | None
    queues: list[str]
    job_id: str | None
    job_description: str | None


def queue_stats() -> list[QueueStats]:
    """Length, oldest queued job's age and registry sizes of every queue (raises RedisError)."""
    connection = get_redis()
    now = utcnow()
    stats = []
    for name in QUEUE_NAMES:
        queue = get_queue(name)
        with connection.pipeline(transaction=False) as pipe:
            pipe.llen(queue.key)
            pipe.lindex(queue.key, 0)
            pipe.zcard(queue.started_job_registry.key)
            pipe.zcard(queue.failed_job_registry.key)
            pipe.zcard(queue.scheduled_job_registry.key)
            queued, oldest_id, started, failed, scheduled = pipe.execute()
        oldest_age = None
        if oldest_id:
            oldest = Job.fetch_many([oldest_id.decode()], connection=connection)[0]
            if oldest is not None and oldest.enqueued_at is not None:
                oldest_age = max(timedelta(0), now - as_utc(oldest.enqueued_at))
        stats.append(QueueStats(name, queued, oldest_age, started, failed, scheduled))
    return stats


def workers() -> list[WorkerInfo]:
    """Every registered worker, with the watchdog's rule for whether it is alive.

    A busy worker heartbeats every WORKER_HEARTBEAT seconds, so one silent for longer than
    twice that plus 5 s is gone (SIGKILLed workers stay registered until their key expires). An
    idle worker blocks on its queues and heartbeats rarely; being registered is its sign of life.
    """
    connection = get_redis()
    oldest = heartbeat_deadline()
    found = Worker.all(connection=connection)
    job_ids = [w.get_current_job_id() for w in found]
    jobs = Job.fetch_many([j for j in job_ids if j], connection=connection)
    descriptions = {job.id: job.description for job in jobs if job is not None}
    out = []
    for worker, job_id in zip(found, job_ids, strict=True):
        state = str(worker.get_state())
        heartbeat = as_utc(worker.last_heartbeat) if worker.last_heartbeat else None
        busy = state == "busy" or job_id is not None
        alive = not busy or (heartbeat is not None and heartbeat >= oldest)
        out.append(
            WorkerInfo(
                name=worker.name,
                state=state,
                alive=alive,
                last_heartbeat=heartbeat,
                queues=worker.queue_names(),
                job_id=job_id,
                job_description=descriptions.get(job_id) if job_id else None,
            )
        )
    return sorted(out, key=lambda w: w.name)
