"""The admin operations overview: assessments with filters, queues, live workers, failed jobs
with requeue, watchdog repairs and the throughput charts."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

import pytest
import redis
from rq import Worker
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry
from sqlalchemy import select

from tests.support import (
    ADMIN,
    STUDENT,
    Api,
    add_assessment,
    csrf_token,
    failing_remove,
    flashes,
    full_answers,
    log_in,
    submit_through,
    wait_for,
)
from webapp import create_app
from webapp.extensions import db
from webapp.models import (
    Attempt,
    AttemptTrigger,
    AuditEntry,
    Delivery,
    Operation,
    QuestionSet,
    WebhookEndpoint,
    WebhookEvent,
)
from webapp.models.base import utcnow
from webapp.queues import get_queue
from webapp.scoring.vocabulary import AssessmentStatus, EventType, Stage
from webapp.services import progress
from webapp.services.pipeline import STAGE_JOB
from webapp.services.watchdog import reconcile

pytestmark = pytest.mark.db

ROW = re.compile(r'data-testid="assessment-row" data-assessment-id="(\d+)"')


@pytest.fixture()
def admin(app):
    client = app.test_client()
    log_in(client, ADMIN)
    return client


def ids_shown(response) -> set[int]:
    assert response.status_code == 200
    return {int(found) for found in ROW.findall(response.get_data(as_text=True))}


def question_set_id(app, slug: str) -> int:
    with app.app_context():
        return db.session.scalar(select(QuestionSet.id).where(QuestionSet.slug == slug))


# --- access ----------------------------------------------------------------------------------


def test_admins_see_the_page_students_are_refused(app, admin):
    response = admin.get("/admin/operations")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    for heading in ("Queues and workers", "Failed jobs", "Watchdog repairs", "Assessments"):
        assert heading in html
    assert 'href="/admin/operations" aria-current="page">Operations<' in html
    student = app.test_client()
    log_in(student, STUDENT)
    assert student.get("/admin/operations").status_code == 403
    assert student.get("/admin/operations/live").status_code == 403
    assert app.test_client().get("/admin/operations").status_code == 302


# --- assessments and filters -----------------------------------------------------------------


@pytest.fixture()
def seeded(app) -> dict[str, int]:
    now = utcnow()
    other_set = "python-basics"
    with app.app_context():
        slugs = list(db.session.scalars(select(QuestionSet.slug).order_by(QuestionSet.id)))
    other_set = next((slug for slug in slugs if slug != "python-basics"), other_set)
    return {
        "draft": add_assessment(app, AssessmentStatus.DRAFT, created_at=now - timedelta(days=3)),
        "scored": add_assessment(
            app, AssessmentStatus.COMPLETED, created_at=now - timedelta(days=1), completed_at=now
        ),
        "degraded": add_assessment(
            app, AssessmentStatus.COMPLETED, degraded=True, created_at=now, completed_at=now
        ),
        "failed": add_assessment(
            app, AssessmentStatus.FAILED, slug=other_set, created_at=now, completed_at=now
        ),
    }


def test_every_assessment_is_listed_newest_first_with_links_to_progress(admin, seeded):
    response = admin.get("/admin/operations")
    assert ids_shown(response) == set(seeded.values())
    html = response.get_data(as_text=True)
    assert f'href="/assessments/{seeded["scored"]}/progress"' in html
    assert f'href="/assessments/{seeded["draft"]}/progress"' not in html  # drafts have none


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("status=completed", {"scored", "degraded"}),
        ("status=draft", {"draft"}),
        ("degraded=yes", {"degraded"}),
        ("degraded=no", {"draft", "scored", "failed"}),
        ("status=completed&degraded=no", {"scored"}),
        ("created_from={today}", {"degraded", "failed"}),
        ("created_to={yesterday}", {"draft", "scored"}),
        ("created_from={yesterday}&created_to={yesterday}", {"scored"}),
    ],
)
def test_filters_narrow_the_assessments(admin, seeded, query, expected):
    today = utcnow().date()
    query = query.format(today=today, yesterday=today - timedelta(days=1))
    response = admin.get(f"/admin/operations?{query}")
    assert ids_shown(response) == {seeded[name] for name in expected}
    assert flashes(response) == []


def test_question_set_filter(app, admin, seeded):
    set_id = question_set_id(app, "python-basics")
    shown = ids_shown(admin.get(f"/admin/operations?question_set={set_id}"))
    assert seeded["scored"] in shown and seeded["draft"] in shown


@pytest.mark.parametrize(
    ("query", "flash"),
    [
        ("status=bogus", "Unknown status"),
        ("degraded=maybe", "Partial report must be yes or no"),
        ("question_set=abc", "No such question set"),
        ("question_set=999999", "No such question set"),
        ("created_from=yesterday", "is not a date"),
        ("created_to=2025-02-31", "is not a date"),
        ("created_from=2025-05-02&created_to=2025-05-01", "after the To date"),
        ("status=%00%ff&degraded=%3Cscript%3E", "Unknown status"),
    ],
)
def test_bad_filters_are_flashed_and_ignored(admin, seeded, query, flash):
    response = admin.get(f"/admin/operations?{query}")
    assert ids_shown(response) == set(seeded.values())
    assert any(flash in message for message in flashes(response))
    assert "<script>" not in response.get_data(as_text=True)


# --- queues and workers ----------------------------------------------------------------------


def test_the_session_worker_is_shown_alive_with_every_queue(app, admin, worker, redis_url):
    connection = redis.Redis.from_url(redis_url)
    name = next(w.name for w in Worker.all(connection=connection) if w.pid == worker.process.pid)
    response = admin.get("/admin/operations/live")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    entry = re.search(rf'data-testid="worker-name">{name}</span>\s*<span[^>]*>(\w+)<', html)
    assert entry and entry.group(1) == "Alive"
    for queue in ("scoring", "webhooks", "default"):
        assert f'data-testid="queue-{queue}-queued"' in html
    assert 'hx-trigger="every 5s"' in html
    # The full page includes the same panel.
    assert name in admin.get("/admin/operations").get_data(as_text=True)


def test_queues_show_length_oldest_age_and_scheduled_jobs(app, db_url, idle_redis_url):
    # An app on a Redis database no worker listens on: what is enqueued stays there.
    idle_url = idle_redis_url
    redis.Redis.from_url(idle_url).flushdb()
    site = create_app(
        {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": db_url,
            "REDIS_URL": idle_url,
            "SECRET_KEY": app.config["SECRET_KEY"],
        }
    )
    with site.app_context():
        first = get_queue("scoring").enqueue("builtins.len", "abc")
        first.enqueued_at = datetime.now(UTC) - timedelta(minutes=3)
        first.save()
        get_queue("scoring").enqueue("builtins.len", "abcd")
        get_queue("default").enqueue_in(timedelta(hours=1), "builtins.len", "abc")
    client = site.test_client()
    log_in(client, ADMIN)
    html = client.get("/admin/operations/live").get_data(as_text=True)
    shown = dict(re.findall(r'data-testid="queue-(\w+-\w+)">([^<]+)<', html))
    assert shown["scoring-queued"] == "2"
    assert shown["scoring-oldest"] == "3 min"
    assert shown["webhooks-queued"] == "0" and shown["webhooks-oldest"] == "none"
    assert shown["default-scheduled"] == "1"
    assert 'data-testid="no-workers"' in html
    redis.Redis.from_url(idle_url).flushdb()


# --- failed jobs -----------------------------------------------------------------------------


def test_a_failed_job_is_listed_and_requeue_runs_it_again(app, admin, worker, tmp_path):
    path = tmp_path / "needed"
    job = failing_remove(app, path)
    html = admin.get("/admin/operations").get_data(as_text=True)
    item = re.search(
        rf'data-testid="failed-job" data-job-id="{job.id}">(.*?)</li>', html, re.DOTALL
    )
    assert item, "the failed job is listed"
    assert "os.remove(" in item.group(1)
    assert "FileNotFoundError" in item.group(1)
    assert 'data-testid="failed-job-traceback"' in item.group(1) and "Traceback" in item.group(1)

    path.write_text("now it exists")
    response = admin.post(
        f"/admin/operations/queues/default/jobs/{job.id}/requeue",
        data={"csrf_token": csrf_token(admin, "/admin/operations")},
    )
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/admin/operations#failed-jobs")
    with app.app_context():
        registry = FailedJobRegistry(queue=get_queue("default"))
        assert job.id not in registry.get_job_ids()
        wait_for(
            lambda: job.get_status(refresh=True) == JobStatus.FINISHED,
            20,
            "the requeued job to finish",
        )
    assert not path.exists()  # it really ran again, and this time succeeded
    follow = admin.get("/admin/operations")
    assert f"Job {job.id} is back on the default queue." in flashes(follow)
    assert f'data-job-id="{job.id}"' not in follow.get_data(as_text=True)
    with app.app_context():
        entry = db.session.scalar(select(AuditEntry).where(AuditEntry.entity_id == job.id))
    assert entry.action == "job.requeued" and entry.actor_email == ADMIN[0]


def test_requeue_all_puts_every_failed_job_of_a_queue_back(app, admin, worker, tmp_path):
    paths = [tmp_path / "one", tmp_path / "two"]
    jobs = [failing_remove(app, path) for path in paths]
    html = admin.get("/admin/operations").get_data(as_text=True)
    assert 'data-testid="requeue-all-default"' in html
    for path in paths:
        path.write_text("here")
    response = admin.post(
        "/admin/operations/queues/default/requeue-failed",
        data={"csrf_token": csrf_token(admin, "/admin/operations")},
    )
    assert response.status_code == 302
    with app.app_context():
        for job in jobs:
            wait_for(
                lambda job=job: job.get_status(refresh=True) == JobStatus.FINISHED,
                20,
                "the requeued job to finish",
            )
    assert not any(path.exists() for path in paths)


def test_score_again_on_a_failed_stage_job_heals_its_assessment(app, tokens, worker, serve, admin):
    """Requeueing the failed gpt job as it was would run nothing (the stage is already failed);
    the list offers "Score again", which runs every stage and the report anew.

    A provider outage no longer fails the gpt stage (it waits, then scores offline), so the
    failure here is what a crash leaves: the stage failed in words and its job in RQ's failed
    registry with a traceback.
    """
    student = app.test_client()
    headers = {"Authorization": f"Bearer {tokens['student']}"}
    assessment = student.post(
        "/api/v1/assessments", json={"question_set": "python-basics"}, headers=headers
    ).get_json()
    student.post(
        f"/api/v1/assessments/{assessment['id']}/submit",
        json={"responses": full_answers(assessment)},
        headers=headers,
    )
    api = Api(serve(app).url, tokens["admin"])
    api.wait_finished(assessment["id"])
    with app.app_context():
        operation = db.session.scalar(
            select(Operation).where(Operation.assessment_id == assessment["id"])
        )
        run = next(r for r in operation.stage_runs if r.name == Stage.GPT)
        progress.fail_stage(run, "Unexpected error in the gpt stage: RuntimeError: boom")
        db.session.commit()
        queue = get_queue("scoring")
        crashed = Job.create(STAGE_JOB, args=(run.id,), id=run.job_id, connection=queue.connection,
                             origin=queue.name)  # fmt: skip
        crashed.save()
        FailedJobRegistry(queue=queue).add(crashed, exc_string="Traceback ...\nRuntimeError: boom")
        job_id = crashed.id
    first = api.wait_finished(assessment["id"])
    assert next(s for s in first["stages"] if s["name"] == "gpt")["status"] == "failed"

    html = admin.get("/admin/operations").get_data(as_text=True)
    item = re.search(rf'data-job-id="{job_id}">(.*?)</li>', html, re.DOTALL).group(1)
    assert f"assessment #{assessment['id']}" in item and "Score again" in item

    response = admin.post(
        f"/admin/operations/queues/scoring/jobs/{job_id}/requeue",
        data={"csrf_token": csrf_token(admin, "/admin/operations")},
    )
    assert response.headers["Location"].endswith(f"/assessments/{assessment['id']}/progress")
    time.sleep(0.5)
    healed = api.wait_finished(assessment["id"])
    assert healed["operation_id"] != first["operation_id"]
    assert {s["name"]: s["status"] for s in healed["stages"]}["gpt"] == "completed"
    assert healed["status"] == "completed" and healed["degraded"] is False
    with app.app_context():
        assert job_id not in FailedJobRegistry(queue=get_queue("scoring")).get_job_ids()


def test_clearing_failed_jobs_deletes_them_and_is_audited(app, admin, worker, tmp_path):
    jobs = [failing_remove(app, tmp_path / name) for name in ("a", "b", "c")]
    token = csrf_token(admin, "/admin/operations")
    html = admin.get("/admin/operations").get_data(as_text=True)
    assert 'data-confirm="Clear job' in html and 'data-testid="clear-all-default"' in html
    admin.post(
        f"/admin/operations/queues/default/jobs/{jobs[0].id}/clear", data={"csrf_token": token}
    )
    with app.app_context():
        left = FailedJobRegistry(queue=get_queue("default")).get_job_ids()
    assert jobs[0].id not in left and jobs[1].id in left
    response = admin.post(
        "/admin/operations/queues/default/clear-failed",
        data={"csrf_token": token},
        follow_redirects=True,
    )
    # Earlier tests of the session may have left failed jobs on the queue too: all go.
    assert f"{len(left)} failed jobs cleared from the default queue." in flashes(response)
    with app.app_context():
        assert FailedJobRegistry(queue=get_queue("default")).get_job_ids() == []
        assert not Job.exists(jobs[1].id, connection=get_queue("default").connection)
        actions = db.session.scalars(
            select(AuditEntry.action).where(AuditEntry.action == "job.cleared")
        ).all()
    assert len(actions) == 2


def test_requeue_needs_csrf_and_a_known_queue(admin):
    assert admin.post("/admin/operations/queues/default/jobs/x/requeue").status_code == 400
    token = csrf_token(admin, "/admin/operations")
    response = admin.post(
        "/admin/operations/queues/nope/requeue-failed",
        data={"csrf_token": token},
        follow_redirects=True,
    )
    assert "There is no queue named “nope”." in flashes(response)
    response = admin.post(
        "/admin/operations/queues/default/jobs/no-such-job/requeue",
        data={"csrf_token": token},
        follow_redirects=True,
    )
    assert any("no longer in the failed list" in message for message in flashes(response))


# --- watchdog repairs ------------------------------------------------------------------------


def test_a_watchdog_repair_is_listed_with_its_assessment(
    app, admin, db_url, idle_redis_url, tokens, api, worker
):
    lost_url = idle_redis_url
    lossy = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": db_url, "REDIS_URL": lost_url})
    assessment, _ = submit_through(lossy, tokens)
    redis.Redis.from_url(lost_url).flushdb()  # Redis lost the jobs before any worker ran them
    with app.app_context():
        assert reconcile(grace=timedelta(0)).repairs
    api.wait_finished(assessment["id"])
    html = admin.get("/admin/operations").get_data(as_text=True)
    repairs = re.search(r'data-testid="repairs">(.*?)</ul>', html, re.DOTALL).group(1)
    assert "Re-enqueued by the watchdog: its job vanished from Redis." in repairs
    assert f'href="/assessments/{assessment["id"]}/progress"' in repairs


# --- charts ----------------------------------------------------------------------------------


def chart_numbers(html: str, chart: str) -> dict[str, dict[str, int]]:
    """The hidden table behind a chart: hour label -> series -> count."""
    table = re.search(rf'data-testid="chart-{chart}-numbers">(.*?)</table>', html, re.DOTALL).group(
        1
    )
    return {
        hour: {name: int(value) for name, value in re.findall(r'data-series="(\w+)">(\d+)<', row)}
        for hour, row in re.findall(r'<tr data-hour="([^"]+)">(.*?)</tr>', table, re.DOTALL)
    }


def hour_label(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%H:00")


def test_scoring_chart_counts_finished_assessments_per_hour(app, admin):
    hour = utcnow().replace(minute=0, second=0, microsecond=0)
    for at, status in [
        (hour + timedelta(seconds=1), AssessmentStatus.COMPLETED),
        (hour + timedelta(seconds=2), AssessmentStatus.COMPLETED),
        (hour - timedelta(hours=2) + timedelta(minutes=5), AssessmentStatus.COMPLETED),
        (hour - timedelta(hours=2) + timedelta(minutes=6), AssessmentStatus.FAILED),
        (hour - timedelta(hours=20), AssessmentStatus.COMPLETED),  # outside the window
    ]:
        add_assessment(app, status, completed_at=at, created_at=at)
    html = admin.get("/admin/operations").get_data(as_text=True)
    numbers = chart_numbers(html, "scoring")
    assert len(numbers) == 12
    assert numbers[hour_label(hour)] == {"completed": 2, "failed": 0}
    assert numbers[hour_label(hour - timedelta(hours=2))] == {"completed": 1, "failed": 1}
    assert sum(n["completed"] + n["failed"] for n in numbers.values()) == 4
    figure = re.search(r'data-testid="chart-scoring">(.*?)</figure>', html, re.DOTALL).group(1)
    assert '<svg viewBox="0 0 600 240" role="img"' in figure
    assert "<title " in figure and "in total scored 3, failed 1." in figure


def test_delivery_chart_counts_attempts_by_outcome(app, admin):
    hour = utcnow().replace(minute=0, second=0, microsecond=0)
    with app.app_context():
        event = WebhookEvent(webhook_id="msg_ops_chart", type=EventType.WEBHOOK_TEST, body=b"{}")
        db.session.add(event)
        db.session.flush()
        endpoint = WebhookEndpoint(url="https://hooks.example.invalid/")
        db.session.add(endpoint)
        db.session.flush()
        delivery = Delivery(event_id=event.id, endpoint_id=endpoint.id)
        db.session.add(delivery)
        db.session.flush()
        for number, (status, error, at) in enumerate(
            [
                (200, None, hour + timedelta(seconds=1)),
                (500, None, hour + timedelta(seconds=2)),
                (None, "timeout", hour - timedelta(hours=1) + timedelta(minutes=1)),
                (204, None, hour - timedelta(hours=1) + timedelta(minutes=2)),
            ],
            start=1,
        ):
            db.session.add(
                Attempt(
                    delivery_id=delivery.id,
                    number=number,
                    trigger=AttemptTrigger.SCHEDULED,
                    started_at=at,
                    duration_ms=5,
                    url="https://hooks.example.invalid/",
                    response_status=status,
                    error=error,
                )
            )
        db.session.commit()
    numbers = chart_numbers(admin.get("/admin/operations").get_data(as_text=True), "deliveries")
    assert numbers[hour_label(hour)] == {"succeeded": 1, "failed": 1}
    assert numbers[hour_label(hour - timedelta(hours=1))] == {"succeeded": 1, "failed": 1}
