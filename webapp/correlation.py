"""Correlation ids: what ties the log lines of one submission together, across processes.

A web request binds its request id (from `X-Request-ID`, or made) and the assessment and
operation it touches; every job enqueued while they are bound carries them in `job.meta`, and
the worker binds them again (with the job's id) while it runs that job. So the lines of a
submit request, its stage jobs, and the webhook deliveries those jobs cause share one
`request_id` and `assessment_id`. The log formatter (`webapp.log_format`) adds them to each line.
"""

from __future__ import annotations

import contextvars
import itertools
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager

# The fields carried from a request into the jobs it enqueues (job_id is each job's own).
CARRIED = ("request_id", "assessment_id", "operation_id")
META_KEY = "correlation"
# An incoming X-Request-ID is used when it is short and plain (it ends up in logs and headers).
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")

# Never mutated in place (bind and scope set a new dict), so one shared empty default is safe.
_EMPTY: dict[str, object] = {}
_fields: contextvars.ContextVar[dict[str, object]] = contextvars.ContextVar(
    "scoreline_correlation", default=_EMPTY
)


def request_id_from(header: str | None) -> str:
    """The client's X-Request-ID when it is usable, else a new one (32 hex digits)."""
    if header and _REQUEST_ID.fullmatch(header):
        return header
    # A random prefix per process and a counter: unique, and no system call per request.
    pid, prefix = _prefix
    if pid != os.getpid():
        pid, prefix = _prefix[:] = [os.getpid(), os.urandom(8).hex()]
    return f"{prefix}{next(_sequence):016x}"


_prefix: list = [os.getpid(), os.urandom(8).hex()]
_sequence = itertools.count(1)


def enter(**fields: object) -> contextvars.Token:
    """Bind exactly these fields until `leave(token)`: `scope` without a generator (hot path)."""
    return _fields.set(fields)


def leave(token: contextvars.Token) -> None:
    """Restore what was bound before `enter`."""
    _fields.reset(token)


def current() -> dict[str, object]:
    """The fields bound now (a copy is not made: don't change it)."""
    return _fields.get()


def bind(**fields: object) -> None:
    """Add fields to what is bound for the rest of this request or job (None values are skipped)."""
    merged = {**_fields.get(), **{k: v for k, v in fields.items() if v is not None}}
    _fields.set(merged)


@contextmanager
def scope(**fields: object) -> Iterator[None]:
    """Bind exactly these fields (None values skipped) inside the block; restore after."""
    token = _fields.set({k: v for k, v in fields.items() if v is not None})
    try:
        yield
    finally:
        _fields.reset(token)


def job_meta(**extra: object) -> dict:
    """`meta` for a job enqueued now: the carried fields bound here, plus `extra` (say the
    operation's ids, known where the job is made)."""
    bound = _fields.get()
    carried = {k: bound[k] for k in CARRIED if k in bound}
    carried.update({k: v for k, v in extra.items() if v is not None})
    return {META_KEY: carried}


@contextmanager
def job_scope(job) -> Iterator[None]:
    """While a worker runs `job`: bind what its enqueuer carried, its id and its function."""
    carried = (job.meta or {}).get(META_KEY) or {}
    fields = {k: carried[k] for k in CARRIED if k in carried}
    with scope(**fields, job_id=job.id, job=job.func_name):
        yield
