"""The gpt stage through a real worker and the real `openai` client against a local server.

Each test starts a worker configured for OpenAI (small timeouts and retries), submits through an
app on that worker's Redis, and reads the report the student would see. Failing until retries
run out is in tests/test_pipeline.py.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import pytest

from tests.openai_server import Reply, rubric_reply
from tests.support import ESSAY, Api, full_answers
from webapp import create_app

pytestmark = pytest.mark.db

MODEL = "test-model"
MODEL_SCORES = {"relevance": 8, "depth": 7, "clarity": 9, "technical": 6}
ESSAYS = 2  # python-basics has two essays of weight 4


@pytest.fixture()
def score_with_openai(
    db_url, tokens, worker_factory, openai_server, serve
) -> Callable[..., tuple[dict, dict]]:
    """Score a fully answered python-basics assessment on a worker that uses `openai_server`.

    Returns (final status, result); extra keyword arguments are the worker's environment.
    """

    def score(**env: str) -> tuple[dict, dict]:
        settings = {
            "OPENAI_API_KEY": "test-key",
            "OPENAI_BASE_URL": openai_server.base_url,
            "OPENAI_MODEL": MODEL,
            "OPENAI_MAX_RETRIES": "2",
            "OPENAI_TIMEOUT": "5",
        }
        _, redis_url = worker_factory(**{**settings, **env})
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
        submitted = client.post(
            f"/api/v1/assessments/{assessment['id']}/submit",
            json={"responses": full_answers(assessment)},
            headers=headers,
        )
        assert submitted.status_code == 202, submitted.get_data(as_text=True)
        api = Api(serve(app).url, tokens["student"])
        status = api.wait_finished(assessment["id"])
        result = api.get(f"/assessments/{assessment['id']}/result").json()
        return status, result

    return score


def stage(status: dict, name: str) -> dict:
    """One stage of a status body."""
    return next(s for s in status["stages"] if s["name"] == name)


def seconds(stage_body: dict) -> float:
    """How long a stage ran."""
    started, completed = (
        datetime.fromisoformat(stage_body[key].replace("Z", "+00:00"))
        for key in ("started_at", "completed_at")
    )
    return (completed - started).total_seconds()


def assert_scored_by_the_model(status: dict, result: dict) -> None:
    """A completed, not degraded report whose essays carry the model's rubric."""
    assert status["status"] == "completed" and status["degraded"] is False
    assert stage(status, "gpt")["status"] == "completed"
    assert result["degraded"] is False and result["degraded_reasons"] == []
    assert len(result["essays"]) == ESSAYS
    for essay in result["essays"]:
        assert essay["scorer"] == f"openai:{MODEL}"
        assert {k: v["score"] for k, v in essay["rubric"].items()} == MODEL_SCORES
        assert essay["rubric"]["depth"]["rationale"] == "Model judged depth as 7/10."
    # Each essay: weight 4 x mean 7.5 / 10 = 3 points.
    assert result["sections"]["essay"] == {"score": 6.0, "max_score": 8.0, "percentage": 75.0}


def test_success_puts_the_models_scores_in_the_report(score_with_openai, openai_server):
    status, result = score_with_openai()

    assert_scored_by_the_model(status, result)
    assert openai_server.count == ESSAYS  # one call per essay, no retries
    sent = openai_server.requests[0]["body"]
    assert sent["model"] == MODEL
    assert sent["response_format"]["json_schema"]["name"] == "rubric"
    assert ESSAY in sent["messages"][1]["content"]


def test_429_with_retry_after_is_retried_after_waiting(score_with_openai, openai_server):
    openai_server.then(Reply(status=429, body={"error": {}}, headers={"Retry-After": "1"}))

    status, result = score_with_openai()

    assert_scored_by_the_model(status, result)
    assert openai_server.count == ESSAYS + 1  # the first essay took two calls
    assert seconds(stage(status, "gpt")) >= 1.0  # it waited as told


def test_malformed_json_then_a_good_answer_completes(score_with_openai, openai_server):
    openai_server.then(
        rubric_reply(content="{not json"),  # essay 1, attempt 1
        rubric_reply(),  # essay 1, attempt 2
        rubric_reply(scores={**MODEL_SCORES, "depth": 11}),  # essay 2: valid JSON, bad score
    )

    status, result = score_with_openai()

    assert_scored_by_the_model(status, result)
    assert openai_server.count == ESSAYS + 2  # each essay needed a second call


def test_a_timeout_is_retried(score_with_openai, openai_server):
    slow = rubric_reply()
    slow.delay = 3.0
    openai_server.then(slow)

    status, result = score_with_openai(OPENAI_TIMEOUT="0.5")

    assert_scored_by_the_model(status, result)
    assert openai_server.count == ESSAYS + 1  # the first call timed out; its retry succeeded
    assert seconds(stage(status, "gpt")) < 3.0  # it did not wait for the slow answer
