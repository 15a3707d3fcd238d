"""Idempotency keys on every POST of the API (SPEC 4)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
import requests
from sqlalchemy import func, select, update

from tests.support import STUDENT, full_answers, log_in_without_form, operations_of
from webapp.extensions import db
from webapp.models import IdempotencyKey
from webapp.models.base import utcnow
from webapp.services.idempotency import canonical_body, fingerprint, parse_key

pytestmark = pytest.mark.db


def keyed(key: str) -> dict:
    return {"Idempotency-Key": key}


def stored_keys(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(IdempotencyKey))


def test_concurrent_submits_with_one_key_create_exactly_one_operation(app, api, tokens):
    assessment = api.start()
    path = f"{api.base_url}/api/v1/assessments/{assessment['id']}/submit"
    body = {"responses": full_answers(assessment)}
    barrier = threading.Barrier(50)
    answers: list[requests.Response] = []

    def submit() -> None:
        with requests.Session() as session:
            barrier.wait()
            answers.append(
                session.post(
                    path,
                    json=body,
                    timeout=120,
                    headers={"Authorization": f"Bearer {tokens['student']}", **keyed("once")},
                )
            )

    threads = [threading.Thread(target=submit) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(answers) == 50
    originals = [r for r in answers if "Idempotent-Replayed" not in r.headers]
    replays = [r for r in answers if r.headers.get("Idempotent-Replayed") == "true"]
    assert len(originals) + len(replays) == 50
    # Exactly one request ran; the others were told to wait (409) or got its answer replayed.
    ran = [r for r in originals if r.status_code == 202]
    assert len(ran) == 1, [(r.status_code, r.text[:80]) for r in originals]
    for refused in (r for r in originals if r is not ran[0]):
        assert refused.status_code == 409
        assert refused.headers["Content-Type"] == "application/problem+json"
        assert refused.json()["code"] == "IDEMPOTENCY_KEY_IN_USE"
    for replay in replays:
        assert replay.status_code == 202
        assert replay.content == ran[0].content
        assert replay.headers["Location"] == ran[0].headers["Location"]
    assert operations_of(app, assessment["id"]) == 1


def test_resubmit_with_same_key_replays_first_response(api):
    assessment = api.start()
    first = api.post(f"/assessments/{assessment['id']}/submit", headers=keyed("k-1"))
    again = api.post(f"/assessments/{assessment['id']}/submit", headers=keyed("k-1"))
    assert first.status_code == again.status_code == 202
    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.content == first.content
    assert again.headers["Location"] == first.headers["Location"]
    assert again.headers["Content-Type"] == "application/json"


def test_resubmit_with_a_new_key_runs_and_says_already_submitted(api):
    assessment = api.start()
    first = api.post(f"/assessments/{assessment['id']}/submit", headers=keyed("k-a"))
    second = api.post(f"/assessments/{assessment['id']}/submit", headers=keyed("k-b"))
    assert (first.status_code, second.status_code) == (202, 200)
    assert second.json()["message"] == "already submitted"
    assert second.json()["operation"]["id"] == first.json()["operation"]["id"]


def test_replay_after_the_worker_finished_returns_the_original_202_body(api, worker):
    assessment = api.start()
    path = f"/assessments/{assessment['id']}/submit"
    body = {"responses": full_answers(assessment)}
    first = api.post(path, json=body, headers=keyed("after-worker"))
    assert first.status_code == 202
    assert api.wait_finished(assessment["id"])["status"] == "completed"
    replay = api.post(path, json=body, headers=keyed("after-worker"))
    assert replay.status_code == 202
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == first.json()
    assert replay.json()["operation"]["status"] == "pending"  # as it was then


def test_same_key_with_a_different_body_is_422(api):
    assessment = api.start()
    path = f"/assessments/{assessment['id']}/submit"
    assert api.post(path, json={"responses": []}, headers=keyed("k")).status_code == 202
    reused = api.post(path, json={"responses": [{"question_id": 1}]}, headers=keyed("k"))
    assert reused.status_code == 422
    assert reused.headers["Content-Type"] == "application/problem+json"
    assert reused.json()["code"] == "IDEMPOTENCY_KEY_REUSED"


def test_same_key_on_another_endpoint_is_422(api):
    api.post("/assessments", json={"question_set": "python-basics"}, headers=keyed("shared"))
    assessment = api.start()
    reused = api.post(f"/assessments/{assessment['id']}/submit", headers=keyed("shared"))
    assert reused.status_code == 422
    assert reused.json()["code"] == "IDEMPOTENCY_KEY_REUSED"


def test_key_order_and_whitespace_do_not_change_the_fingerprint(api):
    create = f"{api.base_url}/api/v1/assessments"
    first = api.session.post(
        create,
        data='{"question_set": "python-basics", "x": [1, 2]}',
        headers={"Content-Type": "application/json", **keyed("canon")},
    )
    second = api.session.post(
        create,
        data='{ "x":[1,2],\n "question_set":"python-basics" }',
        headers={"Content-Type": "application/json", **keyed("canon")},
    )
    assert first.status_code == second.status_code == 201
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.json()["id"] == first.json()["id"]


def test_a_key_used_by_another_account_is_independent(api, api_as):
    create = {"question_set": "python-basics"}
    mine = api.post("/assessments", json=create, headers=keyed("k"))
    theirs = api_as("other").post("/assessments", json=create, headers=keyed("k"))
    assert mine.status_code == theirs.status_code == 201
    assert "Idempotent-Replayed" not in theirs.headers
    assert theirs.json()["id"] != mine.json()["id"]
    assert api.post("/assessments", json=create, headers=keyed("k")).json() == mine.json()


@pytest.mark.parametrize(
    "header",
    ["", '""', "x" * 256, '"' + "x" * 256 + '"', "caf\u00e9", "tab\there", "nul\x01"],
    ids=["empty", "empty-quoted", "256-chars", "256-quoted", "non-ascii", "tab", "control"],
)
def test_an_invalid_key_is_400_and_nothing_runs(app, api, header):
    before = api.get("/assessments").json()["assessments"]
    response = api.session.post(
        f"{api.base_url}/api/v1/assessments",
        json={"question_set": "python-basics"},
        headers={"Idempotency-Key": header.encode("latin-1")},
    )
    assert response.status_code == 400
    assert response.json()["code"] == "INVALID_IDEMPOTENCY_KEY"
    assert api.get("/assessments").json()["assessments"] == before
    assert stored_keys(app) == 0


@pytest.mark.parametrize("key", ["a", "x" * 255, "with spaces inside", "~!@#$%^&*()"])
def test_valid_keys_are_accepted(api, key):
    response = api.post("/assessments", json={"question_set": "python-basics"}, headers=keyed(key))
    assert response.status_code == 201


def test_quoted_and_bare_forms_are_the_same_key(api):
    first = api.post("/assessments", json={"question_set": "python-basics"}, headers=keyed("q1"))
    second = api.post("/assessments", json={"question_set": "python-basics"}, headers=keyed('"q1"'))
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.json()["id"] == first.json()["id"]


def test_keys_expire_after_the_ttl(app, api, monkeypatch):
    monkeypatch.setitem(app.config, "IDEMPOTENCY_TTL", 0)
    first = api.post("/assessments", json={"question_set": "python-basics"}, headers=keyed("ttl"))
    second = api.post("/assessments", json={"question_set": "python-basics"}, headers=keyed("ttl"))
    assert first.status_code == second.status_code == 201
    assert "Idempotent-Replayed" not in second.headers
    assert second.json()["id"] != first.json()["id"]


def test_a_request_still_running_gets_409(app, api):
    api.post("/assessments", json={"question_set": "python-basics"}, headers=keyed("busy"))
    with app.app_context():  # as if the first request were still running
        db.session.execute(update(IdempotencyKey).values(status_code=None, locked_at=utcnow()))
        db.session.commit()
    response = api.post(
        "/assessments", json={"question_set": "python-basics"}, headers=keyed("busy")
    )
    assert response.status_code == 409
    assert response.json()["code"] == "IDEMPOTENCY_KEY_IN_USE"


def test_the_lock_of_a_crashed_request_expires(app, api):
    api.post("/assessments", json={"question_set": "python-basics"}, headers=keyed("crash"))
    lock_timeout = app.config["IDEMPOTENCY_LOCK_TIMEOUT"]
    with app.app_context():  # the first request died mid-way, long ago
        db.session.execute(
            update(IdempotencyKey).values(
                status_code=None, locked_at=utcnow() - timedelta(seconds=lock_timeout + 1)
            )
        )
        db.session.commit()
    retried = api.post(
        "/assessments", json={"question_set": "python-basics"}, headers=keyed("crash")
    )
    assert retried.status_code == 201
    assert "Idempotent-Replayed" not in retried.headers
    replay = api.post(
        "/assessments", json={"question_set": "python-basics"}, headers=keyed("crash")
    )
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json()["id"] == retried.json()["id"]


def test_a_5xx_is_not_stored_and_the_key_can_be_retried(app, api, monkeypatch):
    def broken(*_args, **_kwargs):
        raise RuntimeError("the database fell over")

    monkeypatch.setattr("webapp.api.assessments.create_assessment", broken)
    failed = api.post("/assessments", json={"question_set": "python-basics"}, headers=keyed("5xx"))
    assert failed.status_code == 500
    assert stored_keys(app) == 0
    monkeypatch.undo()
    retried = api.post("/assessments", json={"question_set": "python-basics"}, headers=keyed("5xx"))
    assert retried.status_code == 201
    assert "Idempotent-Replayed" not in retried.headers


def test_a_4xx_answer_of_the_view_is_stored_and_replayed(api):
    first = api.post("/assessments", json={"question_set": "no-such-set"}, headers=keyed("404"))
    again = api.post("/assessments", json={"question_set": "no-such-set"}, headers=keyed("404"))
    assert first.status_code == again.status_code == 404
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Content-Type"] == "application/problem+json"
    assert again.json() == first.json()


def test_requests_refused_before_they_ran_store_nothing(app, api, api_as):
    anonymous = api_as(None)
    refused = anonymous.post(
        "/assessments", json={"question_set": "python-basics"}, headers=keyed("auth")
    )
    assert refused.status_code == 401
    bad_token = api_as(None)
    bad_token.session.headers["Authorization"] = "Bearer sl_not-a-token"
    assert bad_token.post("/assessments", json={}, headers=keyed("auth")).status_code == 401
    assert stored_keys(app) == 0
    # The key is still free for the account's real request.
    assert (
        api.post(
            "/assessments", json={"question_set": "python-basics"}, headers=keyed("auth")
        ).status_code
        == 201
    )


def test_session_writes_without_csrf_store_nothing(app, client):
    log_in_without_form(app, client, STUDENT)
    response = client.post(
        "/api/v1/assessments", json={"question_set": "python-basics"}, headers=keyed("csrf")
    )
    assert response.status_code == 400  # no CSRF token
    assert stored_keys(app) == 0


def test_requests_without_a_key_or_not_post_store_nothing(app, api):
    assessment = api.start()
    api.put(
        f"/assessments/{assessment['id']}/responses", json={"responses": []}, headers=keyed("put")
    )
    api.get("/assessments", headers=keyed("get"))
    assert stored_keys(app) == 0


def test_fingerprint_is_method_path_and_canonical_body():
    base = fingerprint("POST", "/api/v1/assessments", b'{"a": 1, "b": [1, 2]}')
    assert fingerprint("POST", "/api/v1/assessments", b'{"b":[1,2],"a":1}') == base
    assert fingerprint("POST", "/api/v1/assessments/1/submit", b'{"a":1,"b":[1,2]}') != base
    assert fingerprint("PUT", "/api/v1/assessments", b'{"a":1,"b":[1,2]}') != base
    assert canonical_body(b"  \n") == b""
    assert canonical_body(b"{}") == b"{}"
    assert canonical_body(b"not json") == b"not json"


@pytest.mark.parametrize(
    ("header", "key"), [(None, None), ("abc", "abc"), ('"abc"', "abc"), ("  a b  ", "a b")]
)
def test_parse_key(header, key):
    assert parse_key(header) == key
