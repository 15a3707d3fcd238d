"""The poll cache: status polls and progress partials from memory, never stale, owner only."""

from __future__ import annotations

import pytest
from sqlalchemy import event, select

from tests.support import (
    ADMIN,
    OTHER_STUDENT,
    STUDENT,
    bearer,
    eventually,
    get_noting_flask,
    live_near_cache,
    log_in,
    sibling_app,
)
from webapp.extensions import db
from webapp.fast_polls import LEASE_SHARE
from webapp.models import ApiToken, Assessment, StageRun, User
from webapp.near_cache import Entry, near_cache
from webapp.scoring.vocabulary import AssessmentStatus, Stage
from webapp.services import poll_changes, progress
from webapp.services.accounts import revoke_token

pytestmark = pytest.mark.db


class Statements:
    """Counts the SQL statements the app's engine runs while active."""

    def __init__(self, app) -> None:
        with app.app_context():
            self.engine = db.engine
        self.seen: list[str] = []

    def __enter__(self):
        event.listen(self.engine, "before_cursor_execute", self._record)
        return self.seen

    def __exit__(self, *exc):
        event.remove(self.engine, "before_cursor_execute", self._record)

    def _record(self, _conn, _cursor, statement, *args):
        self.seen.append(statement)


def gpt_run(app, assessment_id: int) -> int:
    with app.app_context():
        operation = progress.latest_operation(assessment_id)
        return next(r.id for r in operation.stage_runs if r.name == Stage.GPT)


def advance(app, run_id: int, percentage: int) -> None:
    """What a worker does mid-stage, in another session (as another process would)."""
    with app.app_context():
        progress.record_progress(db.session.get(StageRun, run_id), percentage)


def test_a_repeated_status_poll_runs_no_sql(app, client, tokens, in_progress):
    live_near_cache(app)
    url = f"/api/v1/assessments/{in_progress}/status"
    first = client.get(url, headers=bearer(tokens["student"]))
    with Statements(app) as statements:
        again = client.get(url, headers=bearer(tokens["student"]))
    assert again.status_code == 200
    assert statements == []
    assert again.get_json() == first.get_json()
    assert again.headers["ETag"] == first.headers["ETag"]
    assert again.headers["Retry-After"] == "2"
    assert again.headers["Cache-Control"] == "private, no-cache"
    assert again.mimetype == "application/json"


def test_a_cached_poll_still_answers_304_to_its_etag(app, client, tokens, in_progress):
    live_near_cache(app)
    url = f"/api/v1/assessments/{in_progress}/status"
    etag = client.get(url, headers=bearer(tokens["student"])).headers["ETag"]
    with Statements(app) as statements:
        cached = client.get(url, headers={**bearer(tokens["student"]), "If-None-Match": etag})
    assert cached.status_code == 304 and statements == []
    assert cached.headers["ETag"] == etag


def test_a_change_shows_in_the_very_next_poll(app, client, tokens, in_progress):
    live_near_cache(app)
    url = f"/api/v1/assessments/{in_progress}/status"
    run_id = gpt_run(app, in_progress)
    for percentage in (60, 70, 80):
        client.get(url, headers=bearer(tokens["student"]))  # cached at the old value
        advance(app, run_id, percentage)
        body = client.get(url, headers=bearer(tokens["student"])).get_json()
        gpt = next(s for s in body["stages"] if s["name"] == "gpt")
        assert gpt["percentage"] == percentage


def test_a_bulk_update_also_invalidates(app, client, tokens, in_progress):
    """Submit and rescore flip the status with one UPDATE the ORM doesn't track."""
    near = live_near_cache(app)
    url = f"/api/v1/assessments/{in_progress}/status"
    client.get(url, headers=bearer(tokens["student"]))
    assert near.get(("a", str(in_progress)), "status") is not None
    with app.app_context():
        poll_changes.touch(db.session(), in_progress)
        db.session.commit()
    assert near.get(("a", str(in_progress)), "status") is None


def test_someone_elses_token_is_refused_even_with_an_entry(app, client, tokens, in_progress):
    url = f"/api/v1/assessments/{in_progress}/status"
    assert client.get(url, headers=bearer(tokens["student"])).status_code == 200
    refused = client.get(url, headers=bearer(tokens["other"]))
    assert refused.status_code in (403, 404)
    # An admin may look (through the database path) and sees the same thing.
    assert client.get(url, headers=bearer(tokens["admin"])).status_code == 200


def test_a_revoked_token_stops_working_at_once(app, client, in_progress):
    with app.app_context():
        user = db.session.scalar(select(User).where(User.email == STUDENT[0]))
        row, plain = ApiToken.issue(user, name="to-revoke")
        db.session.add(row)
        db.session.commit()
        token_id, user_id = row.id, user.id
    url = f"/api/v1/assessments/{in_progress}/status"
    assert client.get(url, headers=bearer(plain)).status_code == 200
    assert client.get(url, headers=bearer(plain)).status_code == 200  # from the cache
    with app.app_context():
        revoke_token(db.session.get(User, user_id), token_id)
    assert client.get(url, headers=bearer(plain)).status_code == 401


def test_cached_polls_count_against_the_poll_limit(app, tokens, in_progress):
    limited = sibling_app(app, RATELIMIT_KEY_PREFIX="test-poll-cache", RATE_LIMIT_POLL="4/minute")
    live_near_cache(limited)
    with limited.app_context():
        from webapp.queues import get_redis

        for key in get_redis().scan_iter("LIMITS:LIMITER/test-poll-cache/*"):
            get_redis().delete(key)
    client = limited.test_client()
    url = f"/api/v1/assessments/{in_progress}/status"
    answers = [client.get(url, headers=bearer(tokens["student"])).status_code for _ in range(3)]
    # Cached polls and the rate limiter's own endpoints share the one bucket.
    history = client.get(
        f"/api/v1/assessments/{in_progress}/history", headers=bearer(tokens["student"])
    )
    refused = client.get(url, headers=bearer(tokens["student"]))
    assert answers == [200, 200, 200] and history.status_code == 200
    assert refused.status_code == 429
    assert refused.get_json()["code"] == "RATE_LIMITED"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60


def test_the_partial_is_cached_for_its_owner_only(app, client, in_progress):
    live_near_cache(app)
    url = f"/assessments/{in_progress}/progress/live"
    htmx = {"HX-Request": "true"}
    log_in(client, STUDENT)
    first = client.get(url, headers=htmx)
    with Statements(app) as statements:
        again = client.get(url, headers=htmx)
    assert again.status_code == 200 and statements == []
    assert again.get_data() == first.get_data()
    assert again.headers["Cache-Control"] == "no-store"
    advance(app, gpt_run(app, in_progress), 85)
    assert "85%" in client.get(url, headers=htmx).get_data(as_text=True)

    other = app.test_client()
    log_in(other, OTHER_STUDENT)
    assert "85%" not in other.get(url, headers=htmx).get_data(as_text=True)
    admin = app.test_client()
    log_in(admin, ADMIN)
    with Statements(app) as statements:
        seen = admin.get(url, headers=htmx)
    assert seen.status_code == 200 and statements  # the database path, not the owner's entry


def test_a_finished_assessment_stops_polling_from_the_cache(app, client, in_progress):
    live_near_cache(app)
    log_in(client, STUDENT)
    url = f"/assessments/{in_progress}/progress/live"
    assert client.get(url, headers={"HX-Request": "true"}).status_code == 200
    with app.app_context():
        run = db.session.get(StageRun, gpt_run(app, in_progress))
        progress.fail_stage(run, "stopped for the test")
        db.session.get(Assessment, in_progress).status = AssessmentStatus.FAILED
        db.session.commit()
    first = client.get(url, headers={"HX-Request": "true"})
    again = client.get(url, headers={"HX-Request": "true"})
    assert first.status_code == again.status_code == 286
    assert again.get_data() == first.get_data()
    # The student reads the failure in plain words (the error itself is for admins).
    assert "Essay scoring failed." in again.get_data(as_text=True)


def test_without_redis_polls_take_the_database_path(app, tokens, in_progress):
    from webapp import create_app

    broken = create_app(
        {
            **{k: app.config[k] for k in ("TESTING", "SQLALCHEMY_DATABASE_URI")},
            "SECRET_KEY": "test-secret",
            "REDIS_URL": "redis://127.0.0.1:1/0",
        }
    )
    client = broken.test_client()
    url = f"/api/v1/assessments/{in_progress}/status"
    for _ in range(2):
        response = client.get(url, headers=bearer(tokens["student"]))
        assert response.status_code == 200
        assert response.get_json()["assessment_id"] == in_progress


# --- the near cache (webapp/near_cache.py) ------------------------------------------------------


def other_process_change(app, assessment_id: int) -> None:
    """A change announced by another process: a second app, with a near cache of its own."""

    other = sibling_app(app)
    with other.app_context():
        poll_changes.changed([assessment_id])


def test_repeated_polls_are_answered_from_memory(app, client, tokens, in_progress):
    live_near_cache(app)
    url = f"/api/v1/assessments/{in_progress}/status"
    first = client.get(url, headers=bearer(tokens["student"]))
    for _ in range(5):
        again, through_flask = get_noting_flask(app, client, url, headers=bearer(tokens["student"]))
        assert not through_flask and again.get_data() == first.get_data()


def test_another_process_change_reaches_this_process(app, client, tokens, in_progress):
    near = live_near_cache(app)
    url = f"/api/v1/assessments/{in_progress}/status"
    client.get(url, headers=bearer(tokens["student"]))
    assert near.get(("a", str(in_progress)), "status") is not None
    other_process_change(app, in_progress)
    eventually(lambda: near.get(("a", str(in_progress)), "status") is None)


def test_an_answer_built_across_a_change_is_not_kept(app, in_progress):
    """The race: a poll reads the database, another process commits a change, then the poll
    keeps what it read. The change arrived after the poll's ticket, so the answer is not kept."""
    near = live_near_cache(app)
    subject = ("a", str(in_progress))
    ticket = near.ticket()
    other_process_change(app, in_progress)
    eventually(lambda: near.ticket().seq > ticket.seq)
    near.learn(ticket, subject, Entry(1, "e", False, "{}"), "status")
    assert near.get(subject, "status") is None
    near.learn(near.ticket(), subject, Entry(1, "e", False, "{}"), "status")
    assert near.get(subject, "status") is not None  # one taken after the change is kept


def test_a_lost_subscription_empties_the_near_cache(app, client, tokens, in_progress):
    from webapp.queues import get_redis

    near = live_near_cache(app)
    url = f"/api/v1/assessments/{in_progress}/status"
    client.get(url, headers=bearer(tokens["student"]))
    assert near.get(("a", str(in_progress)), "status") is not None
    with app.app_context():
        get_redis().client_kill_filter(_type="pubsub")
    eventually(lambda: near.get(("a", str(in_progress)), "status") is None)
    live_near_cache(app)  # it subscribes again by itself
    assert client.get(url, headers=bearer(tokens["student"])).status_code == 200


def test_a_change_announced_while_the_subscription_was_down_is_never_missed(
    app,
    client,
    tokens,
    in_progress,
):
    """Whatever redis-py does on its own after a broken connection, every (re)subscription
    starts from nothing: a change announced while this process could not hear it is seen."""
    from webapp.queues import get_redis

    near = live_near_cache(app)
    url = f"/api/v1/assessments/{in_progress}/status"
    run_id = gpt_run(app, in_progress)
    for percentage in (61, 62, 63):
        client.get(url, headers=bearer(tokens["student"]))
        with app.app_context():
            get_redis().client_kill_filter(_type="pubsub")
        eventually(lambda: near.ticket() is None)  # it noticed, and reconnects in 0.5 s
        advance(sibling_app(app), run_id, percentage)  # another process: unheard here
        live_near_cache(app)
        body = client.get(url, headers=bearer(tokens["student"])).get_json()
        assert next(s for s in body["stages"] if s["name"] == "gpt")["percentage"] == percentage
    assert near is near_cache(app)


def test_a_token_revoked_elsewhere_stops_working_here(app, client, in_progress):
    near = live_near_cache(app)
    with app.app_context():
        user = db.session.scalar(select(User).where(User.email == STUDENT[0]))
        row, plain = ApiToken.issue(user, name="revoked-elsewhere")
        db.session.add(row)
        db.session.commit()
        token_id, user_id = row.id, user.id
    url = f"/api/v1/assessments/{in_progress}/status"
    for _ in range(3):
        assert client.get(url, headers=bearer(plain)).status_code == 200

    other = sibling_app(app)
    with other.app_context():
        revoke_token(db.session.get(User, user_id), token_id)
    from webapp.models.accounts import hash_token

    eventually(lambda: near.get(("t", hash_token(plain))) is None)
    assert client.get(url, headers=bearer(plain)).status_code == 401


def test_polls_from_memory_are_counted_in_the_shared_bucket(app, tokens, in_progress):
    from webapp.queues import get_redis

    limited = sibling_app(
        app, RATELIMIT_KEY_PREFIX="test-near-count", RATE_LIMIT_POLL="1000/minute"
    )
    live_near_cache(limited)
    client = limited.test_client()
    url = f"/api/v1/assessments/{in_progress}/status"
    for _ in range(40):
        assert client.get(url, headers=bearer(tokens["student"])).status_code == 200
    with limited.app_context():
        [key] = list(get_redis().scan_iter("LIMITS:LIMITER/test-near-count/*"))
        counted = int(get_redis().get(key))
    # Counted before answered (a lease of polls counted ahead), never after: the count is never
    # below what was answered, and ahead of it by at most one lease (1/LEASE_SHARE of the limit).
    assert 40 <= counted <= 40 + 1000 // LEASE_SHARE


@pytest.mark.parametrize("limit", [3, 4, 5])
def test_the_limit_is_exact_when_polls_come_from_memory(app, tokens, in_progress, limit):
    limited = sibling_app(
        app,
        RATELIMIT_KEY_PREFIX=f"test-exact-{limit}-{in_progress}-{id(app)}",
        RATE_LIMIT_POLL=f"{limit}/minute",
    )
    live_near_cache(limited)
    client = limited.test_client()
    url = f"/api/v1/assessments/{in_progress}/status"
    answers = [client.get(url, headers=bearer(tokens["student"])).status_code for _ in range(8)]
    assert answers == [200] * limit + [429] * (8 - limit)


def assert_same_response(a, b) -> None:
    assert (a.status_code, a.get_data()) == (b.status_code, b.get_data())
    # Every answer carries its own request id (both paths add one: see test_metrics).
    assert a.headers["X-Request-ID"] and b.headers["X-Request-ID"]
    a_headers = sorted((k, v) for k, v in a.headers.items() if k != "X-Request-ID")
    assert a_headers == sorted((k, v) for k, v in b.headers.items() if k != "X-Request-ID")


def test_the_wsgi_shortcut_answers_exactly_as_the_app_does(app, client, tokens, in_progress):
    """A status poll the near cache can answer is answered before Flask builds a request, with
    the very headers and body the app's own path gives (200 and 304), and nothing else
    (a query string, another token) takes the shortcut."""
    live_near_cache(app)
    url = f"/api/v1/assessments/{in_progress}/status"
    headers = bearer(tokens["student"])

    def poll(**extra):
        extra["headers"] = {**headers, **extra.get("headers", {})}
        return get_noting_flask(app, client, url, **extra)

    built, through_flask = poll()  # builds the entry
    assert through_flask
    cached, through_flask = poll()
    assert not through_flask  # from memory, Flask never involved
    assert_same_response(cached, built)

    etag = {"If-None-Match": built.headers["ETag"]}
    short_304, through_flask = poll(headers=etag)
    assert not through_flask and short_304.status_code == 304
    full_304, through_flask = poll(headers=etag, query_string={"x": "1"})  # the app's own path
    assert through_flask
    assert_same_response(short_304, full_304)

    _, through_flask = poll(headers=bearer(tokens["other"]))
    assert through_flask  # someone else's token: the app answers (404), never the shortcut


def test_the_wsgi_shortcut_serves_the_partial_to_its_owner_exactly_as_the_app_does(
    app,
    client,
    in_progress,
):
    live_near_cache(app)
    log_in(client, STUDENT)
    url = f"/assessments/{in_progress}/progress/live"

    def poll(who=client):
        return get_noting_flask(app, who, url, headers={"HX-Request": "true"})

    built, through_flask = poll()
    assert through_flask and built.status_code == 200
    cached, through_flask = poll()
    assert not through_flask
    assert_same_response(cached, built)

    stranger = app.test_client()
    log_in(stranger, OTHER_STUDENT)
    refused, through_flask = poll(stranger)
    assert through_flask and refused.get_data() != built.get_data()  # the app's refusal
    anonymous, through_flask = poll(app.test_client())
    assert through_flask and anonymous.get_data() != built.get_data()
    client.set_cookie("session", "forged.value.here")
    forged, through_flask = poll()
    assert through_flask and forged.get_data() != built.get_data()
