"""The webhook admin API (SPEC 3): endpoints, secrets, deliveries; callbacks on assessments.

URLs here use the reserved `.invalid` TLD: they are valid to register and can never be reached.
"""

from __future__ import annotations

import pytest

URL = "https://hooks.example.invalid/scoreline"

pytestmark = pytest.mark.db


@pytest.fixture()
def admin(client, tokens):
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {tokens['admin']}"
    return client


def create(admin, **fields) -> dict:
    response = admin.post("/api/v1/webhook-endpoints", json={"url": URL, **fields})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def test_create_returns_the_endpoint_with_its_secret(admin):
    response = admin.post(
        "/api/v1/webhook-endpoints",
        json={"url": URL, "description": "CRM sync", "event_types": ["assessment.completed"]},
    )
    assert response.status_code == 201
    body = response.get_json()
    assert response.headers["Location"] == f"/api/v1/webhook-endpoints/{body['id']}"
    assert body["url"] == URL and body["description"] == "CRM sync"
    assert body["event_types"] == ["assessment.completed"]
    assert body["enabled"] is True and body["disabled_reason"] is None
    assert body["secret"].startswith("whsec_")
    assert body["health"]["success_rate"] is None and body["health"]["last_attempt_at"] is None
    listed = admin.get("/api/v1/webhook-endpoints").get_json()["endpoints"]
    assert [e["id"] for e in listed] == [body["id"]]


def test_patch_changes_fields_and_disabling_records_who(admin):
    endpoint = create(admin)
    changed = admin.patch(
        f"/api/v1/webhook-endpoints/{endpoint['id']}",
        json={"description": "new words", "event_types": [], "enabled": False},
    )
    assert changed.status_code == 200
    body = changed.get_json()
    assert body["description"] == "new words" and body["event_types"] == []
    assert body["enabled"] is False and "admin@example.com" in body["disabled_reason"]
    again = admin.patch(f"/api/v1/webhook-endpoints/{endpoint['id']}", json={"enabled": True})
    assert again.get_json()["enabled"] is True and again.get_json()["disabled_reason"] is None


def test_delete_is_204_then_404(admin):
    endpoint = create(admin)
    assert admin.delete(f"/api/v1/webhook-endpoints/{endpoint['id']}").status_code == 204
    gone = admin.get(f"/api/v1/webhook-endpoints/{endpoint['id']}")
    assert gone.status_code == 404 and gone.get_json()["code"] == "WEBHOOK_ENDPOINT_NOT_FOUND"


def test_rotate_keeps_the_old_secret_signing_for_a_day(admin):
    endpoint = create(admin)
    rotated = admin.post(f"/api/v1/webhook-endpoints/{endpoint['id']}/rotate-secret")
    assert rotated.status_code == 200
    body = rotated.get_json()
    assert body["secret"] != endpoint["secret"]
    assert body["previous_secret_expires_at"] > body["updated_at"]


def test_every_change_is_audited(admin):
    endpoint = create(admin)
    admin.patch(f"/api/v1/webhook-endpoints/{endpoint['id']}", json={"description": "x"})
    admin.post(f"/api/v1/webhook-endpoints/{endpoint['id']}/rotate-secret")
    admin.delete(f"/api/v1/webhook-endpoints/{endpoint['id']}")
    entries = admin.get("/api/v1/audit", query_string={"entity_type": "webhook_endpoint"})
    actions = [e["action"] for e in entries.get_json()["entries"]]
    assert actions == [
        "webhook_endpoint.deleted",
        "webhook_endpoint.secret_rotated",
        "webhook_endpoint.updated",
        "webhook_endpoint.created",
    ]
    assert all(e["actor"]["email"] == "admin@example.com" for e in entries.get_json()["entries"])
    assert all("whsec_" not in str(e["details"]) for e in entries.get_json()["entries"])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": URL, "event_types": ["assessment.exploded"]}, "event_types"),
        ({"url": URL, "event_types": "assessment.completed"}, "event_types"),
        ({"url": URL, "enabled": "yes"}, "enabled"),
        ({"url": URL, "description": "x" * 501}, "description"),
        ({"url": URL, "colour": "blue"}, "colour"),
    ],
)
def test_bad_fields_are_422_naming_the_field(admin, body, field):
    response = admin.post("/api/v1/webhook-endpoints", json=body)
    assert response.status_code == 422
    assert response.get_json()["code"] == "VALIDATION_ERROR"
    assert [e["field"] for e in response.get_json()["errors"]] == [field]


@pytest.mark.parametrize("body", [b"{", b"[]", b"null"])
def test_malformed_json_is_400(admin, body):
    response = admin.post("/api/v1/webhook-endpoints", data=body, content_type="application/json")
    assert response.status_code == 400 and response.get_json()["code"] == "MALFORMED_JSON"


def test_missing_url_is_invalid_webhook_url(admin):
    response = admin.post("/api/v1/webhook-endpoints", json={"description": "no url"})
    assert response.status_code == 422
    assert response.get_json()["code"] == "INVALID_WEBHOOK_URL"


def test_students_get_403_and_strangers_401(client, tokens, admin):
    endpoint = create(admin)
    student = {"Authorization": f"Bearer {tokens['student']}"}
    paths = [
        ("get", "/api/v1/webhook-endpoints"),
        ("post", "/api/v1/webhook-endpoints"),
        ("get", f"/api/v1/webhook-endpoints/{endpoint['id']}"),
        ("post", f"/api/v1/webhook-endpoints/{endpoint['id']}/test"),
        ("get", f"/api/v1/webhook-endpoints/{endpoint['id']}/deliveries"),
        ("get", "/api/v1/webhook-deliveries/1"),
    ]
    for method, path in paths:
        as_student = getattr(client, method)(path, headers=student, json={})
        assert as_student.status_code == 403, path
        anonymous = getattr(client, method)(path, headers={"Authorization": ""}, json={})
        assert anonymous.status_code == 401, path


def test_unknown_ids_are_404(admin):
    assert admin.get("/api/v1/webhook-endpoints/999999").status_code == 404
    missing = admin.get("/api/v1/webhook-deliveries/999999")
    assert missing.status_code == 404
    assert missing.get_json()["code"] == "WEBHOOK_DELIVERY_NOT_FOUND"
    assert admin.post("/api/v1/webhook-deliveries/999999/redeliver").status_code == 404


@pytest.mark.parametrize(
    ("query", "field"), [({"status": "lost"}, "status"), ({"event_type": "nope"}, "event_type")]
)
def test_delivery_filters_are_validated(admin, query, field):
    endpoint = create(admin)
    response = admin.get(
        f"/api/v1/webhook-endpoints/{endpoint['id']}/deliveries", query_string=query
    )
    assert response.status_code == 422
    assert response.get_json()["errors"][0]["field"] == field


@pytest.mark.parametrize("since", [None, "", "yesterday", "2999-01-01T00:00:00Z", 12345])
def test_recover_needs_a_past_timestamp(admin, since):
    endpoint = create(admin)
    response = admin.post(
        f"/api/v1/webhook-endpoints/{endpoint['id']}/recover", json={"since": since}
    )
    assert response.status_code == 422
    assert response.get_json()["errors"][0]["field"] == "since"


def test_callback_registration_is_for_the_owner_or_an_admin(client, tokens, admin):
    student = {"Authorization": f"Bearer {tokens['student']}"}
    other = {"Authorization": f"Bearer {tokens['other']}"}
    assessment = client.post(
        "/api/v1/assessments", json={"question_set": "python-basics"}, headers=student
    ).get_json()
    path = f"/api/v1/assessments/{assessment['id']}/webhook"

    assert client.post(path, json={"webhook_url": URL}, headers=other).status_code == 403
    mine = client.post(path, json={"webhook_url": URL}, headers=student)
    assert mine.status_code == 201
    by_admin = admin.post(path, json={"webhook_url": URL + "/v2"})
    assert by_admin.status_code == 201
    assert by_admin.get_json()["signing_secret"] == mine.get_json()["signing_secret"], (
        "signed with the owner's secret, whoever registers"
    )
    assert by_admin.get_json()["webhook_url"] == URL + "/v2"
    audit = admin.get("/api/v1/audit", query_string={"action": "assessment.callback_registered"})
    assert len(audit.get_json()["entries"]) == 2
    missing = client.post(
        "/api/v1/assessments/999999/webhook", json={"webhook_url": URL}, headers=student
    )
    assert missing.status_code == 404


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:5000/", "ftp://example.invalid/", "not a url", None, 42]
)
def test_callback_with_a_bad_url_is_422_invalid_webhook_url(client, tokens, url):
    student = {"Authorization": f"Bearer {tokens['student']}"}
    assessment = client.post(
        "/api/v1/assessments", json={"question_set": "python-basics"}, headers=student
    ).get_json()
    response = client.post(
        f"/api/v1/assessments/{assessment['id']}/webhook",
        json={"webhook_url": url},
        headers=student,
    )
    assert response.status_code == 422
    body = response.get_json()
    assert body["code"] == "INVALID_WEBHOOK_URL"
    assert body["errors"][0]["field"] == "webhook_url"
