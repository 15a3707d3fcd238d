"""What many test modules share and a fixture does not fit: the test accounts, the app over real
HTTP, worker processes, and small helpers that act as a user or an API client would.

Fixtures live in tests/conftest.py (which builds on these); test modules import from here, never
from conftest.py or from one another.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
import requests
from flask import request_started
from rq import Worker
from rq.job import Job
from rq.registry import FailedJobRegistry
from sqlalchemy import func, select, text
from werkzeug.serving import make_server

from webapp import create_app
from webapp.auth import SESSION_GENERATION
from webapp.config import PROJECT_ROOT
from webapp.extensions import db
from webapp.models import Assessment, Operation, QuestionSet, User
from webapp.queues import get_queue
from webapp.scoring.vocabulary import AssessmentStatus

# --- the test accounts (seeded by the `app` fixture) ------------------------------------------

STUDENT = ("student@example.com", "student-password")
OTHER_STUDENT = ("other@example.com", "other-password")
ADMIN = ("admin@example.com", "admin-password")
# The password of the student the `account` fixture creates for a test.
ACCOUNT_PASSWORD = "old-password-1"


# --- the app over real HTTP -------------------------------------------------------------------


class LiveServer:
    """The app served over real HTTP by a threaded Werkzeug server in this process."""

    def __init__(self, app) -> None:
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()


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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- other apps on the session's database -----------------------------------------------------


def redis_db_url(base: str, number: int) -> str:
    """The same server, another logical database: isolates queues between worker setups."""
    parts = urlsplit(base)
    query = [(key, value) for key, value in parse_qsl(parts.query) if key != "db"]
    if parts.scheme == "unix":
        return f"unix://{parts.path}?{urlencode([*query, ('db', number)])}"
    return urlunsplit(parts._replace(path=f"/{number}", query=urlencode(query)))


def app_on(app, redis_url: str, **config):
    """Another app on the session's database and secret, enqueuing on `redis_url` (where a
    worker_factory worker listens), with the session's rate limits and `config`."""
    shared = {k: v for k, v in app.config.items() if k.startswith("RATE_LIMIT_")}
    for key in ("TESTING", "SQLALCHEMY_DATABASE_URI", "SECRET_KEY"):
        shared[key] = app.config[key]
    return create_app({**shared, "REDIS_URL": redis_url, **config})


def sibling_app(app, **config):
    """Another app on the session's database and Redis (a process of its own), with `config`."""
    shared = ("TESTING", "SQLALCHEMY_DATABASE_URI", "REDIS_URL", "SECRET_KEY")
    return create_app({**{k: app.config[k] for k in shared}, **config})


# A busy worker heartbeats every WORKER_HEARTBEAT seconds; the watchdog calls it dead after
# 2 x that + 5 s. With 1 s here, a killed worker is noticed within about 7 s.
HEARTBEAT = "1"


def stack(db_url: str, redis_url: str):
    """An app on this database and Redis, as every process of a deployment would build it."""
    return create_app(
        {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": db_url,
            "REDIS_URL": redis_url,
            "WORKER_HEARTBEAT": int(HEARTBEAT),
        }
    )


# --- worker processes -------------------------------------------------------------------------


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
        # Every test's workers share one database, each on a Redis of its own: a watchdog would
        # take another test's work for lost (its jobs are in another Redis) and enqueue it where
        # this test's workers run it with this test's settings. Only tests that ask get one.
        "WATCHDOG_INTERVAL": "0",
        "PRUNE_INTERVAL": "0",
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


# --- webhooks ---------------------------------------------------------------------------------

# Receivers listen on 127.0.0.1, so the sites and workers of webhook tests allow loopback; the
# session's app keeps the default (private addresses blocked). Short retries and timeout.
WEBHOOK_TEST_ENV = {
    "WEBHOOK_ALLOWED_CIDRS": "127.0.0.0/8",
    "WEBHOOK_RETRY_SCHEDULE": "1,1,1",
    "WEBHOOK_TIMEOUT": "1",
}

# What one assessment scored end to end sends, in sequence order.
ASSESSMENT_EVENTS = [
    "assessment.submitted",
    "assessment.started",
    "assessment.progress",
    "assessment.progress",
    "assessment.progress",
    "operation.completed",
    "assessment.completed",
]


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


def add_endpoint(client, url: str, **fields) -> dict:
    """Register a webhook endpoint through the API; returns its body."""
    response = client.post("/api/v1/webhook-endpoints", json={"url": url, **fields})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def deliveries_of(client, endpoint_id: int, **filters) -> list[dict]:
    """The endpoint's delivery log, through the API."""
    response = client.get(
        f"/api/v1/webhook-endpoints/{endpoint_id}/deliveries", query_string=filters
    )
    assert response.status_code == 200, response.get_json()
    return response.get_json()["deliveries"]


def wait_for_delivery(client, delivery_id: int, statuses: set[str], timeout: float = 30) -> dict:
    """Poll the delivery until its status is one of `statuses`."""
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(f"/api/v1/webhook-deliveries/{delivery_id}").get_json()
        if body["status"] in statuses:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"delivery {delivery_id} still {body['status']}: {body}")
        time.sleep(0.1)


# --- as a browser or an API client would ------------------------------------------------------


def csrf_token(client, path: str = "/login") -> str:
    """The CSRF token a page carries in its meta tag."""
    html = client.get(path).get_data(as_text=True)
    return re.search(r'name="csrf-token" content="([^"]+)"', html).group(1)


def flashes(response) -> list[str]:
    """The flash messages a page shows."""
    return re.findall(r'data-testid="flash">([^<]*)<', response.get_data(as_text=True))


def log_in(client, account: tuple[str, str] = STUDENT) -> str:
    """Log a Flask test client in through the login form; returns the new session's CSRF token."""
    token = csrf_token(client)
    response = client.post(
        "/login", data={"csrf_token": token, "email": account[0], "password": account[1]}
    )
    assert response.status_code == 302, response.get_data(as_text=True)
    return csrf_token(client, "/account")  # login starts a new session, with a new token


def log_in_without_form(app, client, account: tuple[str, str]) -> None:
    """A browser session for `account` written straight into the cookie: no password check and
    no audit entry (for pages that list audit entries, and for many logins in a row)."""
    with app.app_context():
        user = db.session.scalar(select(User).where(User.email == account[0]))
    with client.session_transaction() as session:
        session["_user_id"] = str(user.id)
        session["_fresh"] = True
        session[SESSION_GENERATION] = user.session_generation


def bearer(token: str) -> dict:
    """The header that authenticates an API request with `token`."""
    return {"Authorization": f"Bearer {token}"}


def get_noting_flask(app, client, url: str, **kwargs):
    """GET through `client`: (the response, whether Flask dispatched a request for it)."""
    dispatched = []

    def note(sender, **_extra):
        dispatched.append(sender)

    with request_started.connected_to(note, app):
        response = client.get(url, **kwargs)
    return response, bool(dispatched)


# --- assessments ------------------------------------------------------------------------------

ESSAY = (
    "Recursion is when a function calls itself to solve a smaller copy of the problem. "
    "Every recursive function needs a base case, because without it the recursive call never "
    "stops; each call adds a frame to the call stack and Python enforces a recursion limit. "
    "For example, walking a nested directory tree is natural with recursion, but summing a long "
    "list is better done with iteration."
)


def full_answers(assessment: dict) -> list[dict]:
    """An answer to every question: first option for theoretical, text for the rest."""
    answers = []
    for q in assessment["questions"]:
        if q["type"] == "theoretical":
            answers.append({"question_id": q["id"], "answer": q["options"][0]["id"]})
        elif q["type"] == "profile":
            answers.append({"question_id": q["id"], "answer": "Two years, mostly scripts."})
        else:
            answers.append({"question_id": q["id"], "answer": ESSAY})
    return answers


def submit_through(app, tokens) -> tuple[dict, dict]:
    """Create, answer and submit an assessment through `app` (whatever Redis it is bound to)."""
    client = app.test_client()
    headers = bearer(tokens["student"])
    assessment = client.post(
        "/api/v1/assessments", json={"question_set": "python-basics"}, headers=headers
    ).get_json()
    response = client.post(
        f"/api/v1/assessments/{assessment['id']}/submit",
        json={"responses": full_answers(assessment)},
        headers=headers,
    )
    assert response.status_code == 202, response.get_json()
    return assessment, response.get_json()


def status(app, tokens, assessment_id: int) -> dict:
    """The student's status answer for the assessment, through `app`."""
    return (
        app.test_client()
        .get(f"/api/v1/assessments/{assessment_id}/status", headers=bearer(tokens["student"]))
        .get_json()
    )


def add_assessment(app, status: AssessmentStatus, *, slug="python-basics", **fields) -> int:
    """An assessment row as scoring would leave it."""
    with app.app_context():
        user = db.session.scalar(select(User).where(User.email == STUDENT[0]))
        question_set = db.session.scalar(select(QuestionSet).where(QuestionSet.slug == slug))
        assessment = Assessment(
            user_id=user.id, question_set_id=question_set.id, status=status, **fields
        )
        db.session.add(assessment)
        db.session.commit()
        return assessment.id


def operations_of(app, assessment_id: int) -> int:
    """How many operations the assessment has."""
    with app.app_context():
        return db.session.scalar(
            select(func.count())
            .select_from(Operation)
            .where(Operation.assessment_id == assessment_id)
        )


def failing_remove(app, path) -> Job:
    """A job that fails while `path` is missing and succeeds once it exists."""
    with app.app_context():
        job = get_queue("default").enqueue("os.remove", str(path))
        registry = FailedJobRegistry(queue=get_queue("default"))
        wait_for(lambda: job.id in registry.get_job_ids(), 20, f"job {job.id} to fail")
    return job


# --- waiting ----------------------------------------------------------------------------------


def wait_for(predicate, timeout: float = 20, what: str = "the condition", explain=None):
    """Poll until `predicate` is truthy; on timeout, say what `explain()` finds (if given)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what}" + (f"\n{explain()}" if explain else "")
    )


def eventually(predicate, timeout: float = 5.0) -> None:
    """Poll `predicate` every 5 ms until it is truthy (for fast in-process effects)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.005)


def explain(app, tokens, assessment_id: int, *workers) -> str:
    """What the API, the database and the workers say, for a timed-out wait: tells a stale poll
    answer from a pipeline that really stopped."""
    try:
        lines = [f"API status: {status(app, tokens, assessment_id)}"]
    except Exception as exc:  # a diagnosis must not hide the failure
        lines = [f"API status: {exc!r}"]
    with app.app_context():
        rows = db.session.execute(
            text(
                "SELECT o.id, o.status, s.name, s.status, s.percentage, s.job_id, s.error "
                "FROM operations o LEFT JOIN stage_runs s ON s.operation_id = o.id "
                "WHERE o.assessment_id = :a ORDER BY o.id, s.id"
            ),
            {"a": assessment_id},
        ).all()
        db.session.rollback()
    lines += [f"database: {tuple(row)}" for row in rows]
    for worker in workers:
        lines.append(
            "--- worker log (last 40 lines) ---\n" + "\n".join(worker.log().splitlines()[-40:])
        )
    return "\n".join(lines)


def live_near_cache(app):
    """This app's near cache, once its pub/sub subscription is confirmed."""
    from webapp.near_cache import near_cache  # the poll path's own module; imported when used

    near = near_cache(app)
    near.get(("a", "0"))  # starts the listener
    deadline = time.monotonic() + 10
    while near.ticket() is None:
        assert time.monotonic() < deadline, "the near cache never subscribed"
        time.sleep(0.01)
    return near
