"""Health checks: /healthz (the process is up) and /readyz (it can do its job)."""

from __future__ import annotations

import logging
from typing import Literal

import redis
from flask_openapi3 import APIBlueprint
from pydantic import BaseModel
from rq import Worker
from sqlalchemy import text

from webapp.extensions import db
from webapp.queues import get_redis
from webapp.secret_box import SecretsKeyError
from webapp.services.sealed_secrets import newest_sealed_secrets_open

log = logging.getLogger(__name__)
bp = APIBlueprint(
    "health",
    __name__,
    operation_id_callback=lambda *, name, **_route: name,
    abp_responses={"default": {"description": "An unexpected error (logged)."}},
)
ANYONE = [{}]  # no credentials needed


class Up(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    """Each check says `ok`, and when not, a `reason`."""

    status: Literal["ready", "not ready"]
    checks: dict[str, dict[str, bool | int | str]]


@bp.get("/healthz", security=ANYONE, responses={200: Up})
def healthz():
    """The process is up (no dependencies checked)."""
    return {"status": "ok"}


@bp.get(
    "/readyz",
    security=ANYONE,
    responses={200: Readiness, 503: Readiness},
)
def readyz():
    """Database, Redis, at least one live worker and a SECRETS_KEY that opens the stored
    secrets; 503 with the reasons when any is missing."""
    checks = {"database": _database(), "redis": _redis()}
    checks["secrets"] = (
        _secrets() if checks["database"]["ok"] else _skipped("the database is unreachable")
    )
    checks["workers"] = _workers() if checks["redis"]["ok"] else _skipped("Redis is unreachable")
    ready = all(check["ok"] for check in checks.values())
    body = {"status": "ready" if ready else "not ready", "checks": checks}
    return body, 200 if ready else 503


def _database() -> dict:
    """Can we run a query?"""
    try:
        db.session.execute(text("SELECT 1"))
        return {"ok": True}
    except Exception as exc:  # any driver error means "not ready"; say which
        db.session.rollback()
        log.warning("readyz: database check failed: %s", exc)
        return {"ok": False, "reason": f"database unreachable: {type(exc).__name__}"}


def _secrets() -> dict:
    """Does SECRETS_KEY open the newest stored secrets (a host with another key cannot sign)?"""
    try:
        newest_sealed_secrets_open()
        return {"ok": True}
    except SecretsKeyError:
        return {
            "ok": False,
            "reason": "stored signing secrets cannot be decrypted with SECRETS_KEY",
        }


def _redis() -> dict:
    """Does Redis answer?"""
    try:
        get_redis().ping()
        return {"ok": True}
    except redis.RedisError as exc:
        return {"ok": False, "reason": f"Redis unreachable: {type(exc).__name__}"}


def _workers() -> dict:
    """Is at least one worker registered (its key expires when it stops heartbeating)?"""
    try:
        workers = Worker.all(connection=get_redis())
    except redis.RedisError as exc:
        return {"ok": False, "reason": f"cannot list workers: {type(exc).__name__}"}
    if not workers:
        return {"ok": False, "count": 0, "reason": "no live worker: start `python -m worker`"}
    return {"ok": True, "count": len(workers)}


def _skipped(reason: str) -> dict:
    """A check that could not run."""
    return {"ok": False, "reason": reason}
