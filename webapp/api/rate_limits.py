"""Rate limits on the API (SPEC 8): Flask-Limiter on the shared Redis, per account.

Three buckets, each per account (bearer token or session alike; per IP address when anonymous)
and shared by every endpoint in it, in fixed one-minute windows:

- poll (RATE_LIMIT_POLL, default 240/minute): status, operations, history, recent events, and
  the htmx progress partial. Polling every 2 s is 30 a minute per tab, so eight tabs fit.
- write (RATE_LIMIT_WRITE, default 30/minute): every POST (create, submit, rescore, ...).
- default (RATE_LIMIT_DEFAULT, default 300/minute): everything else.

Over the limit: 429 RATE_LIMITED problem+json with `Retry-After` (seconds to the window's end).
A request costs one Redis round trip (an INCR-and-EXPIRE script); headers are not computed.
Polls answered from memory before Flask (webapp/fast_polls.py) are counted against the limits
this limiter counted the account's last poll against (`Limiter.current_limits`), with its own
strategy and storage, before they are answered and a few at a time (`fast_polls.Leases`), so
several web processes together never pass the limit.
"""

from __future__ import annotations

import logging
from pathlib import Path

from flask import Flask, current_app, request
from flask_limiter import Limiter, RateLimitExceeded
from flask_login import current_user
from limits import parse_many

from webapp.api.blueprint import api_bp
from webapp.api.problems import problem
from webapp.extensions import seconds_to_retry
from webapp.queues import redis_url

log = logging.getLogger(__name__)

BUCKETS = ("poll", "write", "default")
# The endpoints clients poll while work runs.
POLL_ENDPOINTS = frozenset(
    {
        "api.status",
        "api.show_operation",
        "api.assessment_history",
        "api.recent_events",
        "progress.live",  # the htmx progress partial: the same bucket as the status poll
    }
)


def bucket() -> str:
    """Which bucket the current request counts against."""
    if request.endpoint in POLL_ENDPOINTS:
        return "poll"
    if request.method == "POST":
        return "write"
    return "default"


def client_key() -> str:
    """Who is counted: the account, or the IP address of an anonymous client."""
    if current_user.is_authenticated:
        return f"account:{current_user.id}"
    return f"ip:{request.remote_addr or 'unknown'}"


def current_limit() -> str:
    """The limit of the current request's bucket, from the app's config; integration accounts
    have their own (RATE_LIMIT_INTEGRATION_*)."""
    integration = current_user.is_authenticated and current_user.is_integration
    prefix = "RATE_LIMIT_INTEGRATION_" if integration else "RATE_LIMIT_"
    return current_app.config[f"{prefix}{bucket().upper()}"]


def request_cost() -> int:
    """What a request counts: a batch submit one per item (so batches cannot multiply the
    write limit), anything else one."""
    if request.endpoint != "api.batch_submit":
        return 1
    body = request.get_json(silent=True)
    items = body.get("items") if isinstance(body, dict) else None
    return max(1, min(len(items), 100)) if isinstance(items, list) else 1


def storage_uri(app: Flask) -> str:
    """The app's Redis in the `limits` notation (a unix socket is `redis+unix://`)."""
    # Without REDIS_URL, webapp.queues.redis_url() starts the embedded server on this socket.
    url = app.config.get("REDIS_URL") or f"unix://{Path(app.instance_path) / 'redis.sock'}"
    if url.startswith("unix://"):
        return "redis+unix://" + url[len("unix://") :]
    return url


def init_app(app: Flask) -> Limiter:
    """Bind a Limiter to this app and limit the API blueprint and the polled progress partial.

    Call after the blueprints are registered.

    Each app gets its own Limiter because Flask-Limiter keeps its storage on the instance (and
    tests build several apps). When Redis is unreachable the limits are counted in memory
    instead, so the API, submit included, keeps working.
    """
    names = [f"RATE_LIMIT_{kind}{b.upper()}" for kind in ("", "INTEGRATION_") for b in BUCKETS]
    for name in names:
        try:
            parse_many(app.config[name])
        except ValueError as exc:
            raise RuntimeError(f"{name} is not a rate limit: {app.config[name]!r}") from exc
    app.config.setdefault("RATELIMIT_ENABLED", app.config["RATE_LIMIT_ENABLED"])
    app.config.setdefault("RATELIMIT_STORAGE_URI", storage_uri(app))
    app.config.setdefault(
        "RATELIMIT_STORAGE_OPTIONS", {"socket_connect_timeout": 1, "socket_timeout": 2}
    )
    app.config.setdefault("RATELIMIT_KEY_PREFIX", "scoreline")
    app.config.setdefault("RATELIMIT_IN_MEMORY_FALLBACK_ENABLED", True)
    app.config.setdefault("RATELIMIT_SWALLOW_ERRORS", True)

    @app.before_request
    def _start_embedded_redis():
        # Registered before the limiter's hook: the embedded server starts on first use.
        if not app.config.get("REDIS_URL"):
            redis_url(app)

    limiter = Limiter(client_key, strategy="fixed-window", headers_enabled=False)
    limiter.shared_limit(current_limit, scope=lambda _endpoint: bucket(), cost=request_cost)(api_bp)
    # Of the HTML pages only the polled partial is limited (a page load is not a poll).
    limiter.shared_limit(
        current_limit,
        scope=lambda _endpoint: bucket(),
        exempt_when=lambda: request.endpoint not in POLL_ENDPOINTS,
    )(app.blueprints["progress"])
    limiter.init_app(app)
    app.extensions["scoreline_limiter"] = limiter  # the poll shortcut counts polls with it

    @app.errorhandler(RateLimitExceeded)
    def _rate_limited(exc: RateLimitExceeded):
        retry_after = seconds_to_retry(limiter)
        return problem(
            429,
            "RATE_LIMITED",
            "Too many requests",
            f"At most {exc.limit.limit} {bucket()} requests per account; retry in {retry_after} s.",
            headers={"Retry-After": str(retry_after)},
        )

    return limiter
