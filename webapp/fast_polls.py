"""The hot path of polling: a status poll or a progress partial answered without SQL.

Every open progress page asks every 2 s, so these two endpoints carry most of the traffic. Two
layers answer them before the ordinary path does:

- `PollShortcut`, WSGI middleware, answers from this process's memory (the near cache) before
  Flask builds a request at all;
- `answer_from_cache`, a hook that runs first (ahead of the rate limiter), answers when
  everything it needs is in Redis and current, in one round trip (a Lua script,
  services/status_cache.READ_SCRIPT) that reads the cached answer and the assessment's version
  and, for a bearer token, checks that the token's account (see auth.remember_token) owns the
  assessment and counts the poll in the account's poll bucket, the very counter Flask-Limiter
  uses.

Anything else (no entry, a stale one, someone other than the owner, a revoked or unknown token,
over the limit, Redis down) returns None, and the request takes the ordinary path, which answers
(or refuses) and caches what it built for the next poll.
"""

from __future__ import annotations

import re
import threading
import time
from functools import lru_cache

import redis
from flask import Flask, current_app, g, request, session
from flask_limiter import Limiter
from itsdangerous import BadSignature
from limits import parse_many
from werkzeug.http import parse_cookie, parse_etags, quote_etag
from werkzeug.wrappers import Response

from webapp.auth import bearer_token_hash, token_cache_key
from webapp.http_observer import POLL_HIT
from webapp.near_cache import Entry, near_cache
from webapp.queues import get_redis
from webapp.services import status_cache
from webapp.services.status_cache import PARTIAL, STATUS

ENDPOINTS = {"api.status": STATUS, "progress.live": PARTIAL}


def init_app(app: Flask) -> None:
    """Register the hooks; call before the rate limiter's init so this runs ahead of it."""
    app.wsgi_app = PollShortcut(app, app.wsgi_app)
    app.before_request(answer_from_cache)

    @app.teardown_request
    def _end_build(_exc=None):
        ticket = g.pop("near_ticket", None)
        if ticket is not None:
            near_cache(app).end(ticket)


def answer_from_cache():
    kind = ENDPOINTS.get(request.endpoint)
    if kind is None or request.method != "GET":
        return None
    assessment_id = request.view_args["assessment_id"]
    token_hash = None
    if kind == STATUS:
        token_hash = bearer_token_hash(request.headers.get("Authorization", ""))
        if token_hash is None:
            return None
    elif not request.headers.get("HX-Request"):
        return None
    # What this process's memory could answer, PollShortcut already did; this is one round
    # trip to Redis (see status_cache.READ_SCRIPT), and fills the memory for the next poll.
    near = near_cache(current_app._get_current_object())
    ticket = g.near_ticket = near.begin(assessment_id)
    try:
        if kind == STATUS:
            key = token_cache_key(token_hash)
            limits = poll_limits(current_app)
            answer = status_cache.read(kind, assessment_id, key, limits)
        else:
            answer = status_cache.read(kind, assessment_id)
    except redis.RedisError:
        return None
    # The version read before any SQL: what the ordinary path stamps its new entry with.
    g.poll_version = int(answer[1])
    if not answer[0]:
        return None
    hit, version, owner, etag, finished, content = answer
    owner, etag, finished, content = int(owner), etag.decode(), finished == b"1", content.decode()
    if kind == PARTIAL and str(owner) != session.get("_user_id"):  # Flask-Login's user id key
        return None
    if hit == 1:  # current, not a previous answer served during a rebuild
        near.put(ticket, kind, Entry(int(version), owner, etag, finished, content))
        if token_hash is not None:
            near.put_token(ticket, token_hash, owner)
    request.environ[POLL_HIT] = (kind, "redis", request.endpoint)
    return _respond(kind, content, etag, finished)


STATUS_PATH = re.compile(r"/api/v1/assessments/([1-9][0-9]{0,9})/status")
PARTIAL_PATH = re.compile(r"/assessments/([1-9][0-9]{0,9})/progress/live")


class PollShortcut:
    """WSGI middleware: a poll this process's near cache can answer, answered before Flask
    builds a request at all.

    It serves the near cache's entry to its owner only (the bearer token's account, or the
    session cookie's user for the partial), counts status polls in the poll bucket in batches
    (PollCounter), and answers with the same headers as `status_response` and
    `partial_response`. Anything else (a query string, another method, a miss, a token or
    cookie this process can't vouch for, near the limit) goes to the app unchanged.
    """

    MAX_SESSIONS = 10000

    def __init__(self, app: Flask, wsgi_app) -> None:
        from webapp.api.assessments import POLL_INTERVAL_SECONDS
        from webapp.views.presentation import STOP_POLLING

        self.app = app
        self.wsgi_app = wsgi_app
        self.retry_after = str(POLL_INTERVAL_SECONDS)
        self.stop_polling = Response(status=STOP_POLLING).status
        self._sessions: dict[str, str | None] = {}  # session cookie -> its user id

    def __call__(self, environ, start_response):
        answer = None
        if environ["REQUEST_METHOD"] == "GET" and not environ.get("QUERY_STRING"):
            answer = self._answer(environ)
        if answer is None:
            return self.wsgi_app(environ, start_response)
        status, headers, body = answer
        start_response(status, headers)
        return [body]

    def _answer(self, environ):
        near = self.app.extensions.get("near_cache")
        path = environ.get("PATH_INFO", "")
        if near is None:
            return None
        if match := STATUS_PATH.fullmatch(path):
            token_hash = bearer_token_hash(environ.get("HTTP_AUTHORIZATION", ""))
            entry = near.get(STATUS, int(match[1])) if token_hash is not None else None
            if entry is None or near.account_of(token_hash) != entry.owner:
                return None
            if not poll_counter(self.app).count(entry.owner):
                return None
            environ[POLL_HIT] = (STATUS, "memory", "api.status")
            return self._status(entry, environ)
        if (match := PARTIAL_PATH.fullmatch(path)) and environ.get("HTTP_HX_REQUEST"):
            entry = near.get(PARTIAL, int(match[1]))
            if entry is None or self._session_user(environ) != str(entry.owner):
                return None
            body = entry.content.encode()
            headers = [
                ("Content-Type", "text/html; charset=utf-8"),
                ("Content-Length", str(len(body))),
                ("Cache-Control", "no-store"),
                ("Vary", "Cookie"),
            ]
            environ[POLL_HIT] = (PARTIAL, "memory", "progress.live")
            return (self.stop_polling if entry.finished else "200 OK"), headers, body
        return None

    def _status(self, entry: Entry, environ):
        headers = [
            ("ETag", quote_etag(entry.etag)),
            ("Cache-Control", "private, no-cache"),
            ("Vary", "Cookie"),
        ]
        if not entry.finished:
            headers.append(("Retry-After", self.retry_after))
        if entry.etag in parse_etags(environ.get("HTTP_IF_NONE_MATCH")):
            return "304 NOT MODIFIED", headers, b""
        body = entry.content.encode()
        headers += [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        return "200 OK", headers, body

    def _session_user(self, environ) -> str | None:
        """The user id in the request's session cookie, read as Flask reads it (signature and
        age checked); remembered per cookie value, which only its own signature can vouch for."""
        name = self.app.config["SESSION_COOKIE_NAME"]
        cookie = parse_cookie(environ.get("HTTP_COOKIE", "")).get(name)
        if not cookie:
            return None
        if cookie in self._sessions:
            return self._sessions[cookie]
        serializer = self.app.session_interface.get_signing_serializer(self.app)
        if serializer is None:
            return None
        try:
            max_age = int(self.app.permanent_session_lifetime.total_seconds())
            user = serializer.loads(cookie, max_age=max_age).get("_user_id")
        except BadSignature:
            return None  # not remembered: the app answers (and refuses) it
        if len(self._sessions) >= self.MAX_SESSIONS:
            self._sessions.clear()
        self._sessions[cookie] = user
        return user


def remember(kind: str, assessment_id: int, version: int | None, owner: int, *,
             etag: str = "", finished: bool, content: str) -> None:  # fmt: skip
    """Keep an answer the ordinary path built: in Redis for every process, and in this one."""
    status_cache.store(
        kind, assessment_id, version, owner, etag=etag, finished=finished, content=content
    )
    if version is not None:
        entry = Entry(version, owner, etag, finished, content)
        near_cache(current_app._get_current_object()).put(g.get("near_ticket"), kind, entry)


def _respond(kind: str, content: str, etag: str, finished: bool):
    if kind == STATUS:
        from webapp.api.assessments import status_response

        return status_response(content, etag, finished)
    from webapp.views.progress import partial_response

    return partial_response(content, finished)


class PollCounter:
    """Counts polls answered from memory into the account's poll bucket in Redis, in batches.

    Far below the limit a process adds its polls to the shared counter every FLUSH_EVERY polls
    or FLUSH_AFTER seconds (one round trip for many polls). Within EXACT_MARGIN of the limit it
    stops answering from memory, so every poll is counted (and refused) one by one, exactly as
    Flask-Limiter does. Other processes' polls are seen at each flush.
    """

    FLUSH_EVERY = 8
    FLUSH_AFTER = 0.5
    EXACT_MARGIN = 0.25

    def __init__(self, app: Flask) -> None:
        self.app = app
        self._lock = threading.Lock()
        # account -> [shared count at the last flush, polls not flushed yet, last flush, window end]
        self._state: dict[int, list[float]] = {}

    def count(self, account: int) -> bool:
        """True: this poll is counted and well within the limit. False: count it in Redis."""
        limits = poll_limits(self.app)
        if not limits:
            return True
        amount = min(limit[3] for limit in limits)
        now = time.monotonic()
        with self._lock:
            state = self._state.get(account)
            if state is None or now >= state[3]:
                state = self._state[account] = [0, 0, 0.0, 0.0]
            if state[0] + state[1] + 1 > amount * (1 - self.EXACT_MARGIN):
                return False
            state[1] += 1
            due = state[1] >= self.FLUSH_EVERY or now - state[2] >= self.FLUSH_AFTER
            if not due:
                return True
            pending, state[1], state[2] = state[1], 0, now
        try:
            pipe = get_redis(self.app).pipeline(transaction=False)
            for before, after, window, _amount in limits:
                key = f"{before}{account}{after}"
                pipe.set(key, 0, ex=window, nx=True)
                pipe.incrby(key, int(pending))
                pipe.pttl(key)
            answers = pipe.execute()
        except redis.RedisError:
            return False
        shared, ttl_ms = answers[1], answers[2]
        with self._lock:
            state[0] = shared
            state[3] = now + max(ttl_ms, 0) / 1000
            if len(self._state) > 10000:
                self._state.clear()
        # The flush may show other processes' polls have filled the bucket meanwhile; over the
        # limit, the Redis path answers (and the ordinary path refuses).
        return shared <= amount


def poll_counter(app: Flask) -> PollCounter:
    counter = app.extensions.get("poll_counter")
    if counter is None:
        counter = app.extensions["poll_counter"] = PollCounter(app)
    return counter


def poll_limits(app: Flask) -> list[tuple[str, str, int, int]]:
    """Each poll limit as (key before the account id, key after it, window s, amount), the
    keys Flask-Limiter counts the account's poll bucket in; empty when limits are off."""
    if not app.config["RATELIMIT_ENABLED"]:
        return []
    limiter: Limiter = app.extensions["scoreline_limiter"]
    return _poll_limits(
        limiter.storage.prefixed_key(""),
        app.config["RATELIMIT_KEY_PREFIX"],
        app.config["RATE_LIMIT_POLL"],
    )


@lru_cache(maxsize=16)
def _poll_limits(storage_prefix: str, key_prefix: str, limits: str):
    marker = "\x00account\x00"
    out = []
    for item in parse_many(limits):
        key = storage_prefix + item.key_for(key_prefix, f"account:{marker}", "poll")
        before, after = key.split(marker)
        out.append((before, after, item.get_expiry(), item.amount))
    return out
