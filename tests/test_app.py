"""The factory, configuration, health, error pages and the embedded Redis."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

import pytest
import redis

from webapp import create_app
from webapp.config import PROJECT_ROOT, Config, database_url
from webapp.queues import ensure_embedded_redis


def test_factory_applies_test_config():
    assert not create_app({"SQLALCHEMY_DATABASE_URI": "sqlite://"}).testing
    assert create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": "sqlite://"}).testing


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:p@h/db", "postgresql+psycopg://u:p@h/db"),
        ("postgresql://u@h/db", "postgresql+psycopg://u@h/db"),
        ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
    ],
)
def test_database_url_picks_the_psycopg3_driver(monkeypatch, given, expected):
    monkeypatch.setenv("DATABASE_URL", given)
    assert database_url() == expected


def test_config_defaults_follow_the_spec(monkeypatch):
    for name in ("WEBHOOK_TIMEOUT", "WEBHOOK_RETRY_SCHEDULE", "IDEMPOTENCY_TTL", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    config = Config()
    assert config.WEBHOOK_TIMEOUT == 15
    assert config.WEBHOOK_RETRY_SCHEDULE == [5, 300, 1800, 7200, 18000, 36000, 36000]
    assert config.WEBHOOK_DISABLE_AFTER == 432000
    assert config.IDEMPOTENCY_TTL == 86400
    assert config.HISTORY_RETENTION == 604800
    assert config.OPENAI_API_KEY == ""


def test_bad_numeric_setting_fails_loudly(monkeypatch):
    monkeypatch.setenv("WEBHOOK_TIMEOUT", "soon")
    with pytest.raises(RuntimeError, match="WEBHOOK_TIMEOUT"):
        Config()


def test_unknown_page_is_an_html_404(client):
    response = client.get("/no-such-page", headers={"Accept": "text/html"})
    assert response.status_code == 404
    assert b"<html" in response.data
    assert "Page not found" in response.text
    assert "There is no page at /no-such-page." in response.text
    assert "If you entered the URL manually" not in response.text  # not Werkzeug's wording


def test_embedded_redis_is_started_once_and_shared(tmp_path):
    url = ensure_embedded_redis(tmp_path)
    first = redis.Redis.from_url(url)
    first.set("shared", "yes")
    # A second process (here: a second call) finds the running server instead of starting one.
    assert ensure_embedded_redis(tmp_path) == url
    assert redis.Redis.from_url(url).get("shared") == b"yes"
    pid = int((tmp_path / "redis.pid").read_text())
    assert pid > 0
    with contextlib.suppress(redis.ConnectionError):  # the server closes us as it stops
        first.shutdown(nosave=True)


def test_a_web_process_never_loads_numpy(tmp_path):
    """The web only reads the knowledge base's topics and resources; the BM25 index (bm25s and
    NumPy, about 10 MB of a web process) is built by the worker, on first search or before it
    forks."""
    code = "import sys, wsgi; print('numpy' in sys.modules, 'bm25s' in sys.modules)"
    env = {**os.environ, "SECRET_KEY": "x" * 32, "SCORELINE_INSTANCE": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]
