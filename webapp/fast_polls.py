"""The hot path of polling: a status poll or a progress partial answered without SQL.

Every open progress page asks every 2 s, so these two endpoints carry most of the traffic. Two
layers answer them before the ordinary path does:

- `PollShortcut`, WSGI middleware, answers from this process's memory (the near cache) before
  Flask builds a request at all;
- `answer_from_cache`, a hook that runs first (ahead of the rate limiter), answers when
  everything it needs is in Redis and current, in one round trip (a Lua script,
  services/status_cache.READ_SCRIPT) that reads the cached answer and the assessment's version
  and checks that the caller owns the assessment (the bearer token's account, see
  auth.remember_token, or the session's user for the partial) and counts the poll in the
  account's poll bucket, the very counter Flask-Limiter uses.

Anything else (no entry, a stale one, someone other than the owner, a revoked or unknown token,
over the limit, Redis down) returns None, and the request takes the ordinary path, which answers
(or refuses) and caches what it built for the next poll.
"""

from __future__ import annotations

import re
from functools import lru_cache

import redis
from flask import Flask, current_app, g, request, session
from flask_limiter import Limiter
from flask_login import current_user
from limits import parse_many
from werkzeug.http import parse_cookie, parse_etags, quote_etag
from werkzeug.wrappers import Response

from webapp.auth import authenticated_by_token, bearer_token_hash, sends_bearer, token_cache_key
from webapp.browser_headers import shortcut_headers
from webapp.http_observer import POLL_HIT
from webapp.near_cache import Entry, near_cache
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
    token_hash = user = None
    if kind == STATUS:
        token_hash = bearer_token_hash(request.headers.get("Authorization", ""))
        if token_hash is None:
            return None
    else:
        user = session.get("_user_id")  # Flask-Login's user id key
        if not request.headers.get("HX-Request") or not user:
            return None
    # What this process's memory could answer, PollShortcut already did; this is one round
    # trip to Redis (see status_cache.READ_SCRIPT), and fills the memory for the next poll.
    near = near_cache(current_app._get_current_object())
    ticket = g.near_ticket = near.begin(assessment_id)
    try:
        limits = poll_limits(current_app)
        if kind == STATUS:
            key = token_cache_key(token_hash)
            answer = status_cache.read(kind, assessment_id, limits, token_key=key)
        else:
            answer = status_cache.read(kind, assessment_id, limits, account=str(user))
    except redis.RedisError:
        return None
    # The version read before any SQL: what the ordinary path stamps its new entry with.
    g.poll_version = int(answer[1])
    if not answer[0]:
        return None
    hit, version, owner, etag, finished, content = answer
    owner, etag, finished, content = int(owner), etag.decode(), finished == b"1", content.decode()
    if kind == PARTIAL and not _session_of(owner, ticket):
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
    session cookie's user for the partial), counts every poll in the account's poll bucket
    (`count_poll`), and answers with the same headers as `status_response` and
    `partial_response`. Anything else (a query string, another method, a miss, a token or
    cookie this process can't vouch for, near the limit) goes to the app unchanged.
    """

    def __init__(self, app: Flask, wsgi_app) -> None:
        from webapp.api.assessments import POLL_INTERVAL_SECONDS
        from webapp.views.presentation import STOP_POLLING

        self.app = app
        self.wsgi_app = wsgi_app
        self.retry_after = str(POLL_INTERVAL_SECONDS)
        self.stop_polling = Response(status=STOP_POLLING).status

    def __call__(self, environ, start_response):
        answer = security = None
        if environ["REQUEST_METHOD"] == "GET" and not environ.get("QUERY_STRING"):
            security = shortcut_headers(self.app, environ)  # None: HTTP where HTTPS is forced
            answer = None if security is None else self._answer(environ)
        if answer is None:
            return self.wsgi_app(environ, start_response)
        status, headers, body = answer
        start_response(status, headers + security)
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
            if not count_poll(self.app, entry.owner):
                return None
            environ[POLL_HIT] = (STATUS, "memory", "api.status")
            return self._status(entry, environ)
        if (match := PARTIAL_PATH.fullmatch(path)) and environ.get("HTTP_HX_REQUEST"):
            entry = near.get(PARTIAL, int(match[1]))
            if entry is None or sends_bearer(environ.get("HTTP_AUTHORIZATION", "")):
                return None
            if near.account_of_session(self._session_cookie(environ)) != entry.owner:
                return None
            if not count_poll(self.app, entry.owner):
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

    def _session_cookie(self, environ) -> str | None:
        """The request's session cookie as sent; the near cache knows the ones the app vouched
        for (signature and session generation checked, see `_session_of`)."""
        return parse_cookie(environ.get("HTTP_COOKIE", "")).get(
            self.app.config["SESSION_COOKIE_NAME"]
        )


def remember(kind: str, assessment_id: int, version: int | None, owner: int, *,
             etag: str = "", finished: bool, content: str) -> None:  # fmt: skip
    """Keep an answer the ordinary path built: in Redis for every process, and in this one."""
    status_cache.store(
        kind, assessment_id, version, owner, etag=etag, finished=finished, content=content
    )
    if version is not None:
        entry = Entry(version, owner, etag, finished, content)
        near_cache(current_app._get_current_object()).put(g.get("near_ticket"), kind, entry)
    if kind == PARTIAL:
        _session_of(owner, g.get("near_ticket"))


def _session_of(owner: int, ticket) -> bool:
    """True when this request's browser session is the owner's, current generation included.

    A cookie this process vouched for answers without SQL; any other is checked by Flask-Login
    (webapp.auth.load_user) and, if it is the owner's, vouched for, so the next poll with it
    can be answered from memory (PollShortcut) until the account's sessions end.
    """
    cookie = request.cookies.get(current_app.config["SESSION_COOKIE_NAME"], "")
    near = near_cache(current_app._get_current_object())
    if sends_bearer(request.headers.get("Authorization", "")):
        return False  # judged by the header alone: the ordinary path answers
    if cookie and near.account_of_session(cookie) == owner:
        return True
    if not current_user.is_authenticated or current_user.id != owner:
        return False
    checked_at = g.get("session_checked_at")  # set by the session check (auth.load_user)
    if checked_at is not None and not authenticated_by_token():
        near.put_session(ticket, cookie, owner, checked_at)
    return True


def _respond(kind: str, content: str, etag: str, finished: bool):
    if kind == STATUS:
        from webapp.api.assessments import status_response

        return status_response(content, etag, finished)
    from webapp.views.progress import partial_response

    return partial_response(content, finished)


def count_poll(app: Flask, account: int) -> bool:
    """Count a poll answered before Flask in the account's poll bucket: True while within it.

    Every poll is counted on its own, in Flask-Limiter's own storage and key (one INCR round
    trip to the shared Redis), so any number of web processes stop together at the limit.
    False (over the limit, or Redis unreachable): the app answers, and refuses where due.
    """
    if not app.config["RATELIMIT_ENABLED"]:
        return True
    limiter: Limiter = app.extensions["scoreline_limiter"]
    identifiers = _identifiers(app.config["RATELIMIT_KEY_PREFIX"], f"account:{account}")
    try:
        return all(
            limiter.limiter.hit(item, *identifiers)
            for item in _parse(app.config["RATE_LIMIT_POLL"])
        )
    except (redis.RedisError, OSError):
        return False


def _identifiers(key_prefix: str, client: str) -> list[str]:
    """What Flask-Limiter keys a poll-bucket hit by (it leaves out an empty prefix)."""
    return [*([key_prefix] if key_prefix else []), client, "poll"]


@lru_cache(maxsize=16)
def _parse(limits: str) -> tuple:
    return tuple(parse_many(limits))


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
    for item in _parse(limits):
        key = storage_prefix + item.key_for(*_identifiers(key_prefix, f"account:{marker}"))
        before, after = key.split(marker)
        out.append((before, after, item.get_expiry(), item.amount))
    return out
