"""Who is asking: a browser session (Flask-Login) or an `Authorization: Bearer` API token."""

from __future__ import annotations

import logging
from datetime import timedelta

import redis
from flask import Flask, g, request
from sqlalchemy import select
from sqlalchemy.orm import joinedload

from webapp.extensions import db, login_manager
from webapp.models import ApiToken, User
from webapp.models.accounts import hash_token
from webapp.models.base import utcnow

log = logging.getLogger(__name__)

# Writing last_used_at on every poll would turn reads into writes; once a minute is enough.
LAST_USED_RESOLUTION = timedelta(minutes=1)
# Valid tokens are remembered in Redis (token hash -> account id) for the polling fast path.
TOKEN_CACHE_TTL = 300
# A revoked token's entry says so for longer than any remembered one lives, so a lookup that
# raced the revocation cannot put the token back.
REVOKED = b"revoked"


def init_app(app: Flask) -> None:
    """Wire the user loaders into Flask-Login."""
    login_manager.login_view = "auth.login"
    login_manager.login_message = "Please log in to continue."
    login_manager.login_message_category = "info"


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    """The user of a browser session."""
    try:
        return db.session.get(User, int(user_id))
    except ValueError:
        return None


@login_manager.request_loader
def load_user_from_bearer(req) -> User | None:
    """The user behind an `Authorization: Bearer <token>` header, if the token is valid."""
    header = req.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    row = db.session.scalar(
        select(ApiToken)
        .options(joinedload(ApiToken.user))
        .where(ApiToken.token_hash == hash_token(token.strip()), ApiToken.revoked_at.is_(None))
    )
    if row is None:
        return None
    remember_token(row.token_hash, row.user_id)
    g.auth_via_token = True
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:
        row.last_used_at = now
        db.session.commit()
    return row.user


def authenticated_by_token() -> bool:
    """True when this request authenticated with a bearer token rather than a session cookie."""
    return bool(g.get("auth_via_token")) or request.headers.get(
        "Authorization", ""
    ).lower().startswith("bearer ")


def bearer_token_hash(header: str) -> str | None:
    """The hash of the token in an `Authorization: Bearer` header, or None for anything else."""
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return hash_token(token)


def token_cache_key(token_hash: str) -> str:
    return f"scoreline:token:{token_hash}"


def cached_account(raw: bytes | None) -> int | None:
    """The account id a token-cache entry names; None if unknown or revoked."""
    if raw is None or raw == REVOKED:
        return None
    return int(raw)


def remember_token(token_hash: str, user_id: int) -> None:
    """Note a valid token for the fast path; never overwrites a revocation (SET NX)."""
    from webapp.queues import get_redis

    try:
        get_redis().set(token_cache_key(token_hash), user_id, ex=TOKEN_CACHE_TTL, nx=True)
    except redis.RedisError:
        log.debug("token cache: Redis unreachable")


def forget_token(token_hash: str) -> None:
    """A revoked token stops working at once on the fast paths too (call after the commit):
    its cache entry becomes a tombstone, and every process's near cache is told."""
    from flask import current_app

    from webapp.queues import get_redis
    from webapp.services.status_cache import CHANNEL

    near = current_app.extensions.get("near_cache")
    if near is not None:
        near.revoked(token_hash)
    try:
        pipe = get_redis().pipeline(transaction=True)
        pipe.set(token_cache_key(token_hash), REVOKED, ex=2 * TOKEN_CACHE_TTL)
        pipe.publish(CHANNEL, f"t {token_hash}")
        pipe.execute()
    except redis.RedisError:
        # The fast paths only serve a token with an entry, and near caches drop everything when
        # they lose Redis; a stale entry could outlive this outage by at most TOKEN_CACHE_TTL.
        log.warning("token cache: Redis unreachable; revoked token may be served from cache")
