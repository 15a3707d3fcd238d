"""The assessments API: creating, answering, locking, and every way a request can be wrong."""

from __future__ import annotations

import pytest

from tests.support import bearer

pytestmark = pytest.mark.db


@pytest.fixture()
def student(tokens):
    return bearer(tokens["student"])


def create(client, headers, question_set="python-basics"):
    response = client.post(
        "/api/v1/assessments", json={"question_set": question_set}, headers=headers
    )
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def test_question_sets_are_listed(client, student):
    response = client.get("/api/v1/question-sets", headers=student)
    assert response.status_code == 200
    slugs = [s["slug"] for s in response.get_json()["question_sets"]]
    assert slugs == ["python-basics", "web-apis"]


def test_create_returns_questions_without_answers(client, student):
    body = create(client, student)
    assert body["status"] == "draft"
    types = {q["type"] for q in body["questions"]}
    assert types == {"theoretical", "profile", "essay"}
    for question in body["questions"]:
        assert set(question) >= {"id", "type", "prompt", "options", "weight"}
        assert "correct_option" not in question
    assert "correct_option" not in str(body)


def test_create_sets_location_header(client, student):
    response = client.post(
        "/api/v1/assessments", json={"question_set": "web-apis"}, headers=student
    )
    assert response.headers["Location"].endswith(f"/api/v1/assessments/{response.get_json()['id']}")


def test_saved_responses_are_returned(client, student):
    body = create(client, student)
    theory = next(q for q in body["questions"] if q["type"] == "theoretical")
    response = client.put(
        f"/api/v1/assessments/{body['id']}/responses",
        json={"responses": [{"question_id": theory["id"], "answer": "a"}]},
        headers=student,
    )
    assert response.status_code == 200
    assert response.get_json()["responses"] == [{"question_id": theory["id"], "answer": "a"}]
    again = client.put(
        f"/api/v1/assessments/{body['id']}/responses",
        json={"responses": [{"question_id": theory["id"], "answer": "b"}]},
        headers=student,
    )
    assert again.get_json()["responses"] == [{"question_id": theory["id"], "answer": "b"}]


def test_responses_are_locked_after_submit(client, student):
    body = create(client, student)
    assert (
        client.post(f"/api/v1/assessments/{body['id']}/submit", headers=student).status_code == 202
    )
    qid = body["questions"][0]["id"]
    response = client.put(
        f"/api/v1/assessments/{body['id']}/responses",
        json={"responses": [{"question_id": qid, "answer": "a"}]},
        headers=student,
    )
    assert response.status_code == 409
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["code"] == "ASSESSMENT_LOCKED"
    shown = client.get(f"/api/v1/assessments/{body['id']}", headers=student).get_json()
    assert shown["responses"] == []


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"responses": "nope"}, "responses"),
        ({"responses": [1]}, "responses[0]"),
        ({"responses": [{"question_id": 999999, "answer": "a"}]}, "responses[0].question_id"),
        ({"responses": [{"question_id": "1", "answer": "a"}]}, "responses[0].question_id"),
        ({"responses": [{"question_id": "THEORY", "answer": 5}]}, "responses[0].answer"),
        ({"responses": [{"question_id": "THEORY", "answer": "z"}]}, "responses[0].answer"),
        ({"responses": [{"question_id": "THEORY", "answer": "a" * 20_001}]}, "responses[0].answer"),
        ({}, "responses"),
    ],
)
def test_invalid_responses_are_422_with_field_errors(client, student, payload, field):
    body = create(client, student)
    theory = next(q for q in body["questions"] if q["type"] == "theoretical")
    for item in payload.get("responses", []) if isinstance(payload.get("responses"), list) else []:
        if isinstance(item, dict) and item.get("question_id") == "THEORY":
            item["question_id"] = theory["id"]
    response = client.put(
        f"/api/v1/assessments/{body['id']}/responses", json=payload, headers=student
    )
    assert response.status_code == 422
    problem = response.get_json()
    assert problem["code"] == "VALIDATION_ERROR"
    assert problem["status"] == 422
    assert {"type", "title", "detail"} <= set(problem)
    assert field in [e["field"] for e in problem["errors"]]


@pytest.mark.parametrize(
    ("data", "content_type"),
    [("{not json", "application/json"), ("[1, 2]", "application/json"), ("", "application/json")],
)
def test_malformed_json_is_400_problem(client, student, data, content_type):
    response = client.post(
        "/api/v1/assessments", data=data, content_type=content_type, headers=student
    )
    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["code"] == "MALFORMED_JSON"


@pytest.mark.parametrize("slug", [None, "", 42, ["python-basics"]])
def test_create_with_bad_slug_is_422(client, student, slug):
    response = client.post("/api/v1/assessments", json={"question_set": slug}, headers=student)
    assert response.status_code == 422
    assert response.get_json()["errors"][0]["field"] == "question_set"


def test_create_with_unknown_slug_is_404(client, student):
    response = client.post("/api/v1/assessments", json={"question_set": "nope"}, headers=student)
    assert response.status_code == 404
    assert response.get_json()["code"] == "QUESTION_SET_NOT_FOUND"


def test_oversized_body_is_413_problem(client, student):
    response = client.post(
        "/api/v1/assessments",
        data='{"question_set": "' + "x" * (2 * 1024 * 1024) + '"}',
        content_type="application/json",
        headers=student,
    )
    assert response.status_code == 413
    assert response.get_json()["code"] == "PAYLOAD_TOO_LARGE"


def test_unknown_status_filter_is_422(client, student):
    response = client.get("/api/v1/assessments?status=bogus", headers=student)
    assert response.status_code == 422


def test_list_shows_own_assessments_and_filters_by_status(client, student, tokens):
    mine = create(client, student)
    theirs = create(client, bearer(tokens["other"]))
    listed = client.get("/api/v1/assessments", headers=student).get_json()["assessments"]
    assert [a["id"] for a in listed] == [mine["id"]]
    admin_view = client.get("/api/v1/assessments?status=draft", headers=bearer(tokens["admin"]))
    assert {a["id"] for a in admin_view.get_json()["assessments"]} == {mine["id"], theirs["id"]}
    none_completed = client.get("/api/v1/assessments?status=completed", headers=student)
    assert none_completed.get_json()["assessments"] == []


# --- auth: 401 / 403 / 404 --------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer sl_wrong"},
        {"Authorization": "Basic abc"},
        {"Authorization": ""},
    ],
)
def test_no_valid_credentials_is_401(client, headers):
    response = client.get("/api/v1/assessments", headers=headers)
    assert response.status_code == 401
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["code"] == "UNAUTHORIZED"


@pytest.mark.parametrize(
    ("method", "suffix"),
    [
        ("get", ""),
        ("get", "/status"),
        ("get", "/result"),
        ("put", "/responses"),
        ("post", "/submit"),
    ],
)
def test_another_students_assessment_is_403(client, student, tokens, method, suffix):
    theirs = create(client, bearer(tokens["other"]))
    response = getattr(client, method)(
        f"/api/v1/assessments/{theirs['id']}{suffix}", json={"responses": []}, headers=student
    )
    assert response.status_code == 403
    assert response.get_json()["code"] == "FORBIDDEN"


@pytest.mark.parametrize("suffix", ["", "/status", "/result", "/submit"])
def test_missing_assessment_is_404(client, student, suffix):
    method = client.post if suffix == "/submit" else client.get
    response = method(f"/api/v1/assessments/987654{suffix}", headers=student)
    assert response.status_code == 404
    assert response.get_json()["code"] == "ASSESSMENT_NOT_FOUND"


def test_missing_operation_is_404(client, student):
    response = client.get("/api/v1/operations/987654", headers=student)
    assert response.status_code == 404
    assert response.get_json()["code"] == "OPERATION_NOT_FOUND"


def test_unknown_api_path_is_404_problem(client, student):
    response = client.get("/api/v1/nothing-here", headers=student)
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"


def test_admin_sees_any_assessment(client, tokens):
    theirs = create(client, bearer(tokens["other"]))
    response = client.get(f"/api/v1/assessments/{theirs['id']}", headers=bearer(tokens["admin"]))
    assert response.status_code == 200


def test_session_login_works_for_the_api_and_writes_need_csrf(app, client):
    client.application.config["WTF_CSRF_ENABLED"] = False
    try:
        login = client.post(
            "/login", data={"email": "student@example.com", "password": "student-password"}
        )
        assert login.status_code == 302
    finally:
        client.application.config["WTF_CSRF_ENABLED"] = True
    assert client.get("/api/v1/assessments").status_code == 200
    refused = client.post("/api/v1/assessments", json={"question_set": "python-basics"})
    assert refused.status_code == 400  # a session-authenticated write without a CSRF token


def test_result_before_finishing_is_409(client, student):
    body = create(client, student)
    response = client.get(f"/api/v1/assessments/{body['id']}/result", headers=student)
    assert response.status_code == 409
    assert response.get_json()["code"] == "RESULT_NOT_READY"
