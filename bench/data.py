"""Test data for the benchmarks, made through the app's own services (inside an app context)."""

from __future__ import annotations

import re
from contextlib import contextmanager

import requests
from sqlalchemy import select

from webapp.demo import DEMO_STUDENT
from webapp.extensions import db
from webapp.models import User
from webapp.scoring.vocabulary import QuestionType
from webapp.services import pipeline
from webapp.services.accounts import issue_token
from webapp.services.assessments import create_assessment
from webapp.services.submission import submit_assessment

ESSAY = (
    "Recursion solves a problem by reducing it to a smaller instance of the same problem until a "
    "base case answers directly. Each call gets its own stack frame, so deep recursion can hit "
    "Python's recursion limit; an iterative loop or memoisation with functools.lru_cache avoids "
    "recomputing overlapping subproblems. For example, a recursive factorial has base case n <= 1 "
    "and recursive case n * factorial(n - 1). Idempotency keys let a client retry a POST safely: "
    "the server stores the first response under the key and replays it, and a webhook receiver "
    "verifies the signature and deduplicates by webhook-id before acting. Classes bundle state "
    "and behaviour; inheritance and composition let objects share and extend methods."
)


def student() -> User:
    return db.session.scalar(select(User).where(User.email == DEMO_STUDENT[0]))


def token(user: User) -> str:
    return issue_token(user, "bench")[1]


def answers(assessment) -> list[dict]:
    """A full, plausible set of answers: the first option, or an essay."""
    out = []
    for q in assessment.question_set.questions:
        if q.type == QuestionType.THEORETICAL:
            answer = sorted(q.option_ids())[0]
        elif q.type == QuestionType.ESSAY:
            answer = ESSAY
        else:
            answer = "Three years, mostly Flask services and data pipelines."
        out.append({"question_id": q.id, "answer": answer})
    return out


def submit(user: User, slug: str = "python-basics") -> int:
    """Create, answer and submit an assessment; returns its id (the pipeline is enqueued)."""
    assessment = create_assessment(user, slug)
    outcome = submit_assessment(assessment, user, answers(assessment))
    return outcome.assessment.id


@contextmanager
def nothing_enqueued():
    """Submissions whose stages wait in the database without a job (the bench's polled ones)."""
    original = pipeline.enqueue_pipeline
    pipeline.enqueue_pipeline = lambda operation: True
    try:
        yield
    finally:
        pipeline.enqueue_pipeline = original


def in_progress(user: User, count: int) -> list[int]:
    """`count` assessments mid-scoring: rule_score done, gpt started at 40 %, nothing queued."""
    from webapp.scoring.vocabulary import Stage
    from webapp.services import progress

    ids = []
    with nothing_enqueued():
        for _ in range(count):
            ids.append(submit(user))
    for assessment_id in ids:
        operation = progress.latest_operation(assessment_id)
        run = next(r for r in operation.stage_runs if r.name == Stage.GPT)
        progress.start_stage(run)
        progress.record_progress(run, 40)
    return ids


def browser_session(base_url: str, email: str, password: str) -> str:
    """Log in through the login form, as a browser does; returns the session cookie's value."""
    http = requests.Session()
    page = http.get(f"{base_url}/login", timeout=10).text
    csrf = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)
    if csrf is None:
        csrf = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page)
    form = {"email": email, "password": password, "csrf_token": csrf.group(1)}
    http.post(f"{base_url}/login", data=form, timeout=10, allow_redirects=False).raise_for_status()
    return http.cookies["session"]
