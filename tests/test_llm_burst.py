"""Essays scored on an LLM provider by real workers: many calls at once, one limit for the fleet,
first submitted first scored, outages ridden out, and what it cost shown to admins.

The provider is the double in bench/openai_double.py (a real HTTP server); the workers are real
`python -m worker` processes with an OpenAI key, on their own Redis database.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from rq import Queue, Worker
from rq.registry import ScheduledJobRegistry
from sqlalchemy import func, select

from bench.openai_double import OpenAICompatibleServer, ProviderLimits, schema_reply
from tests.support import Api, WorkerProcess, app_on, full_answers, start_worker
from webapp.extensions import db
from webapp.models import LlmCall
from webapp.queues import SCORING_QUEUE, get_redis
from webapp.services.watchdog import reconcile

pytestmark = pytest.mark.db

MODEL = "test-model"


@dataclass
class LlmSite:
    """Workers scoring with `provider`, an app enqueuing on their Redis, and its live server."""

    app: object
    api: Api
    admin: object
    provider: OpenAICompatibleServer
    workers: list[WorkerProcess]

    def submit(self, count: int) -> list[int]:
        """Create and submit `count` fully answered python-basics assessments, in order."""
        ids = []
        for _ in range(count):
            assessment = self.api.start()
            response = self.api.post(
                f"/assessments/{assessment['id']}/submit",
                json={"responses": full_answers(assessment)},
            )
            assert response.status_code == 202, response.text
            ids.append(assessment["id"])
        return ids

    def llm_panel(self) -> str:
        """The admin's LLM provider panel, as htmx loads it into /admin/operations."""
        response = self.admin.get("/admin/operations/llm")
        assert response.status_code == 200
        return response.get_data(as_text=True)


@pytest.fixture()
def llm_site(app, base_dir, db_url, worker_factory, tokens, serve) -> Iterator[Callable]:
    """start(limits, workers=2, **env): real workers scoring essays on the provider double."""
    started: list[WorkerProcess] = []
    providers: list[OpenAICompatibleServer] = []

    def start(limits: ProviderLimits, workers: int = 2, **env: str) -> LlmSite:
        provider = OpenAICompatibleServer(default=schema_reply(), limits=limits)
        providers.append(provider)
        env = {
            "OPENAI_API_KEY": "test-key",
            "OPENAI_BASE_URL": provider.base_url,
            "OPENAI_MODEL": MODEL,
            "OPENAI_TIMEOUT": "5",
            **env,
        }
        first, url = worker_factory(**env)
        more = [start_worker(base_dir, db_url, url, **env) for _ in range(workers - 1)]
        started.extend(more)
        site = app_on(app, url, OPENAI_API_KEY="test-key", OPENAI_MODEL=MODEL)
        admin = site.test_client()
        admin.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {tokens['admin']}"
        api = Api(serve(site).url, tokens["student"])
        return LlmSite(site, api, admin, provider, [first, *more])

    yield start
    for process in started:
        process.stop()
    for provider in providers:
        provider.stop()


def finished(site: LlmSite, ids: list[int], timeout: float = 90) -> list[dict]:
    """Wait for every assessment; returns their final status bodies."""
    return [site.api.wait_finished(i, timeout=timeout) for i in ids]


def gpt_stage(status: dict) -> dict:
    return next(s for s in status["stages"] if s["name"] == "gpt")


def assert_scored_by_the_model(site: LlmSite, statuses: list[dict]) -> None:
    """Completed, not degraded, every essay with the model's rubric."""
    for status in statuses:
        assert status["status"] == "completed" and status["degraded"] is False, status
        result = site.api.get(f"/assessments/{status['assessment_id']}/result").json()
        assert [e["scorer"] for e in result["essays"]] == [f"openai:{MODEL}"] * 2


def test_a_burst_has_many_calls_in_flight_in_two_workers_and_its_cost_is_shown(llm_site):
    site = llm_site(ProviderLimits(median_latency=1.0, latency_sigma=0.05), OPENAI_RPM="6000")

    ids = site.submit(6)
    statuses = finished(site, ids)

    assert_scored_by_the_model(site, statuses)
    # Two worker processes, yet more than two calls at once: the essays of many stages.
    assert site.provider.stats.max_in_flight >= 6, site.provider.stats
    with site.app.app_context():
        calls, prompt = db.session.execute(
            select(func.count(LlmCall.id), func.sum(LlmCall.prompt_tokens)).where(
                LlmCall.assessment_id.in_(ids)
            )
        ).one()
    assert calls == 12 == site.provider.stats.ok
    assert prompt == site.provider.stats.prompt_tokens  # what the provider billed, recorded
    panel = site.llm_panel()
    assert "12 calls" in panel and f"{prompt:,} prompt tokens" in panel
    assert 'data-testid="llm-assessments"' in panel and f"Assessment {ids[0]}<" in panel
    assert 'data-state="closed"' in panel
    page = site.admin.get("/admin/operations").get_data(as_text=True)
    assert 'hx-get="/admin/operations/llm"' in page  # the page loads the panel


def test_two_batches_on_two_workers_stay_under_one_limit_together(llm_site):
    # Both workers gather (two batches), yet together they send at most two calls a second;
    # the provider allows 30% more, for the jitter between a call's turn at the limiter and its
    # arrival (a thread may wait 100-300 ms for the CPU on a loaded machine). Two limits that
    # were not shared would send four a second.
    site = llm_site(
        ProviderLimits(rpm=156, median_latency=0.05, latency_sigma=0.05),
        OPENAI_RPM="120",
        LLM_BATCHES="2",
    )

    statuses = finished(site, site.submit(5))

    assert_scored_by_the_model(site, statuses)
    assert site.provider.stats.rate_limited == 0, str(site.provider.stats.timeline)
    assert site.provider.stats.ok == 10


def test_essays_are_scored_first_submitted_first_and_the_bar_moves_per_essay(llm_site):
    # One call a second (the provider allows 30% more, for the jitter between a call's turn and
    # its arrival on a loaded machine).
    site = llm_site(
        ProviderLimits(rpm=78, median_latency=0.05, latency_sigma=0.05), OPENAI_RPM="60"
    )

    ids = site.submit(4)
    seen = set()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the last one's bar, while it waits its turn
        body = site.api.get(f"/assessments/{ids[-1]}/status").json()
        seen.add(gpt_stage(body)["percentage"])
        if body["status"] == "completed":
            break
        time.sleep(0.1)
    statuses = finished(site, ids)

    assert_scored_by_the_model(site, statuses)
    assert site.provider.stats.rate_limited == 0, str(site.provider.stats.timeline)
    assert 50 in seen, f"the gpt bar should move per essay: {sorted(seen)}"
    done = [gpt_stage(s)["completed_at"] for s in statuses]
    assert done == sorted(done), "first submitted, first scored"


def test_an_outage_pauses_llm_work_and_scoring_resumes_when_the_provider_is_back(llm_site):
    site = llm_site(
        ProviderLimits(outages=[(0, 8)], median_latency=0.05),
        workers=1,
        OPENAI_MAX_RETRIES="1",  # fewer than the outage takes: waiting must not spend them
        LLM_BREAKER_FAILURES="2",
        LLM_BREAKER_COOLDOWN="2",
    )
    site.provider.start_clock()

    ids = site.submit(1)
    deadline = time.monotonic() + 8
    paused = None
    while time.monotonic() < deadline and paused is None:
        panel = site.llm_panel()
        with site.app.app_context():
            connection = get_redis()
            scheduled = ScheduledJobRegistry(queue=Queue(SCORING_QUEUE, connection=connection))
            # Paused means: no worker busy (sleeping through it), the work scheduled to resume.
            idle = all(w.get_state() == "idle" for w in Worker.all(connection=connection))
            if 'data-state="open"' in panel and scheduled.count and idle:
                paused = panel
        time.sleep(0.2)
    assert paused is not None, "never seen: breaker open, workers idle, the work scheduled"
    assert "LLM work is paused" in paused and "HTTP 503" in paused
    assert 'data-testid="llm-waiting" class="wh-bad">1<' in paused
    with site.app.app_context():
        watchdog = reconcile(grace=timedelta(0))
    # gpt waits for the provider and fusion for gpt (the batch enqueues it): nothing is lost.
    assert watchdog.repairs == [], watchdog

    statuses = finished(site, ids, timeout=60)

    assert_scored_by_the_model(site, statuses)
    assert 'data-state="closed"' in site.llm_panel()
    # One probe per cooldown while down, not a stream of retries.
    assert site.provider.stats.errors <= 10, site.provider.stats
