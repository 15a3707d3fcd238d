"""A real Prometheus scrapes a real gunicorn web and a real worker; PromQL sees the work move.

Debian's `prometheus` package provides the binaries (`.ci/run` installs it). Without them this
test fails, never skips: set PROMETHEUS_BIN / PROMTOOL_BIN if they live elsewhere.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.support import WEBHOOK_TEST_ENV, free_port, full_answers
from webapp.config import PROJECT_ROOT

pytestmark = pytest.mark.db

TOKEN = "prometheus-test-token"
RULES = PROJECT_ROOT / "deploy" / "prometheus" / "scoreline-alerts.yml"


def binary(name: str) -> str:
    """The path of a Prometheus binary; a missing one fails the test with what to install."""
    path = os.environ.get(f"{name.upper()}_BIN") or shutil.which(name)
    assert path, (
        f"{name} not found: install Debian's `prometheus` package (apt-get install -y prometheus)"
    )
    return path


def test_alert_rules_are_valid_and_their_unit_tests_pass():
    promtool = binary("promtool")
    folder = RULES.parent
    for command in (
        ["check", "rules", "scoreline-alerts.yml"],
        ["test", "rules", "scoreline-alerts.test.yml"],
        ["check", "config", "--syntax-only", "prometheus.yml"],
    ):
        done = subprocess.run([promtool, *command], cwd=folder, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr


def wait_http(url: str, process: subprocess.Popen, log: Path, timeout: float = 60, **kw) -> None:
    """Until `url` answers 200 (or the process dies)."""
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, log.read_text(errors="replace")[-3000:]
        try:
            if requests.get(url, timeout=2, **kw).status_code == 200:
                return
        except requests.RequestException:  # not listening yet, or still booting
            pass
        assert time.monotonic() < deadline, f"{url} not up:\n{log.read_text()[-3000:]}"
        time.sleep(0.2)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture()
def stack(tmp_path, base_dir, db_url, worker_factory, app):
    """gunicorn (2 processes) + a worker with its metrics port + Prometheus scraping both."""
    worker_port, web_port, prom_port = free_port(), free_port(), free_port()
    env = {
        **WEBHOOK_TEST_ENV,
        "METRICS_TOKEN": TOKEN,
        "WORKER_METRICS_PORT": str(worker_port),
        "WORKER_METRICS_HOST": "127.0.0.1",
    }
    worker, redis_url = worker_factory(**env)
    web_log = tmp_path / "web.log"
    web_env = {
        **os.environ,
        **env,
        "DATABASE_URL": db_url,
        "REDIS_URL": redis_url,
        "SCORELINE_INSTANCE": str(tmp_path / "instance"),
        "METRICS_DIR": str(tmp_path / "metrics"),
        "SECRET_KEY": app.config["SECRET_KEY"],
        "OPENAI_API_KEY": "",
        "HOST": "127.0.0.1",
        "PORT": str(web_port),
        "WEB_CONCURRENCY": "2",
        **{f"RATE_LIMIT_{b}": "100000/minute" for b in ("POLL", "WRITE", "DEFAULT")},
    }
    web = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "wsgi:app", "-c", "gunicorn.conf.py"],
        cwd=PROJECT_ROOT,
        env=web_env,
        stdout=web_log.open("w"),
        stderr=subprocess.STDOUT,
    )
    config = tmp_path / "prometheus.yml"
    config.write_text(
        f"""
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
rule_files: ["{RULES}"]
scrape_configs:
  - job_name: scoreline-web
    authorization: {{type: Bearer, credentials: {TOKEN}}}
    static_configs: [{{targets: ["127.0.0.1:{web_port}"]}}]
  - job_name: scoreline-worker
    authorization: {{type: Bearer, credentials: {TOKEN}}}
    static_configs: [{{targets: ["127.0.0.1:{worker_port}"]}}]
"""
    )
    prom_log = tmp_path / "prometheus.log"
    prometheus = subprocess.Popen(
        [
            binary("prometheus"),
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=prom_log.open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_http(f"http://127.0.0.1:{web_port}/healthz", web, web_log)
        wait_http(f"http://127.0.0.1:{prom_port}/-/ready", prometheus, prom_log)
        yield f"http://127.0.0.1:{web_port}", f"http://127.0.0.1:{prom_port}", worker
    finally:
        stop(prometheus)
        stop(web)


def query(prometheus: str, promql: str) -> dict[tuple, float]:
    """An instant PromQL query: {sorted label items: value}."""
    response = requests.get(f"{prometheus}/api/v1/query", params={"query": promql}, timeout=10)
    assert response.status_code == 200, response.text
    return {
        tuple(sorted(r["metric"].items())): float(r["value"][1])
        for r in response.json()["data"]["result"]
    }


def total(prometheus: str, promql: str) -> float:
    return sum(query(prometheus, promql).values())


def eventually(check, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "PromQL never saw it"
        time.sleep(0.5)


def totals_become(prometheus: str, want: dict[str, float]) -> None:
    """Until each PromQL query of `want` totals its value; fails with what was last seen."""
    seen: dict[str, float] = {}
    deadline = time.monotonic() + 30
    while seen != want:
        assert time.monotonic() < deadline, f"PromQL saw {seen}, not {want}"
        time.sleep(0.5)
        seen = {q: total(prometheus, q) for q in want}


# What one submission moves, as PromQL over the scraped data.
SUBMISSIONS = 'sum(scoreline_submissions_total{job="scoreline-web", outcome="accepted"})'
SUBMIT_REQUESTS = (
    'sum(scoreline_http_requests_total{job="scoreline-web", method="POST", '
    'route="/api/v1/assessments/<int:assessment_id>/submit", status="202"})'
)
SUBMIT_LATENCY_COUNT = (
    'sum(scoreline_http_request_duration_seconds_count{job="scoreline-web", method="POST", '
    'route="/api/v1/assessments/<int:assessment_id>/submit"})'
)
STAGES = (
    'sum(scoreline_stage_duration_seconds_count{job="scoreline-worker", outcome="completed", '
    'stage=~"gpt|rag|fusion"})'
)
ATTEMPTS = 'sum(scoreline_webhook_attempts_total{job="scoreline-worker", outcome="success"})'
DELIVERED = (
    "sum(scoreline_webhook_delivery_latency_seconds_count"
    '{job="scoreline-worker", event_type="assessment.completed"})'
)
EVENTS_PER_SUBMISSION = 7


def submit_with_callback(web: str, token: str, receiver_url: str) -> int:
    """Create, answer, register a callback and submit over HTTP; returns the assessment id."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    api = f"{web}/api/v1"
    created = session.post(f"{api}/assessments", json={"question_set": "python-basics"}).json()
    hook = session.post(
        f"{api}/assessments/{created['id']}/webhook", json={"webhook_url": receiver_url}
    )
    assert hook.status_code == 201, hook.text
    submitted = session.post(
        f"{api}/assessments/{created['id']}/submit", json={"responses": full_answers(created)}
    )
    assert submitted.status_code == 202, submitted.text
    return created["id"]


def test_prometheus_sees_counters_and_histograms_move_after_a_submission_and_a_webhook(
    stack, receivers, tokens
):
    web, prometheus, _worker = stack
    receiver = receivers()
    # Scrape access: the same token Prometheus uses; nothing without it.
    assert requests.get(f"{web}/metrics", timeout=5).status_code == 401
    eventually(lambda: total(prometheus, 'sum(up{job=~"scoreline-.*"})') == 2)

    # What one submission moves. The stack is new (its own metrics folder, worker and
    # Prometheus), so the totals after each submission are known: compare them, not a snapshot
    # that a scrape between two webhook attempts could take mid-flight.
    per_submission = {
        SUBMISSIONS: 1,
        SUBMIT_REQUESTS: 1,
        SUBMIT_LATENCY_COUNT: 1,
        STAGES: 3,
        ATTEMPTS: EVENTS_PER_SUBMISSION,
        DELIVERED: 1,
    }
    for submissions in (1, 2):
        submit_with_callback(web, tokens["student"], receiver.url)
        receiver.wait_for(submissions * EVENTS_PER_SUBMISSION)
        totals_become(prometheus, {q: submissions * n for q, n in per_submission.items()})

    # Histograms answer quantile queries over what was scraped, in plausible ranges.
    stage_p90 = total(
        prometheus,
        "histogram_quantile(0.9, sum by (le) "
        '(increase(scoreline_stage_duration_seconds_bucket{job="scoreline-worker"}[5m])))',
    )
    assert 0 < stage_p90 <= 60
    deliver_p50 = total(
        prometheus,
        "histogram_quantile(0.5, sum by (le) "
        "(increase(scoreline_webhook_attempt_duration_seconds_bucket[5m])))",
    )
    assert 0 < deliver_p50 <= 1
    # The deployment's state, from the web; both gunicorn processes' requests are summed.
    assert total(prometheus, 'max(scoreline_workers{state="live"})') >= 1
    assert total(prometheus, 'max(scoreline_dependency_up{dependency="redis"})') == 1
    # The alert rules load and evaluate against the real data: nothing fires on a healthy run.
    rules = requests.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
    assert {r["name"] for g in rules for r in g["rules"]} >= {
        "ScorelineQueueBacklog",
        "ScorelineNoLiveWorker",
        "ScorelineHighErrorRate",
    }
    assert all(r["health"] == "ok" for g in rules for r in g["rules"])
    assert total(prometheus, 'count(ALERTS{alertstate="firing"})') == 0
    # Every panel of the Grafana dashboard is valid PromQL that Prometheus answers.
    dashboard = json.loads((PROJECT_ROOT / "deploy" / "grafana" / "scoreline.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            answer = requests.get(
                f"{prometheus}/api/v1/query", params={"query": target["expr"]}, timeout=10
            )
            assert answer.status_code == 200, (panel["title"], answer.text)
