"""Benchmark 5: an exam-end burst scored by an LLM provider at its rate limit (issue 15).

Two workers with an OpenAI key score essays against the provider double (bench/openai_double.py):
lognormal latency (median 1.2 s), a requests-per-minute limit answered with OpenAI's 429s, and
1% 500s. 200 assessments of the demo set (2 essays each) are queued while the workers are
suspended, then timed from the resume to the last completion (the database's own timestamps).

`ideal` = essay calls / the provider's limit + one median latency: the provider's limit allows
nothing faster. Three runs: 600 RPM (with status polls at 100 req/s and the workers' resident
size sampled meanwhile), the same with a 3-minute outage in its middle, and 3,000 RPM.
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from rq.suspension import resume, suspend
from sqlalchemy import func, select

from bench import data, load
from bench.openai_double import OpenAICompatibleServer, ProviderLimits, schema_reply
from bench.report import Figure
from bench.stack import Stack, free_port
from webapp.extensions import db
from webapp.models import Assessment, Operation, StageRun
from webapp.models.base import utcnow
from webapp.queues import SCORING_QUEUE, get_redis
from webapp.scoring.vocabulary import AssessmentStatus

WORKERS = ("bench-llm-1", "bench-llm-2")
MEDIAN_LATENCY = 1.2
ERROR_RATE = 0.01
ESSAYS = 2  # python-basics
FINISHED = (AssessmentStatus.COMPLETED, AssessmentStatus.FAILED)
POLL_RATE = 100  # 200 students polling every 2 s


@dataclass
class Burst:
    """One timed burst."""

    assessments: int
    rpm: int
    elapsed: float
    degraded: int
    failed: int
    calls: int
    rate_limited: int
    max_in_flight: int
    outage: float = 0.0
    # Seconds from the resume: first call sent, last call answered, last stage of each kind done.
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def ideal(self) -> float:
        return self.assessments * ESSAYS / (self.rpm / 60) + MEDIAN_LATENCY


def run(stack: Stack, app, *, smoke: bool) -> list[Figure]:
    """Start the double, a web process and two workers; time three bursts."""
    count = 20 if smoke else 200
    outage = 6.0 if smoke else 180.0
    provider = OpenAICompatibleServer(default=schema_reply())
    web_port = free_port()
    stack.gunicorn("llm-web", "wsgi:app", web_port)
    student = data.student()
    token = data.token(student)
    env = {
        "OPENAI_API_KEY": "bench-key",
        "OPENAI_BASE_URL": provider.base_url,
        "OPENAI_MODEL": "bench-model",
        "OPENAI_TPM": "100000000",
        **({"LLM_BREAKER_COOLDOWN": "2"} if smoke else {}),
    }
    # Submitting (here, through the app's services) sees the key as a web process would.
    app.config["OPENAI_API_KEY"] = env["OPENAI_API_KEY"]
    try:
        _start_workers(stack, env, rpm=600)
        _warm_up(provider, student)
        sampler = RssSampler(stack)
        sampler.start()
        polls: dict = {}
        first = _burst(
            provider, student, count, 600,
            during=lambda ids: polls.update(result=_poll(web_port, token, ids, smoke)),
        )  # fmt: skip
        sampler.stop.set()
        sampler.join()
        with_outage = _burst(provider, student, count, 600, outage=outage)
        stack.stop(*WORKERS)
        _start_workers(stack, env, rpm=3000)
        fast = _burst(provider, student, count, 3000)
    finally:
        app.config["OPENAI_API_KEY"] = ""
        resume(get_redis())
        stack.stop(*WORKERS, "llm-web")
        provider.stop()
    poll = polls.get("result")
    for burst in (first, with_outage, fast):
        _say(
            f"{burst.assessments} assessments at {burst.rpm} RPM"
            f"{f', {burst.outage:.0f} s outage' if burst.outage else ''}: {burst.elapsed:.1f} s "
            f"(ideal {burst.ideal:.1f} s), {burst.calls} calls, {burst.rate_limited} 429s, "
            f"{burst.degraded} degraded, {burst.failed} failed, at most {burst.max_in_flight} "
            f"calls in flight"
        )
    stack.extra["llm"] = {
        "bursts": [vars(b) | {"ideal": round(b.ideal, 2)} for b in (first, with_outage, fast)],
        "worker_rss_mb": [round(x, 1) for x in sampler.samples],
        "status_poll": vars(poll) if poll else None,
    }
    rate_limited_pct = 100 * first.rate_limited / max(first.calls, 1)
    return [
        Figure("llm", f"{count} x 2 essays at 600 RPM: elapsed s", first.elapsed, first.ideal,
               "ratio_max", 1.25, "ideal: essay calls / the limit + one median latency, s"),
        Figure("llm", "600 RPM: degraded assessments", first.degraded, 0, "max", 0,
               "none may be degraded"),
        Figure("llm", "600 RPM: 429s, % of calls", rate_limited_pct, 0, "max", 5,
               f"{first.calls} calls"),
        Figure("llm", f"600 RPM, {outage:.0f} s outage: elapsed minus the outage, s",
               with_outage.elapsed - with_outage.outage, with_outage.ideal, "ratio_max", 1.5,
               "ideal at 600 RPM, s"),
        Figure("llm", "600 RPM with the outage: degraded assessments", with_outage.degraded, 0,
               "max", 0, "none may be degraded"),
        Figure("llm", f"{count} x 2 essays at 3,000 RPM: elapsed s", fast.elapsed, fast.ideal,
               "ratio_max", 1.7, "ideal at 3,000 RPM, s"),
        Figure("llm", f"status poll p99 ms at {POLL_RATE} req/s during the 600 RPM burst",
               poll.p99_ms if poll else float("nan"), poll.p50_ms if poll else float("nan"),
               "max", 50, "the same polls' median, ms"),
        Figure("llm", "worker RSS MB during the 600 RPM burst (largest)", max(sampler.samples),
               statistics.median(sampler.samples), "max", 200, "median of the samples, MB"),
    ]  # fmt: skip


def _start_workers(stack: Stack, env: dict[str, str], *, rpm: int) -> None:
    for name in WORKERS:
        stack.worker(name, role="llm-worker", OPENAI_RPM=str(rpm), **env)


def _warm_up(provider: OpenAICompatibleServer, student) -> None:
    """One assessment through the whole path, so imports and connections are warm."""
    provider.configure(ProviderLimits(rpm=600, median_latency=0.05))
    ids = [data.submit(student)]
    _wait_for(lambda: _finished(ids), 120, "the warm-up assessment")


def _burst(
    provider: OpenAICompatibleServer,
    student,
    count: int,
    rpm: int,
    *,
    outage: float = 0.0,
    during=None,
) -> Burst:
    """Queue `count` assessments on suspended workers, resume, and time them to the last one."""
    connection = get_redis()
    suspend(connection)
    _park_waiting_workers()
    try:
        ids = [data.submit(student) for _ in range(count)]
    finally:
        # The outage starts a little into the burst and lasts `outage` seconds.
        start = 2.0 if outage and outage < 60 else 20.0
        provider.configure(
            ProviderLimits(
                rpm=rpm,
                median_latency=MEDIAN_LATENCY,
                error_rate=ERROR_RATE,
                outages=[(start, start + outage)] if outage else [],
            )
        )
        resumed_at = utcnow()
        resume(connection)
    if during is not None:
        during(ids)
    _wait_for(lambda: _finished(ids), 900 + outage, f"{count} assessments", pause=0.5)
    last, degraded, failed = db.session.execute(
        select(
            func.max(Assessment.completed_at),
            func.count().filter(Assessment.degraded.is_(True)),
            func.count().filter(Assessment.status == AssessmentStatus.FAILED),
        ).where(Assessment.id.in_(ids))
    ).one()
    db.session.commit()
    stats = provider.stats
    phases = _phases(ids, resumed_at, stats.timeline, provider.started)
    _say(f"where the time went (s from the resume): {phases}")
    return Burst(
        assessments=count,
        rpm=rpm,
        elapsed=(_aware(last) - resumed_at).total_seconds(),
        degraded=degraded,
        failed=failed,
        calls=stats.calls,
        rate_limited=stats.rate_limited,
        max_in_flight=stats.max_in_flight,
        outage=outage,
        phases=phases,
    )


def _phases(ids: list[int], resumed_at: datetime, timeline, clock_started: float) -> dict:
    """When the provider saw its first and last call, and when each stage kind last finished,
    in seconds from the resume; and the calls answered in each 5 s of the burst."""
    offset = time.monotonic() - clock_started - (utcnow() - resumed_at).total_seconds()
    phases: dict = {}
    if timeline:
        phases["first_call"] = round(min(t[0] for t in timeline) - offset, 1)
        phases["last_answer"] = round(max(t[1] for t in timeline) - offset, 1)
        buckets: dict[int, int] = {}
        for _, answered, _status in timeline:
            key = int((answered - offset) // 5) * 5
            buckets[key] = buckets.get(key, 0) + 1
        phases["answers_per_5s"] = dict(sorted(buckets.items()))
    rows = db.session.execute(
        select(StageRun.name, func.max(StageRun.completed_at))
        .join(Operation, Operation.id == StageRun.operation_id)
        .where(Operation.assessment_id.in_(ids))
        .group_by(StageRun.name)
    ).all()
    db.session.commit()
    for name, last in rows:
        if last is not None and name != "rule_score":
            phases[f"last_{name}"] = round((_aware(last) - resumed_at).total_seconds(), 1)
    return phases


def _park_waiting_workers() -> None:
    """A worker already blocked on the queue takes one job despite a suspension (RQ checks it
    between jobs): give each a no-op, so no scoring starts before the burst is timed."""
    from rq import Queue
    from rq.job import Job

    queue = Queue(SCORING_QUEUE, connection=get_redis())
    jobs = [queue.enqueue("worker.jobs.noop") for _ in WORKERS]
    time.sleep(1.5)  # each waiting worker takes one, then sees the suspension and sleeps
    for job in jobs:
        if Job.fetch(job.id, connection=get_redis()).get_status() == "queued":
            job.cancel()  # nobody was waiting; don't leave it in the way


def _poll(port: int, token: str, ids: list[int], smoke: bool) -> load.LoadResult:
    """Students polling their status (every 2 s each) while the burst is scored."""
    return load.run(
        f"http://127.0.0.1:{port}",
        [f"/api/v1/assessments/{i}/status" for i in ids],
        seconds=3 if smoke else 30,
        connections=10,
        headers={"Authorization": f"Bearer {token}"},
        rate=POLL_RATE,
    )


class RssSampler(threading.Thread):
    """The largest resident size of the LLM workers, once a second."""

    def __init__(self, stack: Stack) -> None:
        super().__init__(daemon=True, name="bench-rss")
        self.stack = stack
        self.stop = threading.Event()
        self.samples: list[float] = []

    def run(self) -> None:
        while not self.stop.is_set():
            sizes = [p.rss_mb() for p in self.stack.processes if p.role == "llm-worker"]
            if sizes:
                self.samples.append(max(sizes))
            self.stop.wait(1.0)


def _finished(ids: list[int]) -> bool:
    left = db.session.scalar(
        select(func.count()).where(Assessment.id.in_(ids), Assessment.status.not_in(FINISHED))
    )
    db.session.commit()
    return left == 0


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _wait_for(predicate, timeout: float, what: str, pause: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"llm bench: {timeout:.0f} s passed waiting for {what}")
        time.sleep(pause)


def _say(message: str) -> None:
    print(f"bench: llm: {message}", file=sys.stderr, flush=True)
