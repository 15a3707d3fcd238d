"""Nothing stuck: the watchdog re-enqueues work that Redis lost or never got."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import redis
from sqlalchemy import select

from tests.support import Api, bearer, full_answers, submit_through
from webapp import create_app
from webapp.extensions import db
from webapp.models import HistoryEvent, Operation, StageRun
from webapp.models.base import utcnow
from webapp.services.retention import expire_history
from webapp.services.watchdog import reconcile

pytestmark = pytest.mark.db


def test_submit_succeeds_while_redis_is_down_and_completes_once_it_is_back(
    app, db_url, tokens, api, worker
):
    down = create_app(
        {"TESTING": True, "SQLALCHEMY_DATABASE_URI": db_url, "REDIS_URL": "redis://127.0.0.1:1/0"}
    )
    assessment, body = submit_through(down, tokens)
    assert body["operation"]["status"] == "pending"
    assert body["rule_score"]["max_score"] == 6.0
    with app.app_context():
        runs = db.session.scalars(
            select(StageRun).where(StageRun.operation_id == body["operation"]["id"])
        ).all()
        waiting = {r.name for r in runs if r.enqueued_at is None and r.name != "rule_score"}
        assert waiting == {"gpt", "rag", "fusion"}
        # Redis is "back" (the session app's Redis, where the session worker listens).
        report = reconcile(grace=timedelta(0))
    assert [r.stages for r in report.repairs] == [["gpt", "rag", "fusion"]]
    assert "never enqueued" in report.repairs[0].reason
    status = api.wait_finished(assessment["id"])
    assert status["status"] == "completed" and status["overall_progress"] == 100
    history = api.get(f"/assessments/{assessment['id']}/history").json()["history"]
    assert any(e["message"].startswith("Re-enqueued by the watchdog") for e in history)


def test_work_lost_with_redis_data_is_re_enqueued(app, db_url, idle_redis_url, tokens, api, worker):
    lost_url = idle_redis_url
    lossy = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": db_url, "REDIS_URL": lost_url})
    assessment, _ = submit_through(lossy, tokens)
    assert redis.Redis.from_url(lost_url).dbsize() > 0
    redis.Redis.from_url(lost_url).flushdb()  # Redis lost its data before any worker ran it
    with app.app_context():
        report = reconcile(grace=timedelta(0))
        assert "vanished" in report.repairs[0].reason
        # A second pass right away finds nothing more to do: the new jobs are alive.
        assert reconcile(grace=timedelta(0)).repairs == []
    status = api.wait_finished(assessment["id"])
    assert status["status"] == "completed"
    assert status["degraded"] is False


def test_reconcile_leaves_healthy_and_finished_work_alone(app, api, worker):
    assessment = api.start()
    api.post(
        f"/assessments/{assessment['id']}/submit", json={"responses": full_answers(assessment)}
    )
    api.wait_finished(assessment["id"])
    with app.app_context():
        assert reconcile(grace=timedelta(0)).repairs == []


def test_reconcile_with_redis_down_reports_it(db_url):
    down = create_app(
        {"TESTING": True, "SQLALCHEMY_DATABASE_URI": db_url, "REDIS_URL": "redis://127.0.0.1:1/0"}
    )
    with down.app_context():
        report = reconcile(grace=timedelta(0))
    assert report.redis_down is True
    assert "unreachable" in str(report)


def test_work_that_keeps_vanishing_is_given_up_not_looped(
    app, db_url, idle_redis_url, tokens, serve
):
    lost_url = idle_redis_url
    lossy = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": db_url, "REDIS_URL": lost_url})
    api = Api(serve(lossy).url, tokens["student"])
    assessment, body = submit_through(lossy, tokens)
    with lossy.app_context():
        for _ in range(3):  # every job keeps vanishing: each pass re-enqueues it
            redis.Redis.from_url(lost_url).flushdb()
            assert reconcile(grace=timedelta(0)).repairs[0].stages == ["gpt", "rag", "fusion"]
        redis.Redis.from_url(lost_url).flushdb()
        final = reconcile(grace=timedelta(0))
    assert final.repairs[0].stages == []
    status = api.get(f"/assessments/{assessment['id']}/status").json()
    assert status["status"] == "failed" and status["overall_progress"] == 100
    errors = {s["name"]: s["error"] for s in status["stages"] if s["status"] == "failed"}
    assert set(errors) == {"gpt", "rag", "fusion"}
    assert all(e.startswith("Gave up after 3 restarts") for e in errors.values())
    operation = api.get(f"/operations/{body['operation']['id']}").json()
    assert operation["status"] == "failed" and operation["error_message"]


def test_pruning_history_keeps_the_count_of_restarts(app, db_url, idle_redis_url, tokens):
    """The watchdog counts its repairs in the stage run, not in history: history that is
    pruned between passes (age, or the 100-event cap) does not reset the limit."""
    lost_url = idle_redis_url
    lossy = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": db_url, "REDIS_URL": lost_url})
    submit_through(lossy, tokens)
    with lossy.app_context():
        for _ in range(3):
            redis.Redis.from_url(lost_url).flushdb()
            assert reconcile(grace=timedelta(0)).repairs[0].stages == ["gpt", "rag", "fusion"]
            assert expire_history(utcnow() + timedelta(seconds=1)) > 0  # every event goes
        redis.Redis.from_url(lost_url).flushdb()
        final = reconcile(grace=timedelta(0))
    assert final.repairs[0].stages == [], "the count was reset with the history"


def test_a_stalled_question_generation_is_re_enqueued(app, db_url, tokens, api_as, worker):
    down = create_app(
        {"TESTING": True, "SQLALCHEMY_DATABASE_URI": db_url, "REDIS_URL": "redis://127.0.0.1:1/0"}
    )
    created = down.test_client().post(
        "/api/v1/operations",
        json={
            "operation_type": "question_generation",
            "params": {"topic": "recursion", "question_type": "theoretical"},
        },
        headers=bearer(tokens["admin"]),
    )
    assert created.status_code == 202
    operation_id = created.get_json()["id"]
    with app.app_context():
        operation = db.session.get(Operation, operation_id)
        assert operation.status == "pending"
        operation.updated_at = operation.updated_at - timedelta(hours=1)  # silent for an hour
        db.session.commit()
        report = reconcile(grace=timedelta(0))
    assert [r.stages for r in report.repairs] == [["question_generation"]]
    admin = api_as("admin")
    for _ in range(100):
        body = admin.get(f"/operations/{operation_id}").json()
        if body["done"]:
            break
        time.sleep(0.1)
    assert body["status"] == "completed"
    assert body["result"]["topic"] == "recursion"


def test_the_workers_own_watchdog_finishes_work_submitted_while_redis_was_down(
    app, db_url, tokens, worker_factory
):
    down = create_app(
        {"TESTING": True, "SQLALCHEMY_DATABASE_URI": db_url, "REDIS_URL": "redis://127.0.0.1:1/0"}
    )
    assessment, body = submit_through(down, tokens)
    assert body["operation"]["status"] == "pending"
    # Redis is back: a worker starts, and nobody runs `flask reconcile`.
    _, redis_url = worker_factory(WATCHDOG_INTERVAL="1")
    up = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": db_url, "REDIS_URL": redis_url})
    client = up.test_client()
    deadline = time.monotonic() + 40  # the watchdog's grace (10 s) plus the pipeline
    while True:
        status = client.get(
            f"/api/v1/assessments/{assessment['id']}/status", headers=bearer(tokens["student"])
        ).get_json()
        if status["status"] == "completed" or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert status["status"] == "completed", status


def test_a_fusion_left_deferred_after_its_upstream_finished_is_enqueued_again(
    app, db_url, idle_redis_url, tokens
):
    """A worker SIGKILLed after its stage committed but before RQ heard the job finished leaves
    fusion deferred on a job that will never finish: the watchdog enqueues fusion again."""
    from rq.job import Job

    from webapp.services import pipeline

    url = idle_redis_url  # no worker listens here: nothing moves by itself
    redis.Redis.from_url(url).flushdb()
    lossy = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": db_url, "REDIS_URL": url})
    assessment, body = submit_through(lossy, tokens)
    with lossy.app_context():
        runs = {
            run.name: (run.id, run.job_id)
            for run in db.session.scalars(
                select(StageRun).where(StageRun.operation_id == body["operation"]["id"])
            )
        }
        for name in ("gpt", "rag"):
            pipeline.run_stage(*runs[name])  # the stage is written; RQ is never told
        connection = redis.Redis.from_url(url)
        assert Job.fetch(runs["fusion"][1], connection=connection).get_status() == "deferred"

        report = reconcile(grace=timedelta(0))
        assert [r.stages for r in report.repairs] == [["fusion"]]
        assert "never released" in report.repairs[0].reason
        fusion = db.session.get(StageRun, runs["fusion"][0], populate_existing=True)
        assert Job.fetch(fusion.job_id, connection=connection).get_status() == "queued"
        pipeline.run_stage(fusion.id, fusion.job_id)  # what the worker that takes it does
    status = lossy.test_client().get(
        f"/api/v1/assessments/{assessment['id']}/status", headers=bearer(tokens["student"])
    )
    assert status.get_json()["status"] == "completed"


def stalled_operation(db_url: str, url: str, tokens):
    """An app on a Redis no worker listens to, and a submitted assessment's stage runs there."""
    redis.Redis.from_url(url).flushdb()
    lossy = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": db_url, "REDIS_URL": url})
    assessment, body = submit_through(lossy, tokens)
    with lossy.app_context():
        runs = {
            run.name: (run.id, run.job_id)
            for run in db.session.scalars(
                select(StageRun).where(StageRun.operation_id == body["operation"]["id"])
            )
        }
    return lossy, assessment["id"], runs


def history_of(assessment_id: int) -> list[tuple[str, str, str | None]]:
    return [
        (e.entity, e.status, (e.meta or {}).get("stage"))
        for e in db.session.scalars(
            select(HistoryEvent).where(HistoryEvent.assessment_id == assessment_id)
        )
    ]


def test_a_stage_a_newer_job_finished_meanwhile_is_not_started_again(
    app, db_url, idle_redis_url, tokens
):
    """Two jobs of one stage (the watchdog re-enqueued it): the one that read the stage before
    the other finished it must not start it again (or end the operation a second time)."""
    from webapp.services import pipeline, progress

    lossy, assessment_id, runs = stalled_operation(db_url, idle_redis_url, tokens)
    with lossy.app_context():
        stale = db.session.get(StageRun, runs["gpt"][0])  # read while still queued
        with lossy.app_context():  # another worker, another session
            pipeline.run_stage(*runs["gpt"])
        assert progress.start_stage(stale) is False
        db.session.rollback()
        assert db.session.get(StageRun, runs["gpt"][0]).status == "completed"
        assert history_of(assessment_id).count(("stage", "in_progress", "gpt")) == 1


def test_giving_up_on_fusion_just_after_it_finished_changes_nothing(
    app, db_url, idle_redis_url, tokens
):
    """The watchdog gives fusion up in the moment a worker completes it: the operation keeps
    its one ending (completed), and no assessment.failed follows the completion."""
    from webapp.services import pipeline

    lossy, assessment_id, runs = stalled_operation(db_url, idle_redis_url, tokens)
    with lossy.app_context():
        stale = db.session.get(StageRun, runs["fusion"][0])
        assert stale.operation.status != "completed"  # what the watchdog saw
        with lossy.app_context():  # the worker finishing the pipeline meanwhile
            for name in ("gpt", "rag", "fusion"):
                pipeline.run_stage(*runs[name])
        pipeline.give_up(stale, "Gave up after 3 restarts: the worker running it is gone.")
        db.session.rollback()
        assessment_events = [e for e in history_of(assessment_id) if e[0] == "assessment"]
        operation = db.session.scalar(
            select(Operation).where(Operation.assessment_id == assessment_id)
        )
        assert operation.status == "completed"
    assert ("assessment", "failed", None) not in assessment_events
    assert assessment_events.count(("assessment", "completed", None)) == 1


def test_a_job_popped_by_a_worker_that_died_before_starting_it_is_enqueued_again(
    app, db_url, idle_redis_url, tokens
):
    """A worker takes a job off the queue (BLPOP) and is killed before it marks it started: the
    job says "queued" but is on no queue. The watchdog enqueues the stage again."""
    lossy, _, runs = stalled_operation(db_url, idle_redis_url, tokens)
    connection = redis.Redis.from_url(lossy.config["REDIS_URL"])
    assert connection.lrem("rq:queue:scoring", 0, runs["gpt"][1]) == 1  # what BLPOP does
    with lossy.app_context():
        report = reconcile(grace=timedelta(0))
    assert [r.stages for r in report.repairs] == [["gpt", "fusion"]]
    assert "died before starting it" in report.repairs[0].reason
