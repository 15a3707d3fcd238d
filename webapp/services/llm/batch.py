"""Gathered gpt scoring: one RQ job scores the essays of many stage runs at once.

With an OpenAI key, a gpt stage job leads a batch if one of the fleet's LLM_BATCHES slots is
free: it claims the oldest waiting gpt stage runs (first submitted, first scored; a claim is a
compare-and-set of the run's `job_id` to its own), and scores their essays in a thread pool of
LLM_CONCURRENCY calls, each call let through by the fleet's rate limiter and circuit breaker.
It keeps claiming as room frees up, for at most LLM_BATCH_SECONDS. A job that finds no slot
hands its run to a leader (its `job_id` becomes the leader's) and ends; so does a job whose run
a leader already claimed. Every run's `job_id` thus names a live job, and the watchdog's
rules hold unchanged: a leader that dies leaves runs whose job is gone.

Only the main thread touches the database: per essay it stores the partial result and the
progress (the bars move per essay) and the call's token usage; per finished run it writes the
scores and the stage result, and enqueues `fusion` when `rag` is done too (with a key, nothing
else enqueues fusion before gpt is done, except the watchdog: see `waits_for_gpt`). The gpt
jobs of claimed runs that no worker took yet are taken off the queue.

When the breaker opens, the batch stops sending, lets its calls in flight end, and hands its
unfinished runs to a job scheduled with RQ's scheduler for when the breaker allows a probe: no
worker sleeps through an outage and no essay spends an attempt on it. An essay whose provider
has been unavailable for LLM_MAX_WAIT is scored by the offline scorer, with the reason shown in
the report; so are essays the provider refuses outright (a 4xx) or keeps answering with a
malformed rubric. A student never gets 0 points because the provider was down.
"""

from __future__ import annotations

import logging
import queue
import random
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta

import redis
from flask import current_app
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job
from sqlalchemy import select, update
from sqlalchemy.orm import selectinload

from webapp.extensions import db
from webapp.models import Assessment, Operation, QuestionSet, StageRun
from webapp.queues import ALIVE, SCORING_QUEUE, STAGE_JOB, get_redis
from webapp.scoring.base import QuestionInput
from webapp.scoring.gpt import essay_result
from webapp.scoring.rubric import score_essay_offline
from webapp.scoring.vocabulary import OperationStatus, QuestionType, Stage, StageStatus
from webapp.services import progress
from webapp.services.assessments import question_inputs
from webapp.services.llm import usage
from webapp.services.llm.breaker import Permission
from webapp.services.llm.calls import (
    CallResult,
    Outcome,
    Provider,
    essay_tokens,
    notify,
    score_once,
)
from webapp.services.llm.leaders import LeaderSlots, SlotKeeper
from webapp.services.scores import replace_stage_scores

log = logging.getLogger(__name__)

# Set by the worker on a warm shutdown (SIGTERM): stop gathering, let calls in flight end,
# hand the rest to a fresh job, and let the worker exit.
STOP = threading.Event()
JOB_TIMEOUT = 900
# Claims are a database round trip: at most this often while the pool has work, and at most
# CLAIM_CHUNK runs at a time, so sending goes on between claims.
CLAIM_EVERY = 0.25
CLAIM_CHUNK = 25
# Results are written together, at most this often (as often as any stage writes progress:
# the bars still move per essay). On SQLite every commit waits for the one writer's lock, and
# the batch's calls are sent from the same thread.
FLUSH_EVERY = 0.5
# Job ids of jobs a batch handed unfinished runs to (the pipeline's are "stage-<run id>-...").
HANDED_OVER = "gpt-resume-"


def enabled() -> bool:
    """True when essays are scored by the provider (an API key is set)."""
    return bool(current_app.config.get("OPENAI_API_KEY"))


FinishedHook = Callable[[list[Operation]], None]


def run_gpt_job(stage_run_id: int, job_id: str | None, on_finished: FinishedHook) -> None:
    """A gpt stage job: lead a batch, or hand this run to the batch that leads.

    `on_finished(operations)` runs after gpt stage runs are written, with their operations (the
    pipeline enqueues fusion there for those whose rag is done too).
    """
    job_id = job_id or f"local-{secrets.token_hex(4)}"
    slots = LeaderSlots(get_redis(), current_app.config["LLM_BATCHES"])
    for _ in range(10):
        key = slots.acquire(job_id)
        if key is not None:
            _lead(Batch(job_id, slots, on_finished), key)
            return
        leaders = slots.live()
        if not leaders:
            continue  # a slot was freed meanwhile: take it
        if not _compare_and_set(stage_run_id, job_id, leaders[0]):
            return  # not this job's run any more (claimed, superseded or finished)
        if leaders[0] in slots.live():
            return  # that leader sweeps up what it was handed before it ends
        # It ended meanwhile and may have missed the run: take it back and try again.
        if not _compare_and_set(stage_run_id, leaders[0], job_id):
            return
    log.warning("gpt job %s found no leader for stage run %s; leading anyway", job_id, stage_run_id)
    Batch(job_id, slots, on_finished).run()


def _lead(batch: Batch, key: str) -> None:
    """Run a batch while holding a slot, then pass on whatever is still ours."""
    slots, job_id = batch.slots, batch.job_id
    keeper = SlotKeeper(slots, key, job_id)
    keeper.start()
    try:
        batch.run()
    finally:
        keeper.done.set()
        slots.release(key, job_id)
    # After releasing: a job that handed us a run since our last claim sees us gone and takes
    # it back, or we find it here.
    left = db.session.scalars(
        select(StageRun.id)
        .where(StageRun.job_id == job_id, StageRun.status.in_(_WAITING))
        .order_by(StageRun.id)
    ).all()
    db.session.commit()
    if left:
        hand_over(left, job_id, batch.resume_in)


_WAITING = (StageStatus.QUEUED, StageStatus.IN_PROGRESS)
# Loaded with the runs a batch claims or writes, so nothing is lazily loaded one run at a time.
_WITH_SIBLINGS = selectinload(StageRun.operation).selectinload(Operation.stage_runs)
_WITH_ANSWERS = (
    selectinload(Assessment.responses),
    selectinload(Assessment.question_set).selectinload(QuestionSet.questions),
)


def hand_over(run_ids: list[int], job_id: str, delay: float = 0.0) -> str | None:
    """Give these runs (owned by `job_id`) to one fresh gpt job, now or after `delay` seconds."""
    fresh = f"{HANDED_OVER}{run_ids[0]}-{secrets.token_hex(4)}"
    scoring = Queue(SCORING_QUEUE, connection=get_redis())
    options = {
        "job_id": fresh,
        "job_timeout": JOB_TIMEOUT,
        "description": f"gpt for {len(run_ids)} waiting stage run(s)",
    }
    # The job exists before any run names it: a run whose job cannot be found looks abandoned
    # (to fusion and the watchdog). If it starts first, it claims them from this ended job.
    try:
        if delay > 0:
            scoring.enqueue_in(timedelta(seconds=delay), STAGE_JOB, run_ids[0], **options)
        else:
            scoring.enqueue(STAGE_JOB, run_ids[0], **options)
    except redis.RedisError:
        log.warning("could not enqueue a gpt job for %s runs; the watchdog will", len(run_ids))
        return None
    moved = [run_id for run_id in run_ids if _compare_and_set(run_id, job_id, fresh)]
    log.info("handed %d gpt stage run(s) to job %s (in %.1f s)", len(moved), fresh, delay)
    return fresh


def _compare_and_set(stage_run_id: int, owner: str, new_owner: str) -> bool:
    """Move an unfinished run from one job to another, if `owner` still has it."""
    changed = db.session.execute(
        update(StageRun)
        .where(
            StageRun.id == stage_run_id,
            StageRun.job_id == owner,
            StageRun.status.in_(_WAITING),
        )
        .values(job_id=new_owner)
        .execution_options(synchronize_session=False)
    ).rowcount
    db.session.commit()
    return changed == 1


def _drop_queued_jobs(job_ids: list[str]) -> None:
    """Take the gpt jobs of runs a batch just claimed off the queue, where no worker took them
    yet: each would only find its run claimed and end (nothing waits on them: fusion is
    enqueued by the batch). A job already started, or scheduled, runs and does nothing."""
    if not job_ids:
        return
    connection = get_redis()
    scoring = Queue(SCORING_QUEUE, connection=connection)
    try:
        with connection.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                scoring.remove(job_id, pipeline=pipe)
            removed = pipe.execute()
        dropped = [Job.key_for(job_id) for job_id, n in zip(job_ids, removed, strict=True) if n]
        if dropped:
            connection.delete(*dropped)
    except redis.RedisError:
        log.warning("could not take %d claimed gpt jobs off the queue", len(job_ids))


def waits_for_gpt(operation: Operation) -> bool:
    """True when this operation's gpt stage is unfinished and a live job still owns it.

    Fusion's RQ dependency is the gpt job first enqueued, which ends as soon as it hands its run
    to a batch; fusion then waits (does nothing), and the batch enqueues it when gpt is done.
    """
    run = operation.stage(Stage.GPT)
    if run is None or StageStatus(run.status).finished or not run.job_id:
        return False
    slots = LeaderSlots(get_redis(), current_app.config["LLM_BATCHES"])
    if run.job_id in slots.live():
        return True
    try:
        status = Job.fetch(run.job_id, connection=get_redis()).get_status(refresh=False)
    except NoSuchJobError:
        return False
    return status in ALIVE


@dataclass
class Task:
    """One essay waiting for its call."""

    run_id: int
    essay: QuestionInput
    tokens: int
    attempts: int = 0
    not_before: float = 0.0


@dataclass
class RunWork:
    """One claimed stage run: its essays, what is scored so far, and since when the provider
    has been failing it (epoch seconds; kept in the run's partial result across hand-overs)."""

    run_id: int
    assessment_id: int
    essays: list[QuestionInput]
    results: dict[int, dict] = field(default_factory=dict)
    waiting_since: float | None = None
    problem: str = ""  # the provider's last failure, for the fallback's reason

    @property
    def done(self) -> bool:
        return len(self.results) == len(self.essays)


class Batch:
    """The leader's loop: claim, send within the limits, record, finish runs."""

    def __init__(self, job_id: str, slots: LeaderSlots, on_finished: FinishedHook) -> None:
        config = current_app.config
        self.job_id = job_id
        self.slots = slots
        self.on_finished = on_finished
        self.max_retries = config["OPENAI_MAX_RETRIES"]
        self.max_wait = config["LLM_MAX_WAIT"]
        self.concurrency = max(1, config["LLM_CONCURRENCY"])
        provider = Provider.from_config(config, get_redis())
        self.client, self.model, self.timeout = provider.client, provider.model, provider.timeout
        self.limiter, self.breaker = provider.limiter, provider.breaker
        self.deadline = time.monotonic() + config["LLM_BATCH_SECONDS"]
        self.pending: deque[Task] = deque()
        self.in_flight: dict[Future, Task] = {}
        # Calls report here when they end: the main thread waits on one queue, not on every
        # future in flight (concurrent.futures.wait registers a waiter on each, each time).
        self.ended: queue.SimpleQueue[Future] = queue.SimpleQueue()
        self.work: dict[int, RunWork] = {}
        self.resume_in = 0.0  # when handing over: how long until the provider may be tried
        self.rng = random.Random()
        self.dirty: set[int] = set()  # runs changed since the last flush
        self._closed_until = 0.0  # the breaker was closed when last asked, until then
        self._claimed_at = 0.0
        self._flushed_at = 0.0

    # --- the loop -------------------------------------------------------------------------

    def run(self) -> None:
        """Score until nothing is left to claim, the batch's time is up, or the breaker opens."""
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="llm-call") as pool:
            while True:
                self._collect(0)
                gathering = not STOP.is_set() and time.monotonic() < self.deadline
                if gathering and len(self.pending) < self.concurrency:
                    self._claim()
                if not gathering or (not self.pending and not self.in_flight):
                    if not self.in_flight:
                        break
                    self._collect(0.1)
                    continue
                ready = self._ready(self.concurrency - len(self.in_flight))
                if not ready:
                    self._collect(0.02)
                    continue
                permission = self._permission()
                if not permission.allowed:
                    if not self.in_flight:
                        self.resume_in = max(permission.wait, 1.0)
                        break
                    self._collect(min(permission.wait, 0.2))
                    continue
                if permission.probe:
                    ready = ready[:1]  # half-open: exactly one call finds out
                grant = self.limiter.acquire([task.tokens for task in ready])
                if not grant.count:  # the window's next free slot, unless a call ends first
                    self._collect(min(grant.wait, 0.2))
                    continue
                for task in ready[: grant.count]:
                    self._send(pool, task)
        self._fall_back_expired()
        self._flush()
        if self.resume_in and self.work:
            self.resume_in = min(self.resume_in, self._next_fallback_in())

    def _send(self, pool: ThreadPoolExecutor, task: Task) -> None:
        """Hand one essay's call to a pool thread; it reports on `ended` when it is over."""
        self.pending.remove(task)
        call = pool.submit(score_once, self.client, self.model, task.essay, self.timeout)
        self.in_flight[call] = task
        call.add_done_callback(self.ended.put)

    def _permission(self) -> Permission:
        """The breaker's answer; a closed breaker is asked again at most every 0.1 s (a failure
        seen here reopens it at once: `_handle` forgets the cached answer)."""
        now = time.monotonic()
        if self._closed_until > now:
            return Permission(True)
        permission = self.breaker.permission()
        if permission.allowed and not permission.probe:
            self._closed_until = now + 0.1
        return permission

    def _ready(self, room: int) -> list[Task]:
        """Up to `room` (at most 16) of the oldest tasks whose backoff is over (retried tasks
        go back to the front)."""
        now = time.monotonic()
        ready = []
        for task in self.pending:
            if len(ready) >= min(room, 16):
                break
            if task.not_before <= now:
                ready.append(task)
        return ready

    def _collect(self, timeout: float) -> None:
        """Handle every finished call; wait up to `timeout` for one if none has finished."""
        if not self.in_flight:
            if timeout:
                time.sleep(timeout)
        else:
            try:
                ended = [self.ended.get(timeout=timeout) if timeout else self.ended.get_nowait()]
                while not self.ended.empty():
                    ended.append(self.ended.get_nowait())
            except queue.Empty:
                ended = []
            for future in ended:
                self._handle(self.in_flight.pop(future), future.result())
        if time.monotonic() - self._flushed_at >= FLUSH_EVERY or not self.in_flight:
            self._flush()
            self._flushed_at = time.monotonic()

    # --- claiming ---------------------------------------------------------------------------

    def _claim(self) -> None:
        """Take the oldest waiting gpt runs no live leader owns, enough to keep the pool busy."""
        now = time.monotonic()
        if self.pending and now - self._claimed_at < CLAIM_EVERY:
            return
        self._flush()  # finished runs leave room; their fusion should not wait for claims
        self._claimed_at = now
        others = set(self.slots.live()) - {self.job_id}
        wanted = min(CLAIM_CHUNK, max(1, (self.concurrency - len(self.pending)) // 2))
        candidates = db.session.execute(
            select(StageRun.id, StageRun.job_id)
            .join(Operation, Operation.id == StageRun.operation_id)
            .where(
                StageRun.name == Stage.GPT,
                StageRun.status.in_(_WAITING),
                StageRun.job_id.is_not(None),
                Operation.status.in_([OperationStatus.PENDING, OperationStatus.PROCESSING]),
            )
            .order_by(StageRun.id)
            .limit(wanted + len(self.work) + 20)
        ).all()
        db.session.commit()
        chosen = [
            run_id
            for run_id, owner in candidates
            if run_id not in self.work and owner not in others
        ][:wanted]
        if not chosen:
            return
        # One compare-and-set for the lot: whatever a live leader took meanwhile stays theirs.
        claim = update(StageRun).where(
            StageRun.id.in_(chosen), StageRun.status.in_(_WAITING), StageRun.job_id.is_not(None)
        )
        if others:
            claim = claim.where(StageRun.job_id.not_in(others))
        db.session.execute(
            claim.values(job_id=self.job_id).execution_options(synchronize_session=False)
        )
        mine = db.session.scalars(
            select(StageRun)
            .where(StageRun.id.in_(chosen), StageRun.job_id == self.job_id)
            .order_by(StageRun.id)
            .options(_WITH_SIBLINGS)
            .execution_options(populate_existing=True)
        ).all()
        # Their assessments with answers and questions in three queries, not three per run.
        assessments = {
            a.id: a
            for a in db.session.scalars(
                select(Assessment)
                .where(Assessment.id.in_({run.operation.assessment_id for run in mine}))
                .options(*_WITH_ANSWERS)
            )
        }
        for run in mine:
            self._start(run, assessments[run.operation.assessment_id])
        db.session.commit()
        # The pipeline's own job of each run (one run each; a hand-over job may own several).
        owners = dict(candidates)
        _drop_queued_jobs([owners[r.id] for r in mine if owners[r.id].startswith(f"stage-{r.id}-")])

    def _start(self, run: StageRun, assessment: Assessment) -> None:
        """Load a claimed run's essays, restore what an earlier batch scored, queue the rest."""
        run_id = run.id
        essays = [q for q in question_inputs(assessment) if q.type == QuestionType.ESSAY]
        partial = (run.result or {}).get("partial", {})
        work = RunWork(
            run_id,
            assessment.id,
            essays,
            waiting_since=partial.get("waiting_since"),
            problem=partial.get("problem", ""),
        )
        work.results = {e["question_id"]: e for e in partial.get("essays", [])}
        if run.status == StageStatus.QUEUED:
            progress.start_stage(run, commit=False)
        self.work[run_id] = work
        for essay in essays:
            if essay.id in work.results:
                continue
            if not essay.answered:  # a blank answer needs no call: zero on every dimension
                work.results[essay.id] = essay_result(essay, score_essay_offline("", (), ""))
            else:
                self.pending.append(Task(run_id, essay, essay_tokens(essay)))
        if work.done:
            self.dirty.add(run_id)

    # --- outcomes ---------------------------------------------------------------------------

    def _handle(self, task: Task, result: CallResult) -> None:
        """What one call's outcome means for its essay, the limiter and the breaker."""
        notify(result, self.model)
        work = self.work.get(task.run_id)
        if work is None:
            return  # the run was superseded meanwhile
        if result.outcome in (Outcome.SCORED, Outcome.MALFORMED):
            self.breaker.succeeded()
            self.limiter.observe(result.headers, task.tokens)
            usage.record(work.run_id, work.assessment_id, self.model, result.usage)
            work.waiting_since = None
        if result.outcome == Outcome.SCORED:
            work.results[task.essay.id] = essay_result(task.essay, result.rubric)
        elif result.outcome == Outcome.MALFORMED:
            task.attempts += 1
            if task.attempts > self.max_retries:
                self._fall_back(work, task.essay, f"its answers were not a valid rubric "
                                f"after {task.attempts} attempts ({result.problem})")  # fmt: skip
            else:
                self._retry(task, self._backoff(task.attempts))
        elif result.outcome == Outcome.RATE_LIMITED:
            wait_for = result.retry_after if result.retry_after is not None else 1.0
            self.limiter.hold(wait_for)
            self._retry(task, wait_for)
        elif result.outcome == Outcome.OUTAGE:
            self._closed_until = 0.0
            self.breaker.failed(result.problem)
            work.waiting_since = work.waiting_since or time.time()
            work.problem = result.problem
            if time.time() - work.waiting_since >= self.max_wait:
                self._fall_back(work, task.essay, self._unavailable(work))
            else:
                task.attempts += 1
                self._retry(task, self._backoff(task.attempts))
        else:
            log.warning("provider refused essay %s: %s", task.essay.id, result.problem)
            self._fall_back(work, task.essay, f"the OpenAI API refused it ({result.problem})")
        self.dirty.add(work.run_id)

    def _retry(self, task: Task, delay: float) -> None:
        """Back to the front of the line (it is older than anything behind it) after `delay`."""
        task.not_before = time.monotonic() + delay
        self.pending.appendleft(task)

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter, capped at 30 s."""
        return min(30.0, 0.5 * 2**attempt) * self.rng.uniform(0.5, 1.5)

    def _unavailable(self, work: RunWork) -> str:
        """Why an essay falls back after LLM_MAX_WAIT, in words."""
        waited = time.time() - (work.waiting_since or time.time())
        span = f"{waited / 60:.0f} min" if waited >= 90 else f"{waited:.0f} s"
        return f"the OpenAI API was unavailable for {span} ({work.problem or 'no answer'})"

    def _fall_back(self, work: RunWork, essay: QuestionInput, why: str) -> None:
        """Score one essay with the offline scorer, saying why in the report."""
        number = work.essays.index(essay) + 1
        reason = f"Essay {number} was scored by the offline rubric scorer: {why}."
        rubric = score_essay_offline(essay.prompt, essay.key_concepts, essay.answer)
        work.results[essay.id] = essay_result(essay, rubric, fallback=reason)
        self.pending = deque(
            t for t in self.pending if t.essay.id != essay.id or t.run_id != work.run_id
        )

    def _fall_back_expired(self) -> None:
        """Essays whose provider has been down for LLM_MAX_WAIT: offline now, not next time."""
        for work in list(self.work.values()):
            if work.waiting_since and time.time() - work.waiting_since >= self.max_wait:
                for task in [t for t in self.pending if t.run_id == work.run_id]:
                    self._fall_back(work, task.essay, self._unavailable(work))
                self.dirty.add(work.run_id)

    def _next_fallback_in(self) -> float:
        """Seconds until the earliest waiting run reaches LLM_MAX_WAIT."""
        waits = [
            w.waiting_since + self.max_wait - time.time()
            for w in self.work.values()
            if w.waiting_since
        ]
        return max(1.0, min(waits)) if waits else float("inf")

    # --- writing ----------------------------------------------------------------------------

    def _flush(self) -> None:
        """Write every run that changed since the last flush in one transaction: partial
        results and progress, or scores and the stage result for runs now done; then start
        fusion for those. One commit per flush rather than per essay keeps SQLite's lock short
        for the web processes reading status meanwhile."""
        if not self.dirty:
            return
        ids = sorted(self.dirty)
        self.dirty.clear()
        runs = {
            run.id: run
            for run in db.session.scalars(
                select(StageRun)
                .where(StageRun.id.in_(ids))
                .options(_WITH_SIBLINGS)
                .execution_options(populate_existing=True)
            )
        }
        finished = []
        for run_id in ids:
            work = self.work.get(run_id)
            run = runs.get(run_id)
            if work is None:
                continue
            if run is None or run.job_id != self.job_id or StageStatus(run.status).finished:
                log.warning("gpt stage run %s is no longer this batch's; result dropped", run_id)
                self._forget(run_id)
                continue
            if work.done:
                self._write_result(run, work)
                finished.append(run)
            else:
                self._write_partial(run, work)
        db.session.commit()
        for run in finished:
            self.work.pop(run.id, None)
        self.on_finished([run.operation for run in finished])

    def _forget(self, run_id: int) -> None:
        """Drop a run this batch no longer owns (the watchdog gave it a new job)."""
        self.work.pop(run_id, None)
        self.pending = deque(t for t in self.pending if t.run_id != run_id)

    def _write_partial(self, run: StageRun, work: RunWork) -> None:
        """The essays scored so far, and the bar moved to match (below 100 until done)."""
        run.result = {
            "partial": {
                "essays": list(work.results.values()),
                "waiting_since": work.waiting_since,
                "problem": work.problem,
            }
        }
        value = max(run.percentage, min(len(work.results) * 100 // len(work.essays), 99))
        if value != run.percentage:
            run.percentage = value
            progress.refresh_operation_progress(run.operation)

    def _write_result(self, run: StageRun, work: RunWork) -> None:
        """The run's scores and stage result (committed by the flush, all or nothing)."""
        results = [work.results[essay.id] for essay in work.essays]
        replace_stage_scores(run.operation_id, Stage.GPT, results)
        fallbacks = [r["fallback_reason"] for r in results if r.get("fallback_reason")]
        # The stage names who scored its essays: the model, or the offline scorer when every
        # essay had to fall back to it (each essay names its own scorer either way).
        scorers = {r["scorer"] for r in results}
        scorer = scorers.pop() if len(scorers) == 1 else f"openai:{self.model}"
        outcome = {"essays": results, "scorer": scorer, "fallbacks": fallbacks}
        progress.complete_stage(run, outcome, skipped=not results)
