"""Rate limits (SPEC 8): per account on the shared Redis, 429 RATE_LIMITED with Retry-After."""

from __future__ import annotations

import uuid

import pytest
from limits import parse

from tests.support import bearer
from webapp import create_app
from webapp.config import Config

pytestmark = pytest.mark.db

LOW_LIMITS = {"RATE_LIMIT_POLL": "3/minute", "RATE_LIMIT_WRITE": "2/minute"}


@pytest.fixture()
def limited_app(app, db_url, redis_url):
    """An app on the session's database and Redis with low limits and counters of its own."""

    def build(**config):
        return create_app(
            {
                "TESTING": True,
                "SQLALCHEMY_DATABASE_URI": db_url,
                "REDIS_URL": redis_url,
                "SECRET_KEY": "test-secret",
                "RATELIMIT_KEY_PREFIX": f"test-{uuid.uuid4().hex}",
                **LOW_LIMITS,
                **config,
            }
        )

    return build


def start(client, token: str) -> int:
    response = client.post(
        "/api/v1/assessments", json={"question_set": "python-basics"}, headers=bearer(token)
    )
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


def test_polling_past_the_limit_is_429_with_retry_after(app, limited_app, tokens):
    client = limited_app(RATE_LIMIT_WRITE="100/minute").test_client()
    assessment_id = start(client, tokens["student"])
    status = f"/api/v1/assessments/{assessment_id}/status"
    for _ in range(3):
        assert client.get(status, headers=bearer(tokens["student"])).status_code == 200
    refused = client.get(status, headers=bearer(tokens["student"]))
    assert refused.status_code == 429
    assert refused.headers["Content-Type"] == "application/problem+json"
    body = refused.get_json()
    assert body["code"] == "RATE_LIMITED" and body["status"] == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 60


def test_polling_endpoints_share_one_bucket(limited_app, tokens):
    client = limited_app(RATE_LIMIT_WRITE="100/minute").test_client()
    assessment_id = start(client, tokens["student"])
    headers = bearer(tokens["student"])
    assert (
        client.get(f"/api/v1/assessments/{assessment_id}/status", headers=headers).status_code
        == 200
    )
    assert (
        client.get(f"/api/v1/assessments/{assessment_id}/history", headers=headers).status_code
        == 200
    )
    assert client.get("/api/v1/events/recent", headers=headers).status_code == 200
    assert client.get("/api/v1/operations/1", headers=headers).status_code == 429
    # Other kinds of request have buckets of their own.
    assert client.get(f"/api/v1/assessments/{assessment_id}", headers=headers).status_code == 200


def test_limits_are_per_account(limited_app, tokens):
    client = limited_app(RATE_LIMIT_WRITE="100/minute").test_client()
    assessment_id = start(client, tokens["admin"])
    status = f"/api/v1/assessments/{assessment_id}/status"
    for _ in range(3):
        client.get(status, headers=bearer(tokens["admin"]))
    assert client.get(status, headers=bearer(tokens["admin"])).status_code == 429
    theirs = start(client, tokens["other"])
    other_status = f"/api/v1/assessments/{theirs}/status"
    assert client.get(other_status, headers=bearer(tokens["other"])).status_code == 200


def test_writes_are_limited_more_tightly_and_apart_from_polling(limited_app, tokens):
    client = limited_app().test_client()
    first = start(client, tokens["student"])
    start(client, tokens["student"])
    refused = client.post(
        "/api/v1/assessments",
        json={"question_set": "python-basics"},
        headers=bearer(tokens["student"]),
    )
    assert refused.status_code == 429
    assert refused.get_json()["code"] == "RATE_LIMITED"
    status = client.get(f"/api/v1/assessments/{first}/status", headers=bearer(tokens["student"]))
    assert status.status_code == 200


def test_a_refused_request_stores_no_idempotency_key(limited_app, tokens):
    client = limited_app(RATE_LIMIT_WRITE="1/minute").test_client()
    start(client, tokens["student"])
    headers = {**bearer(tokens["student"]), "Idempotency-Key": "limited"}
    body = {"question_set": "python-basics"}
    assert client.post("/api/v1/assessments", json=body, headers=headers).status_code == 429
    relaxed = limited_app(RATE_LIMIT_WRITE="100/minute").test_client()
    retried = relaxed.post("/api/v1/assessments", json=body, headers=headers)
    assert retried.status_code == 201
    assert "Idempotent-Replayed" not in retried.headers


def test_anonymous_clients_are_counted_by_address(limited_app):
    client = limited_app(RATE_LIMIT_DEFAULT="2/minute").test_client()
    assert client.get("/api/v1/assessments").status_code == 401
    assert client.get("/api/v1/assessments").status_code == 401
    assert client.get("/api/v1/assessments").status_code == 429


def test_the_status_endpoint_costs_one_redis_round_trip(limited_app, tokens):
    app = limited_app(RATE_LIMIT_POLL="100/minute", RATE_LIMIT_WRITE="100/minute")
    client = app.test_client()
    assessment_id = start(client, tokens["student"])
    [limiter] = app.extensions["limiter"]
    redis_client = limiter.storage.storage
    calls = []
    original = redis_client.execute_command

    def counting(*args, **kwargs):
        calls.append(args[0])
        return original(*args, **kwargs)

    redis_client.execute_command = counting
    response = client.get(
        f"/api/v1/assessments/{assessment_id}/status", headers=bearer(tokens["student"])
    )
    assert response.status_code == 200
    assert len(calls) == 1, calls


def test_an_unreachable_redis_does_not_break_the_api(limited_app, tokens):
    client = limited_app(
        REDIS_URL="redis://127.0.0.1:1/0", RATE_LIMIT_WRITE="100/minute"
    ).test_client()
    assessment_id = start(client, tokens["student"])
    headers = bearer(tokens["student"])
    assert (
        client.get(f"/api/v1/assessments/{assessment_id}/status", headers=headers).status_code
        == 200
    )
    submitted = client.post(f"/api/v1/assessments/{assessment_id}/submit", headers=headers)
    assert submitted.status_code == 202  # the operation waits for Redis (SPEC 8)
    for _ in range(3):  # limits are still kept, in memory
        client.get(f"/api/v1/assessments/{assessment_id}/status", headers=headers)
    assert (
        client.get(f"/api/v1/assessments/{assessment_id}/status", headers=headers).status_code
        == 429
    )


def test_the_default_polling_limit_allows_2_second_polling_from_eight_tabs(monkeypatch):
    monkeypatch.delenv("RATE_LIMIT_POLL", raising=False)
    limit = parse(Config().RATE_LIMIT_POLL)
    per_minute = limit.amount * 60 / limit.get_expiry()
    assert per_minute >= 8 * 30


def test_limits_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("RATE_LIMIT_WRITE", "7/second")
    monkeypatch.setenv("RATE_LIMIT_ENABLED", "false")
    config = Config()
    assert config.RATE_LIMIT_WRITE == "7/second"
    assert config.RATE_LIMIT_ENABLED is False


def test_a_malformed_limit_fails_at_startup():
    with pytest.raises(RuntimeError, match="RATE_LIMIT_POLL"):
        create_app({"SQLALCHEMY_DATABASE_URI": "sqlite://", "RATE_LIMIT_POLL": "lots"})


def test_limits_can_be_switched_off(limited_app, tokens):
    client = limited_app(RATE_LIMIT_ENABLED=False, RATE_LIMIT_DEFAULT="1/minute").test_client()
    for _ in range(4):
        assert (
            client.get("/api/v1/question-sets", headers=bearer(tokens["student"])).status_code
            == 200
        )
