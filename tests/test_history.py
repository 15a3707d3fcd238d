"""Status history of an assessment and the recent-events feed."""

from __future__ import annotations

import time

import pytest

from tests.support import ASSESSMENT_EVENTS, full_answers, stack, start_worker, wait_for_delivery

pytestmark = pytest.mark.db

# What one worker produces for a fully answered assessment, oldest first: (entity, status, stage).
EXPECTED_SEQUENCE = [
    ("assessment", "submitted", None),
    ("operation", "pending", None),
    ("stage", "completed", "rule_score"),
    ("stage", "queued", "gpt"),
    ("stage", "queued", "rag"),
    ("stage", "queued", "fusion"),
    ("operation", "processing", None),
    ("assessment", "processing", None),
    ("stage", "in_progress", "rag"),  # enqueued first: a few ms, where gpt may wait on a provider
    ("stage", "completed", "rag"),
    ("stage", "in_progress", "gpt"),
    ("stage", "completed", "gpt"),
    ("stage", "in_progress", "fusion"),
    ("stage", "completed", "fusion"),
    ("operation", "completed", None),
    ("assessment", "completed", None),
]


def scored_assessment(api) -> dict:
    assessment = api.start()
    api.post(
        f"/assessments/{assessment['id']}/submit", json={"responses": full_answers(assessment)}
    )
    api.wait_finished(assessment["id"])
    return assessment


def test_history_is_the_exact_sequence_newest_first(api, worker):
    assessment = scored_assessment(api)
    body = api.get(f"/assessments/{assessment['id']}/history").json()
    assert body["assessment_id"] == assessment["id"]
    assert body["event_count"] == len(body["history"]) == len(EXPECTED_SEQUENCE)
    oldest_first = list(reversed(body["history"]))
    seen = [
        (e["metadata"]["entity"], e["status"], e["metadata"].get("stage")) for e in oldest_first
    ]
    assert seen == EXPECTED_SEQUENCE
    timestamps = [e["timestamp"] for e in oldest_first]
    assert timestamps == sorted(timestamps)
    progress = [e["progress"] for e in oldest_first]
    assert progress[-1] == 100
    assert all(
        set(e) == {"timestamp", "status", "progress", "message", "metadata"} for e in oldest_first
    )
    assert oldest_first[-1]["message"].startswith("Scored ")


def test_history_of_a_draft_is_empty(api):
    assessment = api.start()
    body = api.get(f"/assessments/{assessment['id']}/history").json()
    assert body == {"assessment_id": assessment["id"], "history": [], "event_count": 0}


def test_history_of_another_students_assessment_is_403(api, api_as):
    theirs = api_as("other").start()
    assert api.get(f"/assessments/{theirs['id']}/history").status_code == 403


def test_recent_events_cover_own_assessments_only(api, api_as, worker):
    mine = scored_assessment(api)
    theirs = api_as("other").start()
    api_as("other").post(f"/assessments/{theirs['id']}/submit")
    body = api.get("/events/recent?hours=24").json()
    assert body["hours"] == 24 and body["count"] == len(body["events"])
    assert {e["metadata"]["assessment_id"] for e in body["events"]} == {mine["id"]}
    ids = [e["timestamp"] for e in body["events"]]
    assert ids == sorted(ids, reverse=True)
    everyone = api_as("admin").get("/events/recent").json()
    assert {mine["id"], theirs["id"]} <= {
        e["metadata"]["assessment_id"] for e in everyone["events"]
    }


@pytest.mark.parametrize("hours", ["0", "-3", "abc", "721", "1.5"])
def test_recent_events_reject_bad_hours(api, hours):
    response = api.get(f"/events/recent?hours={hours}")
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "hours"


def test_a_student_never_sees_deliveries_to_an_admin_endpoint(webhook_site, receivers, tokens):
    """A failing admin endpoint (its host does not resolve) and the student's own callback: the
    student's history and recent events show the callback's deliveries, never the admin's."""
    secret_host = "hooks.secret-internal-corp.invalid"
    receiver = receivers()
    site = webhook_site(WEBHOOK_RETRY_SCHEDULE="600")  # one attempt, then a retry much later
    admin, student = site.client(tokens["admin"]), site.client(tokens["student"])
    endpoint = admin.post("/api/v1/webhook-endpoints", json={"url": f"https://{secret_host}/h"})
    assert endpoint.status_code == 201, endpoint.get_json()
    assessment = student.post("/api/v1/assessments", json={"question_set": "python-basics"})
    assessment_id = assessment.get_json()["id"]
    student.post(f"/api/v1/assessments/{assessment_id}/webhook", json={"webhook_url": receiver.url})
    student.post(
        f"/api/v1/assessments/{assessment_id}/submit",
        json={"responses": full_answers(assessment.get_json())},
    )
    receiver.wait_for(len(ASSESSMENT_EVENTS))
    failed = admin.get(
        f"/api/v1/webhook-endpoints/{endpoint.get_json()['id']}/deliveries"
    ).get_json()["deliveries"]
    assert len(failed) == len(ASSESSMENT_EVENTS)
    for delivery in failed:
        wait_for_delivery(admin, delivery["id"], {"retrying"})  # failed once, with "dns: ..."

    def deliveries(events: list[dict]) -> list[dict]:
        return [e for e in events if e["metadata"]["entity"] == "delivery"]

    path = f"/api/v1/assessments/{assessment_id}/history"
    for who, seen in (("student", student), ("admin", admin)):
        history = seen.get(path).get_json()["history"]
        recent = [
            e
            for e in seen.get("/api/v1/events/recent").get_json()["events"]
            if e["metadata"]["assessment_id"] == assessment_id
        ]
        for events in (history, recent):
            shown = deliveries(events)
            to_admin = [e for e in shown if e["metadata"]["endpoint_id"] is not None]
            to_callback = [e for e in shown if e["metadata"]["callback_id"] is not None]
            assert to_callback, f"{who}: the callback's deliveries are part of the story"
            if who == "admin":
                assert to_admin and any(secret_host in e["message"] for e in to_admin)
            else:
                assert to_admin == []
                text = str(events)
                assert secret_host not in text and "dns" not in text


def test_two_workers_starting_together_record_one_start_in_time_order(
    base_dir, db_url, worker_factory, tokens
):
    """gpt and rag start at the same moment on two workers: the operation's pending ->
    processing flip is recorded once, and newest-first agrees with the timestamps."""
    _, redis_url = worker_factory()
    second = start_worker(base_dir, db_url, redis_url)
    try:
        client = stack(db_url, redis_url).test_client()
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {tokens['student']}"
        ids = []
        for _ in range(6):  # the race is decided by the scheduler: give it a few chances
            assessment = client.post("/api/v1/assessments", json={"question_set": "python-basics"})
            ids.append(assessment.get_json()["id"])
            answers = full_answers(assessment.get_json())
            client.post(f"/api/v1/assessments/{ids[-1]}/submit", json={"responses": answers})
        for assessment_id in ids:
            wait_until_finished(client, assessment_id)
    finally:
        second.stop()
    for assessment_id in ids:
        history = client.get(f"/api/v1/assessments/{assessment_id}/history").get_json()["history"]
        started = [
            e
            for e in history
            if e["metadata"]["entity"] == "operation" and e["status"] == "processing"
        ]
        assert len(started) == 1, [e["message"] for e in started]
        timestamps = [e["timestamp"] for e in history]
        assert timestamps == sorted(timestamps, reverse=True)


def wait_until_finished(client, assessment_id: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/api/v1/assessments/{assessment_id}/status").get_json()
        if body["status"] in ("completed", "failed"):
            return
        time.sleep(0.1)
    raise AssertionError(f"assessment {assessment_id} did not finish: {body}")
