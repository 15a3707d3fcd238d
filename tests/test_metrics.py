"""Metrics: who may read /metrics, what it counts (routes, not URLs), and a worker's own port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.support import free_port, submit_through
from webapp.config import PROJECT_ROOT, Config

STATUS_ROUTE = "/api/v1/assessments/<int:assessment_id>/status"


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of an exposition: (name, labels) -> value."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: dict, name: str, **labels: str) -> float:
    """One sample's value, 0 when absent."""
    return found.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture()
def open_metrics(app, monkeypatch):
    """/metrics readable from loopback (the test client's address) for this test."""
    monkeypatch.setitem(app.config, "METRICS_ALLOWED_CIDRS", ["127.0.0.0/8"])
    monkeypatch.setitem(app.config, "METRICS_TOKEN", "")


def scrape(client) -> dict:
    response = client.get("/metrics")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    return samples(response.get_data(as_text=True))


# --- access ---------------------------------------------------------------------------------


def test_metrics_are_closed_when_neither_token_nor_allowlist_is_set(client, app):
    assert app.config["METRICS_TOKEN"] == "" and app.config["METRICS_ALLOWED_CIDRS"] == []
    response = client.get("/metrics")
    assert response.status_code == 403
    assert response.headers["Content-Type"] == "application/problem+json"
    body = response.get_json()
    assert body["code"] == "METRICS_CLOSED" and "METRICS_TOKEN" in body["detail"]


@pytest.mark.parametrize(
    ("token", "cidrs", "authorization", "remote", "status"),
    [
        ("s3cret", [], "Bearer s3cret", "203.0.113.9", 200),
        ("s3cret", [], "Bearer wrong", "127.0.0.1", 401),
        ("s3cret", [], None, "127.0.0.1", 401),
        ("", ["127.0.0.0/8"], None, "127.0.0.1", 200),
        ("", ["10.0.0.0/8"], None, "127.0.0.1", 403),
        ("", ["::1/128"], None, "::1", 200),
        # Both configured: both must pass.
        ("s3cret", ["127.0.0.0/8"], None, "127.0.0.1", 401),
        ("s3cret", ["10.0.0.0/8"], "Bearer s3cret", "127.0.0.1", 403),
        ("s3cret", ["127.0.0.0/8"], "Bearer s3cret", "127.0.0.1", 200),
    ],
)
def test_metrics_access_rule(client, app, monkeypatch, token, cidrs, authorization, remote, status):
    monkeypatch.setitem(app.config, "METRICS_TOKEN", token)
    monkeypatch.setitem(app.config, "METRICS_ALLOWED_CIDRS", cidrs)
    headers = {"Authorization": authorization} if authorization else {}
    response = client.get("/metrics", headers=headers, environ_base={"REMOTE_ADDR": remote})
    assert response.status_code == status, response.get_data(as_text=True)
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_bad_allowlist_stops_the_app_from_starting(monkeypatch):
    monkeypatch.setenv("METRICS_ALLOWED_CIDRS", "127.0.0.0/8, not-a-network")
    with pytest.raises(RuntimeError, match="METRICS_ALLOWED_CIDRS: 'not-a-network'"):
        Config()


# --- what the web counts --------------------------------------------------------------------


def test_requests_are_counted_by_route_template_never_by_url(client, api, open_metrics):
    assessment = api.start()
    before = scrape(client)
    for _ in range(3):
        assert client.get(f"/api/v1/assessments/{assessment['id']}/status").status_code == 401
    client.get("/no/such/page/12345")
    after = scrape(client)

    key = {"method": "GET", "route": STATUS_ROUTE, "status": "401"}
    assert (
        value(after, "scoreline_http_requests_total", **key)
        - value(before, "scoreline_http_requests_total", **key)
        == 3
    )
    assert value(after, "scoreline_http_requests_total", method="GET", route="unmatched",
                 status="404") >= 1  # fmt: skip
    histogram = {"method": "GET", "route": STATUS_ROUTE}
    assert value(after, "scoreline_http_request_duration_seconds_count", **histogram) >= 3
    routes = {dict(labels).get("route") for _, labels in after}
    segments = {part for r in routes if r for part in r.split("/")}
    assert str(assessment["id"]) not in segments and "12345" not in segments


def test_polls_answered_from_the_cache_are_counted_as_requests_and_hits(
    client, api, worker, open_metrics
):
    assessment = api.start()
    api.post(f"/assessments/{assessment['id']}/submit")
    api.wait_finished(assessment["id"])
    before = scrape(client)
    for _ in range(20):
        assert api.get(f"/assessments/{assessment['id']}/status").status_code == 200
    after = scrape(client)

    key = {"method": "GET", "route": STATUS_ROUTE, "status": "200"}
    counted = value(after, "scoreline_http_requests_total", **key) - value(
        before, "scoreline_http_requests_total", **key
    )
    assert counted == 20
    hits = value(after, "scoreline_poll_cache_hits_total", kind="status") - value(
        before, "scoreline_poll_cache_hits_total", kind="status"
    )
    assert hits >= 15  # the first poll or two may build the entry


def test_submissions_are_counted_by_outcome(client, api, worker, open_metrics):
    before = scrape(client)
    assessment = api.start()
    assert api.post(f"/assessments/{assessment['id']}/submit").status_code == 202
    assert api.post(f"/assessments/{assessment['id']}/submit").status_code == 200
    api.wait_finished(assessment["id"])
    after = scrape(client)

    for outcome in ("accepted", "already_submitted"):
        assert (
            value(after, "scoreline_submissions_total", outcome=outcome)
            - value(before, "scoreline_submissions_total", outcome=outcome)
            == 1
        )


def test_deployment_state_reports_queues_workers_and_endpoints(client, worker, open_metrics):
    found = scrape(client)
    for queue in ("scoring", "webhooks", "default"):
        assert (
            "scoreline_queue_jobs",
            frozenset({"queue": queue, "state": "queued"}.items()),
        ) in found
        assert value(found, "scoreline_queue_oldest_job_age_seconds", queue=queue) >= 0
    assert value(found, "scoreline_workers", state="live") >= 1
    assert value(found, "scoreline_dependency_up", dependency="redis") == 1
    assert value(found, "scoreline_dependency_up", dependency="database") == 1
    assert ("scoreline_webhook_endpoints", frozenset({"state": "disabled"}.items())) in found


@pytest.mark.db
def test_watchdog_repairs_are_counted_by_kind(app, db_url, tokens, worker):
    from datetime import timedelta

    from webapp import create_app, metrics
    from webapp.metrics_server import exposition
    from webapp.services.watchdog import reconcile

    def repaired() -> float:
        found = samples(exposition(metrics.directory()).decode())
        return value(found, "scoreline_watchdog_repairs_total", kind="stage")

    before = repaired()
    down = create_app(
        {"TESTING": True, "SQLALCHEMY_DATABASE_URI": db_url, "REDIS_URL": "redis://127.0.0.1:1/0"}
    )
    submit_through(down, tokens)  # Redis unreachable: the stages wait for the watchdog
    with app.app_context():
        report = reconcile(grace=timedelta(0))
    assert [r.stages for r in report.repairs] == [["gpt", "rag", "fusion"]]
    assert repaired() - before == 3


def test_request_totals_are_written_out_and_read_back_as_a_histogram(tmp_path):
    from prometheus_client import CollectorRegistry, generate_latest

    from webapp.request_metrics import RequestCollector, RequestStats

    stats = RequestStats(tmp_path)
    for seconds in (0.001, 0.02, 3.0):
        stats.record(("GET", "/healthz", "200"), seconds, None)
    stats.record(("GET", STATUS_ROUTE, "304"), 0.0001, "status")
    stats.flush()
    registry = CollectorRegistry()
    registry.register(RequestCollector(tmp_path))
    found = samples(generate_latest(registry).decode())
    route = {"method": "GET", "route": "/healthz"}
    bucket = "scoreline_http_request_duration_seconds_bucket"
    assert value(found, bucket, **route, le="0.0025") == 1
    assert value(found, bucket, **route, le="0.025") == 2
    assert value(found, bucket, **route, le="2.5") == 2
    assert value(found, bucket, **route, le="+Inf") == 3
    assert value(found, "scoreline_http_request_duration_seconds_sum", **route) == 3.021
    assert value(found, "scoreline_http_requests_total", **route, status="200") == 3
    assert value(found, "scoreline_poll_cache_hits_total", kind="status") == 1


# --- request ids ------------------------------------------------------------------------------


def test_request_id_is_echoed_or_made(client):
    echoed = client.get("/healthz", headers={"X-Request-ID": "lb-7f3a.1"})
    assert echoed.headers["X-Request-ID"] == "lb-7f3a.1"
    made = client.get("/healthz")
    assert len(made.headers["X-Request-ID"]) == 32
    unusable = client.get("/healthz", headers={"X-Request-ID": "has spaces <and> tags"})
    assert unusable.headers["X-Request-ID"] != "has spaces <and> tags"
    assert len(unusable.headers["X-Request-ID"]) == 32


# --- forked processes share the files ---------------------------------------------------------

FORKS = """
import os, sys
from pathlib import Path
from webapp import metrics
metrics.configure(Path(sys.argv[1]), one_fork_at_a_time=True)
metrics.submission("accepted")
for _ in range(3):  # three work horses, one after another
    pid = os.fork()
    if pid == 0:
        metrics.submission("accepted")
        os._exit(0)
    os.waitpid(pid, 0)
"""


def test_work_horses_one_after_another_share_one_set_of_files(tmp_path):
    subprocess.run(
        [sys.executable, "-c", FORKS, str(tmp_path)], cwd=PROJECT_ROOT, check=True, timeout=60
    )
    from webapp.metrics_server import exposition

    found = samples(exposition(tmp_path).decode())
    assert value(found, "scoreline_submissions_total", outcome="accepted") == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["counter_horse.db", "counter_main.db"]


def test_each_process_claims_its_own_folder_and_only_dead_ones_are_removed(tmp_path):
    from webapp.metrics import claim_directory

    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        for pid in (alive.pid, dead.pid):
            (tmp_path / f"web-{pid}").mkdir()
            (tmp_path / f"web-{pid}" / "counter_1.db").write_bytes(b"x")
        mine = claim_directory(tmp_path, "web")
        assert mine == tmp_path / f"web-{os.getpid()}" and mine.is_dir()
        assert (tmp_path / f"web-{alive.pid}" / "counter_1.db").exists()  # another live gunicorn
        assert not (tmp_path / f"web-{dead.pid}").exists()
    finally:
        alive.kill()
        alive.wait()


# --- a worker's own port ----------------------------------------------------------------------


def wait_scrape(url: str, ready, timeout: float = 30, **kwargs) -> dict:
    """Scrape until `ready(samples)` holds."""
    deadline = time.monotonic() + timeout
    while True:
        response = requests.get(url, timeout=5, **kwargs)
        assert response.status_code == 200, response.text
        found = samples(response.text)
        if ready(found):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not ready in {timeout}s:\n{response.text[:3000]}")
        time.sleep(0.2)


def test_worker_serves_its_own_metrics_to_allowed_clients(webhook_site, receivers, tokens):
    port = free_port()
    receiver = receivers()
    site = webhook_site(WORKER_METRICS_PORT=str(port), METRICS_TOKEN="w0rker",
                        WORKER_METRICS_HOST="127.0.0.1")  # fmt: skip
    url = f"http://127.0.0.1:{port}/metrics"
    assert requests.get(url, timeout=5).status_code == 401
    student = site.client(tokens["student"])
    assessment = student.post("/api/v1/assessments", json={"question_set": "python-basics"})
    callback = student.post(
        f"/api/v1/assessments/{assessment.get_json()['id']}/webhook",
        json={"webhook_url": receiver.url},
    )
    assert callback.status_code == 201, callback.get_json()
    student.post(f"/api/v1/assessments/{assessment.get_json()['id']}/submit")
    receiver.wait_for(7)

    auth = {"Authorization": "Bearer w0rker"}

    def done(found):
        return (
            all(
                value(found, "scoreline_stage_duration_seconds_count", stage=s, outcome="completed")
                for s in ("gpt", "rag", "fusion")
            )
            and value(found, "scoreline_webhook_attempts_total", outcome="success") >= 7
        )

    found = wait_scrape(url, done, headers=auth)
    assert value(found, "scoreline_webhook_attempt_duration_seconds_count", result="success") >= 7
    assert value(found, "scoreline_webhook_delivery_latency_seconds_count",
                 event_type="assessment.completed") == 1  # fmt: skip
    assert (
        requests.get(url, timeout=5, headers=auth).headers["Content-Type"].startswith("text/plain")
    )


def test_worker_cleans_up_its_metrics_folder(base_dir, db_url, worker_factory):
    worker, _url = worker_factory()
    folder = base_dir / "instance" / "metrics" / f"worker-{worker.process.pid}"
    assert folder.is_dir()
    worker.process.send_signal(signal.SIGTERM)
    assert worker.process.wait(timeout=90) == 0, worker.log()[-3000:]  # a warm shutdown
    assert not folder.exists()
    assert os.environ.get("PROMETHEUS_MULTIPROC_DIR", "") != str(folder)


def test_the_llm_breaker_state_is_read_from_redis_at_scrape(app, client, open_metrics):
    from webapp.queues import get_redis
    from webapp.services.llm.breaker import CircuitBreaker

    with app.app_context():
        breaker = CircuitBreaker(get_redis(), failures=1, cooldown=60)
        model = app.config["OPENAI_MODEL"]
        try:
            assert value(scrape(client), "scoreline_llm_breaker_state", model=model) == 0
            assert breaker.failed("HTTP 503")
            assert value(scrape(client), "scoreline_llm_breaker_state", model=model) == 2
        finally:
            assert breaker.succeeded()
    assert value(scrape(client), "scoreline_llm_breaker_state", model=model) == 0


def test_every_llm_call_is_counted_by_outcome_with_its_tokens(app):
    from webapp import metrics
    from webapp.metrics_server import exposition
    from webapp.services.llm.calls import CallResult, Outcome, notify
    from webapp.services.llm.usage import Usage

    def counted() -> dict:
        return samples(exposition(metrics.directory()).decode())

    before = counted()
    notify(CallResult(Outcome.SCORED, usage=Usage(120, 30, 100), seconds=1.5), "test-model")
    notify(CallResult(Outcome.RATE_LIMITED, seconds=0.1), "test-model")
    after = counted()

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("scoreline_llm_requests_total", model="test-model", outcome="scored") == 1
    assert grew("scoreline_llm_requests_total", model="test-model", outcome="rate_limited") == 1
    assert grew("scoreline_llm_tokens_total", model="test-model", kind="prompt") == 120
    assert grew("scoreline_llm_tokens_total", model="test-model", kind="completion") == 30
    assert grew("scoreline_llm_request_duration_seconds_count", model="test-model") == 2
