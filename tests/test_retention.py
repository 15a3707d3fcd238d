"""Retention (SPEC 7): `flask prune` and the worker's scheduled prune."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import redis
from rq.cron import CronScheduler
from sqlalchemy import func, select, update

from webapp.extensions import db
from webapp.models import Assessment, Entity, HistoryEvent, IdempotencyKey, SignInLink
from webapp.models.base import utcnow
from webapp.services.history import PER_ASSESSMENT_CAP

pytestmark = pytest.mark.db


def add_events(app, assessment_id: int | None, count: int, *, age: timedelta = timedelta()):
    """Write `count` history events for an assessment, `age` old."""
    with app.app_context():
        stamp = utcnow() - age
        db.session.add_all(
            HistoryEvent(
                assessment_id=assessment_id,
                entity=Entity.ASSESSMENT,
                entity_id=assessment_id,
                status="processing",
                progress=0,
                message=f"event {n}",
                meta={"n": n},
                created_at=stamp,
            )
            for n in range(count)
        )
        db.session.commit()


def count_events(app, assessment_id: int | None = None) -> int:
    with app.app_context():
        query = select(func.count()).select_from(HistoryEvent)
        if assessment_id is not None:
            query = query.where(HistoryEvent.assessment_id == assessment_id)
        return db.session.scalar(query)


def count_keys(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(IdempotencyKey))


def test_prune_keeps_the_newest_100_events_per_assessment(app, api, runner):
    crowded, quiet = api.start(), api.start()
    add_events(app, crowded["id"], PER_ASSESSMENT_CAP + 30)
    add_events(app, quiet["id"], 5)

    result = runner.invoke(args=["prune"])

    assert result.exit_code == 0, result.output
    assert "per assessment: 30;" in result.output
    assert count_events(app, crowded["id"]) == PER_ASSESSMENT_CAP
    assert count_events(app, quiet["id"]) == 5
    history = api.get(f"/assessments/{crowded['id']}/history").json()["history"]
    assert history[0]["message"] == f"event {PER_ASSESSMENT_CAP + 29}"  # newest kept
    assert history[-1]["message"] == "event 30"  # the 30 oldest went


def test_prune_removes_events_older_than_the_retention_window(app, api, runner):
    assessment = api.start()
    retention = timedelta(seconds=app.config["HISTORY_RETENTION"])
    add_events(app, assessment["id"], 3, age=retention + timedelta(minutes=1))
    add_events(app, None, 2, age=retention + timedelta(minutes=1))
    add_events(app, assessment["id"], 4, age=retention - timedelta(minutes=1))

    result = runner.invoke(args=["prune"])

    assert result.exit_code == 0, result.output
    assert "older than the retention window: 5;" in result.output
    assert count_events(app) == 4


def test_prune_removes_expired_idempotency_keys_only(app, api, runner):
    api.post(
        "/assessments", json={"question_set": "python-basics"}, headers={"Idempotency-Key": "old"}
    )
    api.post(
        "/assessments", json={"question_set": "python-basics"}, headers={"Idempotency-Key": "new"}
    )
    with app.app_context():
        db.session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.key == "old")
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        db.session.commit()

    result = runner.invoke(args=["prune"])

    assert result.exit_code == 0, result.output
    assert "expired idempotency keys: 1" in result.output
    assert count_keys(app) == 1


def test_the_worker_prunes_on_its_cron_schedule(app, api, worker_factory):
    assessment = api.start()
    _worker, redis_url = worker_factory(PRUNE_INTERVAL="1")
    connection = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + 10
    while not (schedulers := CronScheduler.all(connection=connection)):
        assert time.monotonic() < deadline, "the worker registered no cron scheduler"
        time.sleep(0.1)
    # Test workers run no watchdog unless asked (tests.support.process_env): the prune alone.
    assert [job.func_name for s in schedulers for job in s.get_jobs()] == [
        "worker.jobs.scheduled_prune"
    ]
    # Written after the worker started: only a later, scheduled run can remove them.
    add_events(app, assessment["id"], PER_ASSESSMENT_CAP + 7)
    deadline = time.monotonic() + 30
    while count_events(app, assessment["id"]) > PER_ASSESSMENT_CAP:
        assert time.monotonic() < deadline, "the scheduled prune did not run"
        time.sleep(0.2)
    assert count_events(app, assessment["id"]) == PER_ASSESSMENT_CAP


def test_prune_removes_sign_in_links_a_day_after_they_expired(app, api, runner):
    assessment = api.start()
    now = utcnow()
    with app.app_context():
        owner = db.session.get(Assessment, assessment["id"]).user_id
        for expired_ago in (timedelta(days=2), timedelta(hours=23), timedelta(minutes=-5)):
            db.session.add(
                SignInLink(
                    student_id=owner,
                    assessment_id=assessment["id"],
                    issued_by_id=owner,
                    expires_at=now - expired_ago,
                )
            )
        db.session.commit()

    result = runner.invoke(args=["prune"])

    assert result.exit_code == 0, result.output
    assert "sign-in links expired over a day ago: 1" in result.output
    with app.app_context():
        left = db.session.scalars(select(SignInLink.expires_at)).all()
        db.session.remove()
    assert sorted(left) == [now - timedelta(hours=23), now + timedelta(minutes=5)]
