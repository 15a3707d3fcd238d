"""/healthz and /readyz."""

from __future__ import annotations

import pytest

from webapp import create_app

pytestmark = pytest.mark.db


def test_healthz_needs_nothing(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}


def test_readyz_with_database_redis_and_a_worker(client, worker):
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ready"
    assert body["checks"]["workers"]["count"] >= 1


def test_readyz_without_a_worker_says_so(db_url, idle_redis_url):
    app = create_app(
        {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": db_url,
            "REDIS_URL": idle_redis_url,
        }
    )
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert "no live worker" in response.get_json()["checks"]["workers"]["reason"]


def test_readyz_without_redis_says_so(db_url):
    app = create_app(
        {"TESTING": True, "SQLALCHEMY_DATABASE_URI": db_url, "REDIS_URL": "redis://127.0.0.1:1/0"}
    )
    body = app.test_client().get("/readyz").get_json()
    assert body["status"] == "not ready"
    assert body["checks"]["redis"]["ok"] is False
    assert body["checks"]["database"]["ok"] is True
    assert "Redis is unreachable" in body["checks"]["workers"]["reason"]


def test_readyz_without_database_says_so(redis_url):
    app = create_app(
        {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": "postgresql+psycopg://nobody@127.0.0.1:1/none",
            "REDIS_URL": redis_url,
        }
    )
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["checks"]["database"]["ok"] is False
