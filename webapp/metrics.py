"""Prometheus metrics: every metric Scoreline exports, defined once, and the helpers that move them.

Processes write their samples to memory-mapped files (prometheus_client's multiprocess mode):
gunicorn's workers share `METRICS_DIR/web`, which the web's `/metrics` reads; each
`python -m worker` writes to `METRICS_DIR/worker-<pid>` (its forked work horses too), which
that worker serves on its own port (see `webapp.metrics_server`). What is true of the whole
deployment (queue depth, live workers, disabled endpoints) is read at scrape time by the web's
`/metrics` only (`webapp.metrics_state`).

HTTP requests are counted apart (`webapp.request_metrics`): the poll hot path can't afford a
memory-mapped write per request. Metrics exist once `configure()` ran in the process (the app
factory or the worker does it); before that every helper here does nothing, so a CLI command
or a test without metrics pays nothing. Label values are bounded: route templates, stage
names, outcomes, never ids or URLs.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

from prometheus_client import Counter, Histogram, values

NAMESPACE = "scoreline"
# Seconds: an HTTP answer, a stage, a webhook attempt, an LLM call, a delivery end to end.
HTTP_BUCKETS = (0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
STAGE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)
ATTEMPT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30)
LLM_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120)
DELIVERY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 7200, 36000, 86400)


_lock = threading.Lock()
_defined = False
_directory: Path | None = None


def configure(directory: Path, *, one_fork_at_a_time: bool = False) -> None:
    """Write this process's metrics to `directory` (multiprocess mode); only the first call counts.

    `one_fork_at_a_time`: forked children share one set of files (`horse`), the way an RQ
    worker runs one work horse after another: a file per horse would pile up one per job.
    """
    global _defined, _directory
    with _lock:
        if _defined:
            return
        directory.mkdir(parents=True, exist_ok=True)
        # prometheus_client reads the directory from here when a process opens its files.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
        identify = os.getpid
        if one_fork_at_a_time:
            parent = os.getpid()

            def identify() -> str:
                return "main" if os.getpid() == parent else "horse"

        values.ValueClass = values.MultiProcessValue(identify)
        _define()
        _directory = directory
        _defined = True


def claim_directory(base: Path, prefix: str) -> Path:
    """A fresh folder `<base>/<prefix>-<pid>` for this process and its children to write to.

    Each gunicorn master and each worker claims its own, so two of them on one machine never
    empty each other's files; folders left by processes that died without cleaning up
    (SIGKILL) are removed here.
    """
    base.mkdir(parents=True, exist_ok=True)
    for old in base.glob(f"{prefix}-*"):
        pid = old.name.removeprefix(f"{prefix}-")
        if pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    mine = base / f"{prefix}-{os.getpid()}"
    shutil.rmtree(mine, ignore_errors=True)
    mine.mkdir()
    return mine


def _running(pid: int) -> bool:
    """True when a process with this pid exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def directory() -> Path | None:
    """Where this process writes its metrics, or None before `configure()`."""
    return _directory


def _define() -> None:
    """Create every metric (after the value class is set, so each writes to its file)."""
    global submissions, stage_duration
    global webhook_attempts, webhook_attempt_duration, webhook_delivery_latency
    global watchdog_repairs, llm_requests, llm_duration, llm_tokens

    submissions = Counter(
        "submissions",
        "Assessment submissions: accepted (a new scoring operation) or already_submitted.",
        ["outcome"],
        namespace=NAMESPACE,
    )
    stage_duration = Histogram(
        "stage_duration_seconds",
        "Worker stages from first start to finish, by stage and outcome.",
        ["stage", "outcome"],
        namespace=NAMESPACE,
        buckets=STAGE_BUCKETS,
    )
    webhook_attempts = Counter(
        "webhook_attempts",
        "Webhook delivery attempts by outcome: success, http_error or the error class.",
        ["outcome"],
        namespace=NAMESPACE,
    )
    webhook_attempt_duration = Histogram(
        "webhook_attempt_duration_seconds",
        "Duration of one webhook HTTP attempt, by result (success or failure).",
        ["result"],
        namespace=NAMESPACE,
        buckets=ATTEMPT_BUCKETS,
    )
    webhook_delivery_latency = Histogram(
        "webhook_delivery_latency_seconds",
        "From an event to its successful delivery (retries included), by event type.",
        ["event_type"],
        namespace=NAMESPACE,
        buckets=DELIVERY_BUCKETS,
    )
    watchdog_repairs = Counter(
        "watchdog_repairs",
        "Work the watchdog re-enqueued or gave up on, by kind.",
        ["kind"],
        namespace=NAMESPACE,
    )
    llm_requests = Counter(
        "llm_requests",
        "LLM API calls by model and outcome "
        "(scored, answered, rate_limited, outage, malformed, refused).",
        ["model", "outcome"],
        namespace=NAMESPACE,
    )
    llm_duration = Histogram(
        "llm_request_duration_seconds",
        "Duration of one LLM API call, by model.",
        ["model"],
        namespace=NAMESPACE,
        buckets=LLM_BUCKETS,
    )
    llm_tokens = Counter(
        "llm_tokens",
        "LLM tokens used, by model and kind (prompt or completion).",
        ["model", "kind"],
        namespace=NAMESPACE,
    )


# --- helpers: what the rest of the code calls ---------------------------------------------------


def submission(outcome: str) -> None:
    """A submit: `accepted` (new operation) or `already_submitted`."""
    if _defined:
        submissions.labels(outcome).inc()


def stage_finished(stage: str, outcome: str, seconds: float) -> None:
    """A worker stage ended `completed`, `skipped` or `failed` after `seconds`."""
    if _defined:
        stage_duration.labels(stage, outcome).observe(max(seconds, 0.0))


def webhook_attempt(outcome: str, seconds: float) -> None:
    """One webhook attempt: `success`, `http_error`, or its error class (timeout, dns, ...)."""
    if _defined:
        webhook_attempts.labels(outcome).inc()
        result = "success" if outcome == "success" else "failure"
        webhook_attempt_duration.labels(result).observe(seconds)


def webhook_delivered(event_type: str, seconds: float) -> None:
    """A delivery succeeded `seconds` after its event happened."""
    if _defined:
        webhook_delivery_latency.labels(event_type).observe(max(seconds, 0.0))


def watchdog_repair(kind: str, count: int = 1) -> None:
    """The watchdog re-enqueued `count` of `kind` (stage, delivery, generation) or
    gave up on a stage (gave_up)."""
    if _defined and count:
        watchdog_repairs.labels(kind).inc(count)


def llm_call(model: str, outcome: str, seconds: float | None = None) -> None:
    """One LLM API call ended with `outcome`; `seconds` when a request was actually made.

    Outcomes (webapp.services.llm.calls.Outcome): scored, answered (question generation),
    rate_limited (HTTP 429), outage (5xx, timeout, refused connection), malformed (not a
    rubric), refused (any other 4xx).
    """
    if _defined:
        llm_requests.labels(model, outcome).inc()
        if seconds is not None:
            llm_duration.labels(model).observe(seconds)


def llm_usage(model: str, prompt_tokens: int, completion_tokens: int) -> None:
    """Tokens one LLM call used (from the API's `usage`)."""
    if _defined:
        llm_tokens.labels(model, "prompt").inc(max(prompt_tokens, 0))
        llm_tokens.labels(model, "completion").inc(max(completion_tokens, 0))
