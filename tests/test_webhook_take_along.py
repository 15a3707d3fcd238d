"""A delivery job takes along the delivery jobs queued behind it (relay.take_queued), so a burst
of events is sent and recorded by a few jobs; what a slow target keeps waiting goes back on the
queue in the jobs it came from, no attempt counted."""

from __future__ import annotations

import pytest
import redis
from rq import Queue
from rq.job import Job
from sqlalchemy import select

from tests.support import WEBHOOK_TEST_ENV, add_endpoint, app_on, webhook_config
from tests.webhook_receiver import Answer
from webapp.extensions import db
from webapp.models import Delivery, DeliveryStatus
from webapp.queues import WEBHOOKS_QUEUE
from webapp.scoring.vocabulary import EventType
from webapp.services.webhooks import delivery, events, relay

pytestmark = pytest.mark.db


@pytest.fixture()
def quiet_site(app, idle_redis_url, tokens):
    """The app on the Redis database no worker listens on: queued delivery jobs stay queued
    until the test runs one itself."""
    redis.Redis.from_url(idle_redis_url).flushdb()
    site = app_on(app, idle_redis_url, **webhook_config(WEBHOOK_TEST_ENV))
    admin = site.test_client()
    admin.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {tokens['admin']}"
    yield site, admin
    redis.Redis.from_url(idle_redis_url).flushdb()


def queued_jobs(site) -> list[Job]:
    with site.app_context():
        queue = Queue(WEBHOOKS_QUEUE, connection=redis.Redis.from_url(site.config["REDIS_URL"]))
        return [Job.fetch(i, connection=queue.connection) for i in queue.get_job_ids()]


def write_events(site, count: int) -> None:
    """`count` events, each in a transaction of its own (so each its own delivery job)."""
    with site.app_context():
        for n in range(count):
            events.write(EventType.WEBHOOK_TEST, {"n": n})
            db.session.commit()
        db.session.remove()


def run_first_queued_job(site) -> str:
    """Do what a worker does with the job at the front of the queue: pop it, run it."""
    with site.app_context():
        queue = Queue(WEBHOOKS_QUEUE, connection=redis.Redis.from_url(site.config["REDIS_URL"]))
        job = Job.fetch(queue.pop_job_id(), connection=queue.connection)
        ids = job.args[0] if isinstance(job.args[0], list) else [job.args[0]]
        delivery.attempt_all(ids, job.id)
        db.session.remove()
        return job.id


def test_a_job_takes_the_queued_jobs_behind_it_along(quiet_site, receivers):
    site, admin = quiet_site
    first, second = receivers(), receivers()
    add_endpoint(admin, first.url)
    add_endpoint(admin, second.url)
    write_events(site, 30)
    assert len(queued_jobs(site)) == 30

    run_first_queued_job(site)

    # The job sent its own two deliveries and those of the TAKE_ALONG jobs behind it, each
    # once; the jobs it took are gone, the rest still wait.
    sent = 1 + relay.TAKE_ALONG
    assert len(first.received) == len(second.received) == sent
    assert len(queued_jobs(site)) == 30 - sent
    with site.app_context():
        rows = db.session.scalars(select(Delivery).order_by(Delivery.id)).all()
        done = [d for d in rows if d.status == DeliveryStatus.SUCCEEDED]
        assert len(done) == 2 * sent and all(d.attempt_count == 1 for d in done)
        waiting = [d for d in rows if d.status != DeliveryStatus.SUCCEEDED]
        assert {d.job_id for d in waiting} == {j.id for j in queued_jobs(site)}
        db.session.remove()


def test_what_a_slow_target_keeps_waiting_goes_back_in_its_own_jobs(quiet_site, receivers):
    site, admin = quiet_site
    hanging = receivers(default=Answer(200, delay=3))  # past the 1 s WEBHOOK_TIMEOUT
    healthy = receivers()
    add_endpoint(admin, hanging.url)
    add_endpoint(admin, healthy.url)
    write_events(site, 5)
    jobs_before = {j.id for j in queued_jobs(site)}

    ran = run_first_queued_job(site)

    # The healthy endpoint got every event; the hanging one only the running job's own
    # delivery (it timed out after 1 s); its other four went back, each in the job it came
    # from, with no attempt counted.
    assert len(healthy.received) == 5
    assert len(hanging.received) == 1
    back = {j.id for j in queued_jobs(site)}
    assert back == jobs_before - {ran}
    with site.app_context():
        url = hanging.url
        rows = db.session.scalars(select(Delivery).order_by(Delivery.id)).all()
        slow = [d for d in rows if d.endpoint.url == url]
        assert [d.attempt_count for d in slow] == [1, 0, 0, 0, 0]
        assert {d.job_id for d in slow[1:]} == back
        db.session.remove()
