"""The real path: HTTP to the app, a real worker on a real Redis, stage rows read back."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select

from tests.openai_server import Reply
from tests.support import Api, full_answers
from webapp import create_app
from webapp.extensions import db
from webapp.models import Operation, StageRun

pytestmark = pytest.mark.db


def test_full_flow_scores_to_completed(api, worker, app):
    assessment = api.start()
    saved = api.put(
        f"/assessments/{assessment['id']}/responses", json={"responses": full_answers(assessment)}
    )
    assert saved.status_code == 200

    submitted = api.post(f"/assessments/{assessment['id']}/submit")
    assert submitted.status_code == 202
    body = submitted.json()
    assert body["status"] == "submitted"
    assert body["degraded"] is False and body["missing_question_ids"] == []
    rule = body["rule_score"]
    assert rule["max_score"] == 6.0  # five theoretical + one profile question, weight 1 each
    assert rule["score"] == sum(item["points"] for item in rule["items"])
    assert submitted.headers["Location"] == f"/api/v1/operations/{body['operation']['id']}"

    status = api.wait_finished(assessment["id"])
    assert status["status"] == "completed"
    assert status["overall_progress"] == 100
    assert [s["name"] for s in status["stages"]] == ["rule_score", "gpt", "rag", "fusion"]
    assert all(s["status"] == "completed" and s["percentage"] == 100 for s in status["stages"])
    assert [j["job_type"] for j in status["jobs"]] == ["gpt", "rag", "fusion"]
    assert all(j["status"] == "finished" for j in status["jobs"])

    result = api.get(f"/assessments/{assessment['id']}/result").json()
    assert result["degraded"] is False
    assert result["max_total"] == 14.0  # 6 rule-scored + two essays of weight 4
    assert result["total"] == pytest.approx(
        sum(section["score"] for section in result["sections"].values())
    )
    assert {e["scorer"] for e in result["essays"]} == {"offline-rubric-v1"}
    assert all(
        set(e["rubric"]) == {"relevance", "depth", "clarity", "technical"} for e in result["essays"]
    )
    assert result["recommendations"], "missed topics should bring recommendations"
    assert all(r["source_id"].startswith("kb-") and r["passage"] for r in result["recommendations"])

    operation = api.get(f"/operations/{body['operation']['id']}").json()
    assert operation["status"] == "completed" and operation["done"] is True
    assert operation["result"]["total"] == result["total"]
    assert operation["error_message"] is None
    assert operation["progress"] == 100

    with app.app_context():
        runs = db.session.scalars(
            select(StageRun).where(StageRun.operation_id == body["operation"]["id"])
        ).all()
        assert sorted(r.name for r in runs) == ["fusion", "gpt", "rag", "rule_score"]
        assert all(r.started_at and r.completed_at for r in runs)


def test_stage_progress_is_recorded_in_order(api, worker, app):
    assessment = api.start()
    api.put(
        f"/assessments/{assessment['id']}/responses", json={"responses": full_answers(assessment)}
    )
    body = api.post(f"/assessments/{assessment['id']}/submit").json()
    api.wait_finished(assessment["id"])
    with app.app_context():
        runs = {
            r.name: r
            for r in db.session.scalars(
                select(StageRun).where(StageRun.operation_id == body["operation"]["id"])
            )
        }
        # fusion starts only after gpt and rag have both finished
        assert runs["fusion"].started_at >= max(runs["gpt"].completed_at, runs["rag"].completed_at)
        assert len(runs["gpt"].result["essays"]) == 2


def test_degraded_submit_with_missing_answers(api, worker):
    assessment = api.start()
    first = assessment["questions"][0]
    body = api.post(
        f"/assessments/{assessment['id']}/submit",
        json={"responses": [{"question_id": first["id"], "answer": "b"}]},
    ).json()
    expected_missing = [q["id"] for q in assessment["questions"][1:]]
    assert body["degraded"] is True
    assert body["missing_question_ids"] == expected_missing
    assert body["rule_score"]["score"] == 1.0  # only the first (correct) answer scores
    api.wait_finished(assessment["id"])
    result = api.get(f"/assessments/{assessment['id']}/result").json()
    assert result["degraded"] is True
    assert any("not answered" in reason for reason in result["degraded_reasons"])
    assert result["sections"]["essay"]["score"] == 0
    shown = api.get(f"/assessments/{assessment['id']}").json()
    assert shown["missing_question_ids"] == expected_missing


def test_resubmit_returns_200_with_the_same_operation(api, worker):
    assessment = api.start()
    first = api.post(f"/assessments/{assessment['id']}/submit")
    second = api.post(f"/assessments/{assessment['id']}/submit")
    assert first.status_code == 202
    assert second.status_code == 200
    assert second.json()["message"] == "already submitted"
    assert second.json()["operation"]["id"] == first.json()["operation"]["id"]
    assert set(second.json()) - {"message"} == set(first.json())


def test_twenty_concurrent_submits_create_one_operation(api, worker, app):
    assessment = api.start()
    barrier = threading.Barrier(20)
    responses = []

    def submit():
        barrier.wait()
        responses.append(api.post(f"/assessments/{assessment['id']}/submit"))

    threads = [threading.Thread(target=submit) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    codes = sorted(r.status_code for r in responses)
    assert codes == [200] * 19 + [202], [r.text for r in responses if r.status_code >= 300]
    assert len({r.json()["operation"]["id"] for r in responses}) == 1
    with app.app_context():
        count = db.session.scalar(
            select(func.count())
            .select_from(Operation)
            .where(Operation.assessment_id == assessment["id"])
        )
    assert count == 1
    assert api.wait_finished(assessment["id"])["status"] == "completed"


def test_a_provider_down_for_longer_than_llm_max_wait_gets_offline_scores_with_the_reason(
    db_url, tokens, worker_factory, openai_server, serve
):
    openai_server.default = Reply(status=500, body={"error": {"message": "boom"}})
    _, redis_url = worker_factory(
        OPENAI_API_KEY="test-key",
        OPENAI_BASE_URL=openai_server.base_url,
        OPENAI_MAX_RETRIES="1",
        LLM_MAX_WAIT="3",
        LLM_BREAKER_FAILURES="3",
        LLM_BREAKER_COOLDOWN="1",
    )
    # An app on that worker's Redis, sharing the database, so the jobs reach that worker.
    app = create_app(
        {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": db_url,
            "REDIS_URL": redis_url,
            "RATE_LIMIT_POLL": "100000/minute",
        }
    )
    client = app.test_client()
    headers = {"Authorization": f"Bearer {tokens['student']}"}
    assessment = client.post(
        "/api/v1/assessments", json={"question_set": "python-basics"}, headers=headers
    ).get_json()
    client.post(
        f"/api/v1/assessments/{assessment['id']}/submit",
        json={"responses": full_answers(assessment)},
        headers=headers,
    )
    status = Api(serve(app).url, tokens["student"]).wait_finished(assessment["id"])
    assert status["status"] == "completed"
    assert status["degraded"] is True
    assert status["overall_progress"] == 100
    gpt = next(s for s in status["stages"] if s["name"] == "gpt")
    assert gpt["status"] == "completed"
    # Retries did not run out: the breaker opened and the essays waited LLM_MAX_WAIT.
    assert openai_server.count >= 3

    result = client.get(
        f"/api/v1/assessments/{assessment['id']}/result", headers=headers
    ).get_json()
    assert result["degraded"] is True
    reasons = [r for r in result["degraded_reasons"] if "offline rubric scorer" in r]
    assert len(reasons) == 2, result["degraded_reasons"]
    assert all("OpenAI API was unavailable" in r and "HTTP 500" in r for r in reasons), reasons
    assert [e["scorer"] for e in result["essays"]] == ["offline-rubric-v1"] * 2
    assert result["sections"]["essay"]["score"] > 0, "never 0 points because the provider was down"
    assert result["sections"]["essay"]["max_score"] == 8.0
    assert result["recommendations"], "rag still ran"
