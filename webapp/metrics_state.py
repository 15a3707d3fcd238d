"""The deployment's state, read at scrape time by the web's `/metrics`: queues, workers, endpoints.

These are facts about the shared Redis and database, not about one process, so they are read
when Prometheus asks (a few Redis round trips and one query) rather than counted. Every web
instance reports the same values: aggregate them with max(), not sum().
"""

from __future__ import annotations

import logging

import redis
from flask import Flask
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from webapp.extensions import db
from webapp.models import WebhookEndpoint
from webapp.queues import get_redis
from webapp.services import queue_status
from webapp.services.llm.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker

log = logging.getLogger(__name__)

# The value of scoreline_llm_breaker_state for each of the breaker's states.
BREAKER_STATES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}


class DeploymentState(Collector):
    """Gauges of queue depth and age, live workers and disabled webhook endpoints."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def collect(self):
        """Read Redis and the database now; a source that is down reports up=0 and no values."""
        up = GaugeMetricFamily(
            "scoreline_dependency_up",
            "Whether the scrape could read this dependency (1) or not (0).",
            labels=["dependency"],
        )
        with self.app.app_context():
            yield from self._queues_and_workers(up)
            yield from self._endpoints(up)
        yield up

    def _queues_and_workers(self, up: GaugeMetricFamily):
        try:
            queues = queue_status.queue_stats()
            workers = queue_status.workers()
        except redis.RedisError as exc:
            log.warning("metrics: Redis unreachable at scrape: %s", exc)
            up.add_metric(["redis"], 0)
            return
        up.add_metric(["redis"], 1)
        jobs = GaugeMetricFamily(
            "scoreline_queue_jobs",
            "Jobs per queue and state (queued, started, scheduled, failed).",
            labels=["queue", "state"],
        )
        age = GaugeMetricFamily(
            "scoreline_queue_oldest_job_age_seconds",
            "Age of the oldest job waiting in the queue (0 when it is empty).",
            labels=["queue"],
        )
        for queue in queues:
            for state in ("queued", "started", "scheduled", "failed"):
                jobs.add_metric([queue.name, state], getattr(queue, state))
            oldest = queue.oldest_age.total_seconds() if queue.oldest_age else 0.0
            age.add_metric([queue.name], oldest)
        live = GaugeMetricFamily(
            "scoreline_workers",
            "Registered RQ workers: live, or dead (busy but silent past the heartbeat deadline).",
            labels=["state"],
        )
        alive = sum(1 for worker in workers if worker.alive)
        live.add_metric(["live"], alive)
        live.add_metric(["dead"], len(workers) - alive)
        yield from (jobs, age, live, self._llm_breaker())

    def _llm_breaker(self) -> GaugeMetricFamily:
        """The fleet's LLM circuit breaker, kept in Redis (webapp.services.llm.breaker)."""
        breaker = GaugeMetricFamily(
            "scoreline_llm_breaker_state",
            "The LLM circuit breaker: 0 closed, 1 half-open, 2 open.",
            labels=["model"],
        )
        state = CircuitBreaker(get_redis()).state()["state"]
        breaker.add_metric([self.app.config["OPENAI_MODEL"]], BREAKER_STATES[state])
        return breaker

    def _endpoints(self, up: GaugeMetricFamily):
        try:
            rows = db.session.execute(
                select(WebhookEndpoint.enabled, func.count()).group_by(WebhookEndpoint.enabled)
            ).all()
        except SQLAlchemyError as exc:
            db.session.rollback()
            log.warning("metrics: database unreachable at scrape: %s", exc)
            up.add_metric(["database"], 0)
            return
        finally:
            db.session.remove()
        up.add_metric(["database"], 1)
        counts = {bool(enabled): count for enabled, count in rows}
        endpoints = GaugeMetricFamily(
            "scoreline_webhook_endpoints",
            "Webhook endpoints by state (enabled or disabled).",
            labels=["state"],
        )
        endpoints.add_metric(["enabled"], counts.get(True, 0))
        endpoints.add_metric(["disabled"], counts.get(False, 0))
        yield endpoints
