"""Idempotency keys (SPEC 4): the rules, independent of HTTP plumbing.

A request with a key first *reserves* it: an INSERT that the unique constraint on
(account, key) lets exactly one of N concurrent requests win, on SQLite and PostgreSQL alike.
The winner runs and then *finishes* the key with its response, or *releases* it (5xx), so a retry
can run again. Everyone else gets the stored response, 409 while the winner runs, or 422 when
their request differs. A reservation older than IDEMPOTENCY_LOCK_TIMEOUT belongs to a request
that crashed and is taken over. Keys expire after IDEMPOTENCY_TTL and are pruned.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from webapp.errors import ScorelineError
from webapp.extensions import db
from webapp.models.base import utcnow
from webapp.models.idempotency import IdempotencyKey
from webapp.secret_box import seal

log = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
# Response headers worth replaying; everything else is per-response (Date, Server, ...).
REPLAYED_HEADERS = ("Content-Type", "Location")


class InvalidIdempotencyKey(ScorelineError):
    status, code, title = 400, "INVALID_IDEMPOTENCY_KEY", "Invalid idempotency key"


class IdempotencyKeyInUse(ScorelineError):
    status, code, title = 409, "IDEMPOTENCY_KEY_IN_USE", "Idempotency key in use"


class IdempotencyKeyReused(ScorelineError):
    status, code, title = 422, "IDEMPOTENCY_KEY_REUSED", "Idempotency key reused"


@dataclass(frozen=True)
class Reservation:
    """The right to run the request and store its response under a key."""

    record_id: int
    token: str


@dataclass(frozen=True)
class StoredResponse:
    """The first request's answer, to replay."""

    status: int
    body: str
    headers: dict[str, str]


def parse_key(value: str | None) -> str | None:
    """The key of an `Idempotency-Key` header, quoted (`"k"`) or bare; None when absent.

    Raises InvalidIdempotencyKey unless it is 1-255 printable ASCII characters.
    """
    if value is None:
        return None
    key = value.strip()
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not all(" " <= ch <= "~" for ch in key):
        raise InvalidIdempotencyKey(
            f"{HEADER} must be 1 to {MAX_KEY_LENGTH} printable ASCII characters, "
            'bare or in double quotes (for example "3f2c6a0e-...").'
        )
    return key


def canonical_body(raw: bytes) -> bytes:
    """JSON with sorted keys and no whitespace; an empty body stays empty, non-JSON stays as is."""
    if not raw.strip():
        return b""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return raw
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def fingerprint(method: str, path: str, body: bytes) -> str:
    """SHA-256 of the method, the path and the canonical JSON body."""
    digest = hashlib.sha256()
    for part in (method.upper().encode(), path.encode(), canonical_body(body)):
        digest.update(len(part).to_bytes(8, "big"))  # length-prefixed: no ambiguous joins
        digest.update(part)
    return digest.hexdigest()


def reserve(
    user_id: int, key: str, request_fingerprint: str, *, method: str, path: str
) -> Reservation | StoredResponse:
    """Reserve the key for this request, or return the stored response to replay.

    Raises IdempotencyKeyReused when the key was used with another request, and
    IdempotencyKeyInUse while the request that holds it is still running.
    """
    ttl = timedelta(seconds=current_app.config["IDEMPOTENCY_TTL"])
    lock_timeout = timedelta(seconds=current_app.config["IDEMPOTENCY_LOCK_TIMEOUT"])
    # Start from a clean transaction: the INSERT must be its statement, and nothing the request
    # did so far may ride along with its commit.
    db.session.rollback()
    for _ in range(3):  # a row can vanish between our INSERT and SELECT (expiry, release)
        now = utcnow()
        token = secrets.token_hex(16)
        try:
            result = db.session.execute(
                insert(IdempotencyKey).values(
                    user_id=user_id,
                    key=key,
                    fingerprint=request_fingerprint,
                    method=method,
                    path=path,
                    lock_token=token,
                    locked_at=now,
                    created_at=now,
                    expires_at=now + ttl,
                )
            )
            db.session.commit()
            return Reservation(result.inserted_primary_key[0], token)
        except IntegrityError:
            db.session.rollback()
        existing = db.session.scalar(
            select(IdempotencyKey).where(
                IdempotencyKey.user_id == user_id, IdempotencyKey.key == key
            )
        )
        if existing is None:
            continue
        if existing.expires_at <= now:
            _delete_expired(existing.id, now)
            continue
        if existing.fingerprint != request_fingerprint:
            db.session.rollback()
            raise IdempotencyKeyReused(
                f"This {HEADER} was used with a different request "
                f"({existing.method} {existing.path} or another body); use a new key."
            )
        if existing.finished:
            stored = StoredResponse(
                existing.status_code, existing.response_body or "", existing.response_headers or {}
            )
            db.session.rollback()
            return stored
        if existing.locked_at > now - lock_timeout:
            db.session.rollback()
            raise IdempotencyKeyInUse(
                f"A request with this {HEADER} is still running; retry in a moment."
            )
        taken = _take_over(existing, now)
        if taken is not None:
            return taken
    raise IdempotencyKeyInUse(f"A request with this {HEADER} is still running; retry in a moment.")


def _delete_expired(record_id: int, now: datetime) -> None:
    """Forget an expired key so it can be used afresh."""
    db.session.execute(
        delete(IdempotencyKey).where(
            IdempotencyKey.id == record_id, IdempotencyKey.expires_at <= now
        )
    )
    db.session.commit()


def _take_over(stale: IdempotencyKey, now: datetime) -> Reservation | None:
    """Take over the lock of a request that crashed; None if someone else was faster."""
    token = secrets.token_hex(16)
    result = db.session.execute(
        update(IdempotencyKey)
        .where(
            IdempotencyKey.id == stale.id,
            IdempotencyKey.status_code.is_(None),
            IdempotencyKey.lock_token == stale.lock_token,
        )
        .values(lock_token=token, locked_at=now)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    if result.rowcount != 1:
        return None
    log.warning("idempotency key %s: took over the lock of a request that did not finish", stale.id)
    return Reservation(stale.id, token)


def finish(reservation: Reservation, status: int, body: str, headers: dict[str, str]) -> None:
    """Store the response, sealed, under the key (only the lock holder can); failures are logged.

    The response has been produced already, so a failure to store it must not turn it into an
    error: the lock then expires and a retry runs again.
    """
    try:
        db.session.rollback()  # never commit whatever the request left uncommitted
        db.session.execute(
            update(IdempotencyKey)
            .where(
                IdempotencyKey.id == reservation.record_id,
                IdempotencyKey.lock_token == reservation.token,
                IdempotencyKey.status_code.is_(None),
            )
            .values(
                status_code=status,
                sealed_response_body=seal(body),
                response_headers=headers,
                completed_at=utcnow(),
            )
            .execution_options(synchronize_session=False)
        )
        db.session.commit()
    except SQLAlchemyError:
        db.session.rollback()
        log.exception("idempotency key %s: response not stored", reservation.record_id)


def release(reservation: Reservation) -> None:
    """Give the key back unused (the request failed with a 5xx or never finished)."""
    try:
        db.session.rollback()
        db.session.execute(
            delete(IdempotencyKey).where(
                IdempotencyKey.id == reservation.record_id,
                IdempotencyKey.lock_token == reservation.token,
                IdempotencyKey.status_code.is_(None),
            )
        )
        db.session.commit()
    except SQLAlchemyError:
        db.session.rollback()
        log.exception("idempotency key %s: not released; its lock expires", reservation.record_id)


def prune_expired(now: datetime | None = None) -> int:
    """Delete keys past their TTL; returns how many."""
    result = db.session.execute(
        delete(IdempotencyKey).where(IdempotencyKey.expires_at <= (now or utcnow()))
    )
    db.session.commit()
    return result.rowcount or 0
