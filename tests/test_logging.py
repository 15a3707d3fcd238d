"""Structured logs: JSON lines with correlation ids that follow one submission across processes."""

from __future__ import annotations

import io
import json
import logging

import pytest

from webapp import correlation
from webapp.log_format import JsonFormatter, TextFormatter


def record(message: str = "hello %s", *args, exc_info=None, **extra) -> logging.LogRecord:
    """A record as `logging` makes it, with `extra` fields."""
    rec = logging.getLogger("tests.logging").makeRecord(
        "tests.logging", logging.WARNING, __file__, 1, message, args or ("world",), exc_info
    )
    rec.__dict__.update(extra)
    return rec


def test_json_lines_carry_level_message_correlation_extras_and_traceback():
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        failed = sys.exc_info()
    with correlation.scope(request_id="req-1", assessment_id=7, operation_id=None):
        line = JsonFormatter().format(record(exc_info=failed, delivery_id=3))
    data = json.loads(line)
    assert data["message"] == "hello world" and data["level"] == "warning"
    assert data["logger"] == "tests.logging" and data["ts"].endswith("+00:00")
    assert data["request_id"] == "req-1" and data["assessment_id"] == 7
    assert "operation_id" not in data  # None is never bound
    assert data["delivery_id"] == 3
    assert "ValueError: boom" in data["exc_info"]
    assert "\n" not in line  # one record, one line


def test_text_lines_are_for_people_with_the_ids_at_the_end():
    with correlation.scope(request_id="req-2", job_id="stage-1-ab"):
        line = TextFormatter().format(record())
    assert line.endswith("WARNING tests.logging: hello world [request_id=req-2 job_id=stage-1-ab]")


def test_job_meta_carries_what_the_request_bound():
    with correlation.scope(request_id="req-3", assessment_id=4):
        correlation.bind(operation_id=9)
        meta = correlation.job_meta()
        explicit = correlation.job_meta(assessment_id=5)
    assert meta == {"correlation": {"request_id": "req-3", "assessment_id": 4, "operation_id": 9}}
    assert explicit["correlation"]["assessment_id"] == 5
    assert correlation.current() == {}


@pytest.fixture()
def json_log():
    """Everything logged under `webapp` during the test, as parsed JSON lines."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("webapp")
    logger.addHandler(handler)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    logger.removeHandler(handler)


def test_each_request_is_logged_with_its_id_route_and_the_assessment(client, api, json_log):
    assessment = api.start()
    response = client.get(
        f"/api/v1/assessments/{assessment['id']}", headers={"X-Request-ID": "req-web-1"}
    )
    assert response.status_code == 401
    [line] = [entry for entry in json_log() if entry.get("request_id") == "req-web-1"]
    assert line["logger"] == "webapp.http"
    assert line["assessment_id"] == assessment["id"]
    assert line["http"]["route"] == "/api/v1/assessments/<int:assessment_id>"
    assert line["http"]["status"] == 401 and line["http"]["duration_ms"] >= 0


def test_successful_polls_are_not_logged_but_failing_ones_are(client, api, json_log):
    assessment = api.start()
    url = f"/api/v1/assessments/{assessment['id']}/status"
    client.get("/healthz", headers={"X-Request-ID": "quiet"})
    client.get(url, headers={"X-Request-ID": "loud"})  # 401: no credentials
    ids = {entry.get("request_id") for entry in json_log()}
    assert "loud" in ids and "quiet" not in ids


@pytest.mark.db
def test_one_submission_is_followed_from_request_to_webhook(webhook_site, receivers, tokens):
    receiver = receivers()
    site = webhook_site()
    student = site.client(tokens["student"])
    created = student.post("/api/v1/assessments", json={"question_set": "python-basics"})
    assessment_id = created.get_json()["id"]
    callback = student.post(
        f"/api/v1/assessments/{assessment_id}/webhook", json={"webhook_url": receiver.url}
    )
    assert callback.status_code == 201
    submitted = student.post(
        f"/api/v1/assessments/{assessment_id}/submit", headers={"X-Request-ID": "trace-42"}
    )
    assert submitted.headers["X-Request-ID"] == "trace-42"
    operation_id = submitted.get_json()["operation"]["id"]
    receiver.wait_for(7)

    def traced() -> list[dict]:
        lines = []
        for raw in site.workers[0].log().splitlines():
            if raw.startswith("{"):
                entry = json.loads(raw)
                if entry.get("request_id") == "trace-42":
                    lines.append(entry)
        return lines

    import time

    deadline = time.monotonic() + 30
    while not any(e.get("event_type") == "assessment.completed" for e in traced()):
        assert time.monotonic() < deadline, site.workers[0].log()[-3000:]
        time.sleep(0.2)
    lines = traced()
    assert all(e["assessment_id"] == assessment_id for e in lines)
    stage_jobs = {e["job_id"] for e in lines if e.get("job") == "worker.jobs.run_stage"}
    assert len(stage_jobs) == 3  # gpt, rag and fusion, each its own job
    assert all(e["operation_id"] == operation_id for e in lines if "job_id" in e)
    attempts = [e for e in lines if e.get("outcome") == "success"]
    assert {"assessment.completed", "operation.completed"} <= {e["event_type"] for e in attempts}
