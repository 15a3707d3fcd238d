"""Races end in answers, not 500s: concurrent submits and saves of one assessment, with bodies,
from threads against the live server (SQLite here, PostgreSQL in CI's second pass)."""

from __future__ import annotations

import threading

import pytest
import requests
from sqlalchemy import select

from tests.support import full_answers, operations_of
from webapp.extensions import db
from webapp.models import Response

pytestmark = pytest.mark.db

ROUNDS = 3  # a race is decided by the scheduler: each round is a fresh chance to lose it
CONCURRENT = 20


def answers_numbered(assessment: dict, n: int) -> list[dict]:
    """Every question answered, the free-text answers marked with `n` (whose body is stored)."""
    return [
        {**a, "answer": f"{a['answer']} [{n}]"} if len(a["answer"]) > 1 else a
        for a in full_answers(assessment)
    ]


def race(calls: list[tuple[str, str, dict]], token: str) -> list[requests.Response]:
    """Send every (method, url, body) at the same moment, one thread each; answers in order."""
    barrier = threading.Barrier(len(calls))
    answers: list[requests.Response | None] = [None] * len(calls)

    def send(index: int, method: str, url: str, body: dict) -> None:
        with requests.Session() as session:
            barrier.wait()
            answers[index] = session.request(
                method, url, json=body, timeout=120, headers={"Authorization": f"Bearer {token}"}
            )

    threads = [threading.Thread(target=send, args=(i, *call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(a is not None for a in answers)
    return answers  # type: ignore[return-value]


def stored(app, assessment_id: int) -> list[dict]:
    with app.app_context():
        rows = db.session.scalars(
            select(Response)
            .where(Response.assessment_id == assessment_id)
            .order_by(Response.question_id)
        )
        out = [{"question_id": r.question_id, "answer": r.answer} for r in rows]
        db.session.rollback()
    return out


def in_order(answers: list[dict]) -> list[dict]:
    return sorted(answers, key=lambda a: a["question_id"])


def contest(api) -> tuple[dict, str, list[dict]]:
    """A fresh draft, its URL, and CONCURRENT different bodies answering every question."""
    assessment = api.start()
    url = f"{api.base_url}/api/v1/assessments/{assessment['id']}"
    return (
        assessment,
        url,
        [{"responses": answers_numbered(assessment, n)} for n in range(CONCURRENT)],
    )


def test_concurrent_submits_with_answers_give_one_202_and_store_the_winners_answers(
    app, api, tokens
):
    for _ in range(ROUNDS):
        assessment, base, bodies = contest(api)
        answers = race([("POST", f"{base}/submit", body) for body in bodies], tokens["student"])

        codes = sorted(a.status_code for a in answers)
        assert codes == [200] * (CONCURRENT - 1) + [202], [a.text[:120] for a in answers]
        winner = next(i for i, a in enumerate(answers) if a.status_code == 202)
        operation = answers[winner].json()["operation"]["id"]
        for other in (a for a in answers if a.status_code == 200):
            assert other.json()["message"] == "already submitted"
            assert other.json()["operation"]["id"] == operation
        assert operations_of(app, assessment["id"]) == 1
        assert stored(app, assessment["id"]) == in_order(bodies[winner]["responses"])


def test_concurrent_saves_and_submits_never_fail_and_the_submit_has_the_last_word(app, api, tokens):
    for _ in range(ROUNDS):
        assessment, base, bodies = contest(api)
        calls = [
            ("POST", f"{base}/submit", body) if n % 2 else ("PUT", f"{base}/responses", body)
            for n, body in enumerate(bodies)
        ]
        answers = race(calls, tokens["student"])

        submits = [a for (method, _, _), a in zip(calls, answers, strict=True) if method == "POST"]
        saves = [a for (method, _, _), a in zip(calls, answers, strict=True) if method == "PUT"]
        assert sorted(a.status_code for a in submits) == [200] * (len(submits) - 1) + [202]
        for save in saves:
            assert save.status_code in (200, 409), save.text[:200]
            if save.status_code == 409:
                assert save.json()["code"] == "ASSESSMENT_LOCKED"
        winner = next(i for i, a in enumerate(answers) if a.status_code == 202)
        # Saves after the submit were refused; saves before it were overwritten by its answers.
        assert stored(app, assessment["id"]) == in_order(bodies[winner]["responses"])
        assert operations_of(app, assessment["id"]) == 1


def test_concurrent_saves_all_succeed_and_one_of_them_is_stored_whole(app, api, tokens):
    for _ in range(ROUNDS):
        assessment, base, bodies = contest(api)
        answers = race([("PUT", f"{base}/responses", body) for body in bodies], tokens["student"])

        assert [a.status_code for a in answers] == [200] * CONCURRENT, [
            a.text[:200] for a in answers if a.status_code != 200
        ]
        kept = stored(app, assessment["id"])
        assert kept in [in_order(body["responses"]) for body in bodies]  # one save, not a mix
