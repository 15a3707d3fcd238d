"""The status endpoint: weights, Retry-After, ETag and 304, and query count."""

from __future__ import annotations

import pytest
from sqlalchemy import event

from webapp.extensions import db
from webapp.models import StageRun
from webapp.scoring.vocabulary import Stage, StageStatus
from webapp.services.progress import overall_progress

pytestmark = pytest.mark.db


def run(name: Stage, status: StageStatus, percentage: int = 0) -> StageRun:
    return StageRun(name=name, status=status, percentage=percentage)


@pytest.mark.parametrize(
    ("stages", "expected"),
    [
        ([], 0),
        ([run(Stage.RULE_SCORE, StageStatus.COMPLETED, 100)], 20),
        (
            [
                run(Stage.RULE_SCORE, StageStatus.COMPLETED, 100),
                run(Stage.GPT, StageStatus.IN_PROGRESS, 50),
                run(Stage.RAG, StageStatus.COMPLETED, 100),
                run(Stage.FUSION, StageStatus.QUEUED),
            ],
            65,
        ),
        (
            [
                run(Stage.RULE_SCORE, StageStatus.COMPLETED, 100),
                run(Stage.GPT, StageStatus.FAILED, 10),
                run(Stage.RAG, StageStatus.SKIPPED),
                run(Stage.FUSION, StageStatus.QUEUED),
            ],
            80,
        ),
        (
            [
                run(Stage.RULE_SCORE, StageStatus.COMPLETED, 100),
                run(Stage.GPT, StageStatus.COMPLETED, 100),
                run(Stage.RAG, StageStatus.COMPLETED, 100),
                run(Stage.FUSION, StageStatus.IN_PROGRESS, 99),
            ],
            99,
        ),
    ],
)
def test_overall_progress_is_the_weighted_sum(stages, expected):
    assert overall_progress(stages, finished=False) == expected


def test_overall_progress_is_100_exactly_when_finished():
    assert (
        overall_progress([run(Stage.RULE_SCORE, StageStatus.COMPLETED, 100)], finished=True) == 100
    )
    everything_done = [run(stage, StageStatus.COMPLETED, 100) for stage in Stage]
    assert overall_progress(everything_done, finished=False) == 99


def test_status_mid_pipeline(client, tokens, in_progress):
    headers = {"Authorization": f"Bearer {tokens['student']}"}
    response = client.get(f"/api/v1/assessments/{in_progress}/status", headers=headers)
    assert response.status_code == 200
    body = response.get_json()
    assert body["overall_progress"] == 65
    assert response.headers["Retry-After"] == "2"
    assert {s["name"]: s["status"] for s in body["stages"]} == {
        "rule_score": "completed", "gpt": "in_progress", "rag": "completed", "fusion": "queued",
    }  # fmt: skip
    assert {j["job_type"]: j["status"] for j in body["jobs"]} == {
        "gpt": "started", "rag": "finished", "fusion": "queued",
    }  # fmt: skip
    assert set(body) == {
        "assessment_id", "status", "overall_progress", "stages", "jobs", "operation_id",
        "degraded", "updated_at",
    }  # fmt: skip
    for stage in body["stages"]:
        assert set(stage) == {"name", "status", "percentage", "started_at", "completed_at", "error"}


def test_status_etag_answers_304_until_something_changes(app, client, tokens, in_progress):
    headers = {"Authorization": f"Bearer {tokens['student']}"}
    url = f"/api/v1/assessments/{in_progress}/status"
    first = client.get(url, headers=headers)
    etag = first.headers["ETag"]
    again = client.get(url, headers={**headers, "If-None-Match": etag})
    assert again.status_code == 304
    assert again.data == b""
    assert again.headers["ETag"] == etag
    with app.app_context():
        gpt = db.session.query(StageRun).filter_by(name=Stage.GPT).one()
        gpt.percentage = 75
        db.session.commit()
    changed = client.get(url, headers={**headers, "If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.get_json()["overall_progress"] == 72
    assert changed.headers["ETag"] != etag


def test_draft_status_has_pending_stages_and_no_jobs(client, tokens):
    headers = {"Authorization": f"Bearer {tokens['student']}"}
    created = client.post(
        "/api/v1/assessments", json={"question_set": "web-apis"}, headers=headers
    ).get_json()
    body = client.get(f"/api/v1/assessments/{created['id']}/status", headers=headers).get_json()
    assert body["status"] == "draft"
    assert body["overall_progress"] == 0
    assert body["jobs"] == [] and body["operation_id"] is None
    assert {s["status"] for s in body["stages"]} == {"pending"}


def test_status_poll_uses_a_fixed_small_number_of_queries(app, client, tokens, in_progress):
    headers = {"Authorization": f"Bearer {tokens['student']}"}
    url = f"/api/v1/assessments/{in_progress}/status"
    client.get(url, headers=headers)  # warm up: token last_used_at write
    statements: list[str] = []
    with app.app_context():
        engine = db.engine
    listener = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        assert client.get(url, headers=headers).status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    # token+user, assessment (+user, question set joined), latest operation, its stage runs
    assert len(selects) <= 4, selects
