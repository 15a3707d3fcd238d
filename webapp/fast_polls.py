"""The hot path of polling: a status poll or a progress partial answered from Redis, no SQL.

Every open progress page asks every 2 s, so these two endpoints carry most of the traffic. This
hook runs first for them (ahead of the rate limiter) and answers when everything it needs is in
Redis and current, in one round trip (a Lua script, services/status_cache.READ_SCRIPT) that
reads the cached answer and the assessment's version and, for a bearer token, checks that the
token's account (see auth.remember_token) owns the assessment and counts the poll in the
account's poll bucket, the very counter Flask-Limiter uses.

Anything else (no entry, a stale one, someone other than the owner, a revoked or unknown token,
over the limit, Redis down) returns None, and the request takes the ordinary path, which answers
(or refuses) and caches what it built for the next poll.
"""

from __future__ import annotations

from functools import lru_cache

import redis
from flask import Flask, current_app, g, request, session
from flask_limiter import Limiter
from limits import parse_many

from webapp.auth import bearer_token_hash, token_cache_key
from webapp.services import status_cache
from webapp.services.status_cache import PARTIAL, STATUS

ENDPOINTS = {"api.status": STATUS, "progress.live": PARTIAL}


def init_app(app: Flask) -> None:
    """Register the hook; call before the rate limiter's init so it runs ahead of it."""
    app.before_request(answer_from_cache)


def answer_from_cache():
    kind = ENDPOINTS.get(request.endpoint)
    if kind is None or request.method != "GET":
        return None
    assessment_id = request.view_args["assessment_id"]
    try:
        if kind == STATUS:
            token_hash = bearer_token_hash(request.headers.get("Authorization", ""))
            if token_hash is None:
                return None
            answer = status_cache.read(
                kind, assessment_id, token_cache_key(token_hash), poll_limits()
            )
        elif request.headers.get("HX-Request"):
            answer = status_cache.read(kind, assessment_id)
        else:
            return None
    except redis.RedisError:
        return None
    # The version read before any SQL: what the ordinary path stamps its new entry with.
    g.poll_version = int(answer[1])
    if not answer[0]:
        return None
    _hit, _version, owner, etag, finished, content = answer
    if kind == STATUS:
        from webapp.api.assessments import status_response

        return status_response(content, etag.decode(), finished == b"1")
    if owner.decode() != session.get("_user_id"):  # Flask-Login's key for the user id
        return None
    from webapp.views.progress import partial_response

    return partial_response(content, finished == b"1")


def poll_limits() -> list[tuple[str, str, int, int]]:
    """Each poll limit as (key before the account id, key after it, window s, amount), the
    keys Flask-Limiter counts the account's poll bucket in; empty when limits are off."""
    if not current_app.config["RATELIMIT_ENABLED"]:
        return []
    limiter: Limiter = current_app.extensions["scoreline_limiter"]
    return _poll_limits(
        limiter.storage.prefixed_key(""),
        current_app.config["RATELIMIT_KEY_PREFIX"],
        current_app.config["RATE_LIMIT_POLL"],
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
