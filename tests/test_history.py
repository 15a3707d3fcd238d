"""Status history of an assessment and the recent-events feed."""

from __future__ import annotations

import pytest

from tests.test_pipeline import full_answers

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
    ("stage", "in_progress", "gpt"),
    ("stage", "completed", "gpt"),
    ("stage", "in_progress", "rag"),
    ("stage", "completed", "rag"),
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
