"""Polls: what they answer, and the shortcut that answers most of them before Flask runs.

Every open progress page asks every POLL_INTERVAL_SECONDS, so two endpoints carry most of the
traffic: the status JSON (`GET /api/v1/assessments/<id>/status`) and the htmx progress partial
(`GET /assessments/<id>/progress/live`). Their views build the answer from the database and give
it with `answer`, which also keeps it, with what the app learnt about the caller, in this
process's near cache (webapp/near_cache). `PollShortcut`, WSGI middleware, answers the owner's
next polls from there without Flask, when:

- the caller is the owner: a bearer token the app accepted for them (the header alone decides,
  as in webapp.auth), or else their session cookie, opened with Flask's own session serializer
  (signature and max age) on every request and carrying the account's current session
  generation (read by the app from the database);
- the poll fits the limits Flask-Limiter counted the owner's last poll against in this process
  (`Limiter.current_limits`): it is counted with the limiter's own strategy and storage before
  it is answered, a few polls at a time (`Leases`), so no number of web processes passes it;
- and it is answered by `poll_answer`, as the views answer.

Anything else (a query string, another method, no entry, another caller, a token or session the
app has not vouched for here, the limit reached, Redis down) goes to the app unchanged.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass

import redis
from flask import Flask, Response, current_app, g, request
from flask_login import current_user
from itsdangerous import BadData
from werkzeug.http import parse_cookie, parse_etags, quote_etag

from webapp.auth import SESSION_GENERATION, authenticated_by_token, bearer_token_hash, sends_bearer
from webapp.http_observer import POLL_HIT
from webapp.near_cache import Entry, near_cache

POLL_INTERVAL_SECONDS = 2
STOP_POLLING = 286  # htmx stops an `every` poll when the answer has this status code
STATUS = "status"  # the JSON of GET /api/v1/assessments/{id}/status
PARTIAL = "partial"  # the htmx progress partial
PATHS = {
    STATUS: re.compile(r"/api/v1/assessments/([1-9][0-9]{0,9})/status"),
    PARTIAL: re.compile(r"/assessments/([1-9][0-9]{0,9})/progress/live"),
}
ENDPOINTS = {STATUS: "api.status", PARTIAL: "progress.live"}
TICKET = "scoreline.poll_ticket"  # environ: taken by the shortcut before the app reads anything
# The largest share of a limit one process counts ahead in a single Redis round trip (see
# `Leases`), and how many clients' leases it keeps at most (expired ones go when it is full).
LEASE_SHARE = 16
MAX_LEASES = 20000
STATUS_LINES = {code: Response(status=code).status for code in (200, 304, STOP_POLLING)}


def init_app(app: Flask) -> None:
    """Answer polls from memory ahead of Flask (the other middleware wraps this one)."""
    app.wsgi_app = PollShortcut(app, app.wsgi_app)


def poll_answer(kind: str, entry: Entry, if_none_match: str | None):
    """(status code, headers, body) of a poll, on both paths: the status JSON with its ETag
    (304 when it matches) and Retry-After while running, or the partial (286 once finished)."""
    if kind == PARTIAL:
        headers = [("Cache-Control", "no-store"), ("Content-Type", "text/html; charset=utf-8")]
        return (STOP_POLLING if entry.finished else 200), headers, entry.content.encode()
    headers = [("ETag", quote_etag(entry.etag)), ("Cache-Control", "private, no-cache")]
    if not entry.finished:
        headers.append(("Retry-After", str(POLL_INTERVAL_SECONDS)))
    if entry.etag in parse_etags(if_none_match):
        return 304, headers, b""
    return 200, [*headers, ("Content-Type", "application/json")], entry.content.encode()


def answer(kind: str, assessment, content: str, *, etag: str = "", finished: bool) -> Response:
    """The poll answer a view built; kept for the owner's next polls when the owner asked."""
    entry = Entry(assessment.user_id, etag, finished, content)
    if current_user.id == assessment.user_id:
        _learn(kind, assessment.id, entry)
    status, headers, body = poll_answer(kind, entry, request.headers.get("If-None-Match"))
    response = current_app.response_class(body, status, headers)
    response.vary.add("Cookie")  # a session may be the caller, whichever path answers
    return response


def _learn(kind: str, assessment_id: int, entry: Entry) -> None:
    """Keep the answer, the caller's credential and the limits its poll was counted against."""
    near = near_cache(current_app)
    ticket = request.environ.get(TICKET)
    limiter = current_app.extensions["scoreline_limiter"]
    limits = tuple((limit.limit, tuple(limit.request_args)) for limit in limiter.current_limits)
    account = str(entry.owner)
    near.learn(ticket, ("a", str(assessment_id)), entry, kind)
    near.learn(ticket, ("l", account), limits)
    if authenticated_by_token():
        if g.get("poll_token"):  # set by auth.remember_token for tokens it lets polls use
            near.learn(ticket, ("t", g.poll_token), entry.owner)
    else:
        near.learn(ticket, ("s", account), current_user.session_generation)


class PollShortcut:
    """WSGI middleware: a poll this process's near cache can answer, answered before Flask
    builds a request at all (see the module's docstring)."""

    def __init__(self, app: Flask, wsgi_app) -> None:
        self.app = app
        self.wsgi_app = wsgi_app
        self.sessions = app.session_interface.get_signing_serializer(app)
        self.session_max_age = int(app.permanent_session_lifetime.total_seconds())
        self.leases = Leases()

    def __call__(self, environ, start_response):
        answer = None
        for kind, pattern in PATHS.items():
            if match := pattern.fullmatch(environ.get("PATH_INFO", "")):
                answer = self._answer(environ, kind, match[1])
                break
        if answer is None:
            return self.wsgi_app(environ, start_response)
        status, headers, body = answer
        if status != 304:  # a 304 has no body, nor a length (as Werkzeug answers it)
            headers.append(("Content-Length", str(len(body))))
        start_response(STATUS_LINES[status], headers)
        return [body]

    def _answer(self, environ, kind: str, assessment_id: str):
        near = near_cache(self.app)
        environ[TICKET] = near.ticket()  # before anything is read, for the app's path
        if environ["REQUEST_METHOD"] != "GET" or environ.get("QUERY_STRING"):
            return None
        entry = near.get(("a", assessment_id), kind)
        if entry is None or self._caller(near, environ) != entry.owner:
            return None
        limits = near.get(("l", str(entry.owner)))
        if limits is None or not self._count(limits):
            return None
        environ[POLL_HIT] = (kind, ENDPOINTS[kind])
        status, headers, body = poll_answer(kind, entry, environ.get("HTTP_IF_NONE_MATCH"))
        return status, [*headers, ("Vary", "Cookie")], body

    def _caller(self, near, environ) -> int | None:
        """The account the app vouched for: by the bearer token, or else the session cookie."""
        header = environ.get("HTTP_AUTHORIZATION", "")
        if sends_bearer(header):
            token_hash = bearer_token_hash(header)
            return near.get(("t", token_hash)) if token_hash else None
        cookie = parse_cookie(environ.get("HTTP_COOKIE", "")).get(
            self.app.config["SESSION_COOKIE_NAME"]
        )
        if not cookie:
            return None
        try:
            session = self.sessions.loads(cookie, max_age=self.session_max_age)
            account = int(session["_user_id"])  # Flask-Login's key
        except (BadData, KeyError, TypeError, ValueError):
            return None
        generation = near.get(("s", str(account)))
        if generation is None or session.get(SESSION_GENERATION) != generation:
            return None
        return account

    def _count(self, limits) -> bool:
        """Count the poll as Flask-Limiter would: True while within every limit. False (over a
        limit, or Redis unreachable): the app answers, and refuses where due."""
        strategy = self.app.extensions["scoreline_limiter"].limiter
        try:
            return all(self.leases.take(strategy, item, args) for item, args in limits)
        except (redis.RedisError, OSError):
            return False


@dataclass
class Lease:
    left: int  # polls this process may still answer, already counted in Redis
    until: float  # the end (epoch seconds) of the window they were counted in
    remaining: int  # what the window had left after they were counted


class Leases:
    """Polls counted ahead: a few Redis round trips for many polls, not one for each.

    When a process has no lease for a limit, it counts several polls at once with the limiter's
    own `hit(cost=n)` (n at most 1/LEASE_SHARE of the limit, and a quarter of what the window
    has left) and answers the next ones from that lease until it is spent or its window ends.
    Every answered poll was counted first, so the fleet never goes over a limit; a client near
    its limit can be refused up to 1/LEASE_SHARE of it early for each other web process holding
    part of a lease. Small limits, and the last polls of any window, are counted one by one, as
    Flask-Limiter counts them.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards the leases
        self._counting = threading.Lock()  # one thread at a time counts ahead (in Redis)
        self._leases: dict[str, Lease] = {}

    def take(self, strategy, item, args) -> bool:
        key = item.key_for(*args)
        if self._spend(key):
            return True
        with self._counting:
            if self._spend(key):  # another thread counted ahead meanwhile
                return True
            lease = self._leases.get(key)
            # What the window had left when last counted; a new window has the whole limit.
            fresh = lease is None or lease.until <= time.time()
            left = item.amount if fresh else lease.remaining
            size = max(1, min(item.amount // LEASE_SHARE, left // 4))
            if not strategy.hit(item, *args, cost=size):
                with self._lock:
                    self._leases.pop(key, None)
                return False
            window = strategy.get_window_stats(item, *args)
            with self._lock:
                if len(self._leases) >= MAX_LEASES:
                    now = time.time()
                    self._leases = {k: v for k, v in self._leases.items() if v.until > now}
                self._leases[key] = Lease(size - 1, window.reset_time, window.remaining)
        return True

    def _spend(self, key: str) -> bool:
        """Answer one poll from this process's lease, if it has one left in its window."""
        with self._lock:
            lease = self._leases.get(key)
            if lease is None or lease.left <= 0 or lease.until <= time.time():
                return False
            lease.left -= 1
            return True
