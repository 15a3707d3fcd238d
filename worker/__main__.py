"""`python -m worker`: an RQ worker with the scheduler on, listening on every queue the app uses.

The app context is pushed once here, so every job (in a forked work horse, or in this process
for the short ones: see ScorelineWorker) runs inside it.
Everything a job needs that is the same for every job (imports, SQLAlchemy's mapper setup, the
knowledge index) is made here too, once, before the first fork: a horse that had to redo it would
spend most of its life on it.

Each worker also runs RQ's cron scheduler in a child process, which enqueues the periodic prune
and the watchdog (`worker.jobs`: a Redis lock makes one worker do each per interval).
"""

from __future__ import annotations

import argparse
import gc
import logging
import multiprocessing
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import redis
from flask import Flask
from rq import Queue, Worker, worker_registration
from rq.cron import CronScheduler
from rq.exceptions import StopRequested
from rq.job import Job
from rq.worker import WorkerStatus
from sqlalchemy.orm import configure_mappers

from webapp import correlation, create_app, metrics
from webapp.config import Config
from webapp.extensions import db
from webapp.log_format import configure_logging
from webapp.metrics_server import serve_worker_metrics
from webapp.queues import (
    DEFAULT_QUEUE,
    QUEUE_NAMES,
    STAGE_JOB,
    WEBHOOKS_QUEUE,
    get_redis,
    redis_url,
)
from webapp.scoring.retrieval import default_knowledge_base
from webapp.services.llm import batch
from worker import jobs

log = logging.getLogger("worker")


def main(argv: list[str] | None = None) -> None:
    """Start a worker; `--burst` drains the queues and exits."""
    parser = argparse.ArgumentParser(prog="python -m worker", description=__doc__)
    parser.add_argument("--burst", action="store_true", help="exit once the queues are empty")
    parser.add_argument("--name", default=None, help="worker name (default: RQ's own)")
    args = parser.parse_args(argv)

    config = Config()
    configure_logging(config.LOG_FORMAT, config.LOG_LEVEL)
    # Before the app exists: its factory would otherwise pick the web's metrics folder.
    metrics_dir = metrics.claim_directory(Path(config.METRICS_DIR), "worker")
    metrics.configure(metrics_dir, one_fork_at_a_time=True)
    # The OpenAI client's HTTP library logs every request at INFO: hundreds a minute in a burst.
    for name in ("httpx", "httpx2", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    app = create_app()
    app.app_context().push()
    engine = db.engine
    # A forked work horse must not share the parent's database sockets.
    os.register_at_fork(after_in_child=lambda: engine.dispose(close=False))
    warm_up(app)
    cron = None if args.burst else start_cron(app)
    server = serve_worker_metrics(app, metrics_dir)
    try:
        work_until_stopped(app, burst=args.burst, name=args.name)
    finally:
        if cron is not None:
            cron.terminate()  # SIGTERM: CronScheduler.start() registers its death and returns
            cron.join(timeout=5)
        if server is not None:
            server.shutdown()
        shutil.rmtree(metrics_dir, ignore_errors=True)


def warm_up(app: Flask) -> None:
    """Do once, in the worker, the setup every work horse would otherwise repeat per job.

    Each job runs in a fresh fork of this process, so whatever is lazily built on first use is
    built again, and thrown away, by every job: SQLAlchemy's mapper configuration (about 30 ms),
    the BM25 knowledge index (about 30 ms), the OpenAI client library (about 0.7 s). Built here,
    the horses inherit them. `gc.freeze()` then moves all of it out of the collector's sight, so
    a horse's garbage collections don't write to (and copy) every inherited page.
    """
    configure_mappers()
    default_knowledge_base().build_index()
    if app.config.get("OPENAI_API_KEY"):
        import openai  # noqa: F401  (only with a key: 0.7 s and 30 MB the offline scorer never needs)
    gc.collect()
    gc.freeze()


# Scoring stages: local work of a few milliseconds (offline scorer, retrieval, the report), or,
# with an OpenAI key, gpt batches whose calls wait in threads of this process.
STAGE_JOBS = frozenset({STAGE_JOB})


class ScorelineWorker(Worker):
    """RQ's forking Worker, except that short jobs run in this process, and that it enqueues
    dependents RQ left "ready" after every job (see drain_ready).

    Jobs run in a forked work horse, as RQ does by default, except two kinds that run in this
    process, because a fork (with the reconnects and cold caches a horse starts with) costs
    several times their own work: webhook deliveries (HTTP requests bounded by WEBHOOK_TIMEOUT;
    a fork costs about 20 ms against 1) and scoring stages (the offline scorer, retrieval and the
    report: milliseconds of local work, against about 50 ms in a fresh horse; with an OpenAI key
    a gpt job is a batch whose calls wait in a thread pool here, see webapp.services.llm.batch).
    They run as RQ's SimpleWorker runs every job, keeping RQ's job timeout (SIGALRM), while a
    thread keeps the heartbeats going. Anything else forks.

    Only RQ's public methods are overridden: execute_job, handle_warm_shutdown_request,
    dequeue_job_and_maintain_ttl and heartbeat.
    """

    in_process_queues = frozenset({WEBHOOKS_QUEUE})
    # Set per worker (make_worker): the functions run here rather than in a horse.
    in_process_functions: frozenset[str] = frozenset()
    # Set when SIGTERM/SIGINT asked for a warm shutdown (RQ keeps its own flag private).
    asked_to_stop = False

    def execute_job(self, job: Job, queue: Queue) -> None:
        """Run the job (here or in a horse) with its enqueuer's log fields bound."""
        try:
            # Log lines of the job (in this process or the horse forked from here) carry the
            # ids its enqueuer bound: request, assessment, operation; and the job's own id.
            with correlation.job_scope(job):
                if self.runs_here(job, queue):
                    self.execute_job_here(job, queue)
                else:
                    super().execute_job(job, queue)
        finally:
            self.drain_ready()

    def runs_here(self, job: Job, queue: Queue) -> bool:
        """True for the jobs run in this process rather than a forked horse."""
        return queue.name in self.in_process_queues or job.func_name in self.in_process_functions

    def execute_job_here(self, job: Job, queue: Queue) -> None:
        """SimpleWorker.execute_job, with the forking worker's heartbeats kept up from a thread."""
        execution = self.prepare_execution(job)
        done = threading.Event()
        beat = threading.Thread(
            target=self._keep_beating, args=(job, execution, done), name="rq-heartbeat"
        )
        beat.start()
        try:
            self.perform_job(job, queue, execution)
        finally:
            done.set()
            beat.join()
        self.set_state(WorkerStatus.IDLE)

    def _keep_beating(self, job: Job, execution, done: threading.Event) -> None:
        """What the forking worker's monitor loop does while a horse works."""
        while not done.wait(self.job_monitoring_interval):
            try:
                self.maintain_heartbeats(job, execution)
            except redis.RedisError:
                log.warning("worker: heartbeat failed (Redis unreachable)")

    def handle_warm_shutdown_request(self) -> None:
        """RQ's hook for a warm shutdown (SIGTERM/SIGINT): note it, and make a gpt batch running
        here stop gathering and hand its work on."""
        self.asked_to_stop = True
        batch.STOP.set()
        super().handle_warm_shutdown_request()

    def note_stop_request(self, signum: int, frame) -> None:
        """The signal handler until RQ installs its own: note a warm shutdown, raise nothing.

        (An exception raised from a signal handler during startup can land in code that
        swallows it, a fork's at-fork hooks for one, and the stop would be lost.) A child forked
        meanwhile (RQ's scheduler) inherits this handler until it sets its own: there the
        signal does what it does by default, ending the child.
        """
        if os.getpid() != self.pid:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.handle_warm_shutdown_request()

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None):
        """RQ's wait for the next job; a warm shutdown asked for at any time (during startup
        too) ends the loop here instead, as RQ's own signal handler does while it waits.

        (Checked after the loop's first maintenance pass, as RQ checks its own flag: a
        scheduler process forked moments before can miss the SIGTERM that stops it.)
        """
        if self.asked_to_stop:
            raise StopRequested()
        return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)

    def drain_ready(self, attempts: int = 3) -> int:
        """Enqueue dependents RQ moved to "ready" but did not get onto their queue.

        RQ's workaround-worthy bug (tests/test_ready_dependents.py reproduces it): the
        ReadyJobRegistry enqueues a ready dependent under a WATCH of the whole registry, and
        skips it when any other job enters or leaves that registry meanwhile, leaving it for the
        maintenance pass up to ten minutes later. Two jobs finishing at once (gpt and rag on two
        workers) do exactly that to fusion. So after every job this worker checks the registries
        (one round trip) and enqueues what it finds, trying again briefly while another worker
        is busy with the same registry. Returns how many it enqueued.
        """
        enqueued = 0
        try:
            for attempt in range(attempts):
                with self.connection.pipeline(transaction=False) as pipe:
                    for queue in self.queues:
                        pipe.zcard(queue.ready_job_registry.key)
                    waiting = [q for q, n in zip(self.queues, pipe.execute(), strict=True) if n]
                if not waiting:
                    break
                for queue in waiting:
                    enqueued += len(queue.ready_job_registry.cleanup())
                time.sleep(0.01 * (attempt + 1))
        except redis.RedisError:
            log.warning("worker: could not check for ready dependents (Redis unreachable)")
        return enqueued

    _registration_checked = 0.0

    def heartbeat(self, timeout: int | None = None, pipeline=None) -> None:
        """RQ's heartbeat; and a worker whose registration vanished registers again.

        A Redis restarted empty (or flushed) forgets every worker while they keep working: the
        watchdog would then take each started job for one whose worker died (and run it again)
        and /readyz would report no worker. Checked at most once per job monitoring interval.
        """
        super().heartbeat(timeout, pipeline)
        if time.monotonic() - self._registration_checked >= self.job_monitoring_interval:
            self._registration_checked = time.monotonic()
            self._register_again_if_forgotten()

    def _register_again_if_forgotten(self) -> None:
        try:
            if self.connection.sismember(self.redis_workers_keys, self.key):
                return
            with self.connection.pipeline() as pipe:
                pipe.hset(self.key, mapping=self.serialize())
                worker_registration.register(self, pipe)
                pipe.expire(self.key, self.worker_ttl + 60)
                pipe.execute()
        except redis.RedisError:
            return  # Redis is still away: the next heartbeat tries again
        log.warning("worker: its registration was gone (Redis restarted?); registered again")


def make_worker(app: Flask, name: str | None = None) -> ScorelineWorker:
    """A worker on every queue, configured from the app (heartbeat, what runs in-process)."""
    worker = ScorelineWorker(
        list(QUEUE_NAMES),
        connection=get_redis(app),
        name=name,
        job_monitoring_interval=app.config["WORKER_HEARTBEAT"],
    )
    worker.in_process_functions = STAGE_JOBS
    return worker


def work_until_stopped(app: Flask, *, burst: bool, name: str | None) -> None:
    """Run RQ workers until one is asked to stop (SIGTERM, SIGINT) or a burst ends.

    RQ's worker quits when Redis vanishes at the wrong moment; this one starts a fresh worker
    (with backoff) instead, so a Redis outage or restart never needs a person to act.
    """
    delay = 1.0
    while True:
        try:
            worker = make_worker(app, name)  # RQ names its Redis connection: Redis must answer
        except redis.ConnectionError:
            log.warning("worker: Redis unreachable at start; trying again in %.0f s", delay)
            time.sleep(delay)
            delay = min(delay * 2, 30.0)
            continue
        # RQ installs its SIGTERM/SIGINT handlers only once it has registered and started its
        # scheduler, so a signal sent as soon as the worker shows up in Redis (as a supervisor or
        # a test may do) would kill it outright. Until then a signal is noted, and the work loop
        # ends before it waits for a job (dequeue_job_and_maintain_ttl): a warm shutdown, exit 0.
        signal.signal(signal.SIGTERM, worker.note_stop_request)
        signal.signal(signal.SIGINT, worker.note_stop_request)
        try:
            worker.work(burst=burst, with_scheduler=True, logging_level="INFO")
        except redis.ConnectionError:
            log.warning("worker: Redis connection lost", exc_info=True)
        if burst or worker.asked_to_stop:
            return
        log.warning("worker: stopped without being asked to (Redis gone?); again in %.0f s", delay)
        time.sleep(delay)
        delay = min(delay * 2, 30.0)


# Each cron job: the function, the setting holding its interval, and its RQ job options.
CRON_JOBS = (
    (jobs.scheduled_prune, "PRUNE_INTERVAL", {"job_timeout": 600, "result_ttl": 3600}),
    (jobs.scheduled_reconcile, "WATCHDOG_INTERVAL", {"job_timeout": 300, "result_ttl": 600}),
)


def start_cron(app: Flask) -> multiprocessing.Process | None:
    """RQ's cron scheduler in a child process: prune every PRUNE_INTERVAL s, watchdog every
    WATCHDOG_INTERVAL s (0 turns either off, and both off starts nothing).

    A child of this process (as RQ's own scheduler is) rather than `rq cron` beside it, so
    `python -m worker` stays the one command to run; it stops with the worker.
    """
    schedule = [
        (func, app.config[setting], options)
        for func, setting, options in CRON_JOBS
        if app.config[setting] > 0
    ]
    if not schedule:
        return None
    process = multiprocessing.get_context("fork").Process(
        target=run_cron, args=(redis_url(app), schedule, os.getpid()), name="rq-cron", daemon=True
    )
    process.start()
    return process


def run_cron(url: str, schedule: list, parent: int) -> None:
    """The cron child: CronScheduler.start(), started again after Redis went away, until SIGTERM
    or SIGINT (or the worker that started it is gone)."""
    connection = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=10)
    scheduler = CronScheduler(connection=connection)
    for func, interval, options in schedule:
        scheduler.register(func, queue_name=DEFAULT_QUEUE, interval=interval, **options)
    threading.Thread(target=_stop_when_orphaned, args=(parent,), daemon=True).start()
    while True:
        try:
            scheduler.start()  # returns once a signal stopped it
            return
        except redis.RedisError:
            log.warning("cron: Redis unreachable; starting again in 5 s", exc_info=True)
        try:
            time.sleep(5)
        except StopRequested:  # CronScheduler's signal handler, still installed
            return


def _stop_when_orphaned(parent: int) -> None:
    """Stop the cron child once its worker died without saying so (SIGKILL)."""
    while os.getppid() == parent:
        time.sleep(1)
    os.kill(os.getpid(), signal.SIGTERM)


if __name__ == "__main__":
    main()
