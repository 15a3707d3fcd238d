"""Admin rescore: a new scoring operation for a finished assessment, run by a real worker."""

from __future__ import annotations

import signal
import threading

import pytest
from sqlalchemy import func, select, update

from tests.support import full_answers
from webapp.extensions import db
from webapp.models import Assessment, Operation, Question

pytestmark = pytest.mark.db


def scored(api) -> tuple[dict, dict]:
    """A python-basics assessment answered in full, submitted and scored: (assessment, submit)."""
    assessment = api.start()
    submitted = api.post(
        f"/assessments/{assessment['id']}/submit", json={"responses": full_answers(assessment)}
    )
    assert submitted.status_code == 202, submitted.text
    assert api.wait_finished(assessment["id"])["status"] == "completed"
    return assessment, submitted.json()


def set_status(app, assessment_id: int, status: str) -> None:
    """Put an assessment in a status directly (arranging a state, not scoring)."""
    with app.app_context():
        db.session.execute(
            update(Assessment).where(Assessment.id == assessment_id).values(status=status)
        )
        db.session.commit()


def operation_count(app, assessment_id: int) -> int:
    """How many scoring operations an assessment has had."""
    with app.app_context():
        return db.session.scalar(
            select(func.count())
            .select_from(Operation)
            .where(Operation.assessment_id == assessment_id)
        )


def test_admin_rescore_runs_the_pipeline_again_as_a_new_operation(api, api_as, worker):
    assessment, submitted = scored(api)
    first_operation = submitted["operation"]["id"]
    before = api.get(f"/assessments/{assessment['id']}/result").json()
    admin = api_as("admin")

    response = admin.post(f"/assessments/{assessment['id']}/rescore")

    assert response.status_code == 202, response.text
    operation = response.json()
    assert operation["id"] != first_operation
    assert response.headers["Location"] == f"/api/v1/operations/{operation['id']}"
    assert operation["operation_type"] == "assessment_scoring"
    assert operation["assessment_id"] == assessment["id"]
    assert operation["status"] in ("pending", "processing") and operation["done"] is False
    assert operation["result"] is None and operation["error_message"] is None

    status = api.wait_finished(assessment["id"])
    assert status["status"] == "completed" and status["operation_id"] == operation["id"]
    assert all(s["status"] == "completed" for s in status["stages"])
    finished = admin.get(f"/operations/{operation['id']}").json()
    assert finished["status"] == "completed" and finished["progress"] == 100
    after = api.get(f"/assessments/{assessment['id']}/result").json()
    assert after == finished["result"]
    assert after["total"] == before["total"]  # same answers, same deterministic scorers
    # The first operation keeps its own report.
    assert admin.get(f"/operations/{first_operation}").json()["result"] == before

    history = api.get(f"/assessments/{assessment['id']}/history").json()["history"]
    rescored = [e for e in history if e["message"].startswith("Rescore requested")]
    assert [e["status"] for e in rescored] == ["processing"]
    assert rescored[0]["metadata"]["operation_id"] == operation["id"]
    entries = admin.get("/audit?action=assessment.rescored").json()["entries"]
    [entry] = [e for e in entries if e["entity_id"] == str(assessment["id"])]
    assert entry["actor"]["email"] == "admin@example.com"
    assert entry["details"] == {"operation_id": operation["id"]}


def test_rescore_recomputes_the_rule_score_with_the_current_answer_key(api, api_as, app, worker):
    assessment, submitted = scored(api)
    first = assessment["questions"][0]  # answered "a" by full_answers; the key says "b"
    item = next(i for i in submitted["rule_score"]["items"] if i["question_id"] == first["id"])
    assert item["correct"] is False
    before = api.get(f"/assessments/{assessment['id']}/result").json()
    with app.app_context():
        db.session.execute(
            update(Question).where(Question.id == first["id"]).values(correct_option="a")
        )
        db.session.commit()
    try:
        response = api_as("admin").post(f"/assessments/{assessment['id']}/rescore")
        assert response.status_code == 202
        api.wait_finished(assessment["id"])
    finally:
        with app.app_context():
            db.session.execute(
                update(Question).where(Question.id == first["id"]).values(correct_option="b")
            )
            db.session.commit()

    after = api.get(f"/assessments/{assessment['id']}/result").json()
    assert (
        after["sections"]["theoretical"]["score"] == before["sections"]["theoretical"]["score"] + 1
    )
    assert after["total"] == before["total"] + 1


def test_a_failed_assessment_can_be_rescored(api, api_as, app, worker):
    assessment, _ = scored(api)
    set_status(app, assessment["id"], "failed")

    response = api_as("admin").post(f"/assessments/{assessment['id']}/rescore")

    assert response.status_code == 202
    assert api.wait_finished(assessment["id"])["status"] == "completed"


def test_students_cannot_rescore(api, api_as):
    own = api.start()
    api.post(f"/assessments/{own['id']}/submit")
    theirs = api_as("other").start()
    for assessment_id in (own["id"], theirs["id"]):
        response = api.post(f"/assessments/{assessment_id}/rescore")
        assert response.status_code == 403
        assert response.json()["code"] == "FORBIDDEN"


def test_rescoring_a_draft_is_409_not_submitted(api, api_as):
    draft = api.start()

    response = api_as("admin").post(f"/assessments/{draft['id']}/rescore")

    assert response.status_code == 409
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.json()["code"] == "ASSESSMENT_NOT_SUBMITTED"
    assert api.get(f"/assessments/{draft['id']}").json()["status"] == "draft"


@pytest.mark.parametrize("status", ["submitted", "processing"])
def test_rescoring_while_being_scored_is_409_busy(api, api_as, app, status):
    assessment = api.start()
    set_status(app, assessment["id"], status)

    response = api_as("admin").post(f"/assessments/{assessment['id']}/rescore")

    assert response.status_code == 409
    assert response.json()["code"] == "ASSESSMENT_BUSY"
    assert operation_count(app, assessment["id"]) == 0


def test_rescoring_an_unknown_assessment_is_404(api_as):
    response = api_as("admin").post("/assessments/999999/rescore")
    assert response.status_code == 404
    assert response.json()["code"] == "ASSESSMENT_NOT_FOUND"


def test_concurrent_rescores_start_exactly_one_operation(api, api_as, app, worker):
    assessment, _ = scored(api)
    admin = api_as("admin")
    barrier = threading.Barrier(6)
    responses = []

    def rescore():
        barrier.wait()
        responses.append(admin.post(f"/assessments/{assessment['id']}/rescore"))

    threads = [threading.Thread(target=rescore) for _ in range(6)]
    # Hold the worker still while the requests race: offline scoring can finish within
    # milliseconds, and a rescore after the first one finished is rightly allowed.
    worker.process.send_signal(signal.SIGSTOP)
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        worker.process.send_signal(signal.SIGCONT)

    assert sorted(r.status_code for r in responses) == [202] + [409] * 5
    assert {r.json()["code"] for r in responses if r.status_code == 409} == {"ASSESSMENT_BUSY"}
    assert operation_count(app, assessment["id"]) == 2  # the submission's and the one rescore
    assert api.wait_finished(assessment["id"])["status"] == "completed"
