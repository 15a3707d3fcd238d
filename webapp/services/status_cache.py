"""What a poll shows, cached in Redis per assessment, and never stale.

Polls outnumber changes by far: a progress page asks every 2 s, a stage changes a few times in a
run. So the answer to a poll (the status JSON, the htmx progress partial) is built once per change
and kept in Redis, where every web process finds it.

Freshness comes from a version number per assessment, not from a timeout:

- every commit that touches an assessment, one of its operations, stage runs or history rows
  bumps the assessment's version, right after the commit (SQLAlchemy session events, so no code
  path can forget; the few bulk UPDATEs call `touch`);
- an entry records the version it was built from, read *before* the database was;
- a read fetches the entry and the current version in the same round trip (one Lua script)
  and uses the entry only if they match.

A change is therefore seen by the next poll, whichever process made it, and an entry built from
a snapshot older than a change is never taken for current, even if it was written after the
bump. While one request rebuilds a stale entry (at most REBUILD_MS, under one poll interval) the
others get the previous answer rather than all rebuilding at once. When Redis is unreachable
every poll simply takes the database path.
"""

from __future__ import annotations

import logging

import redis
from flask import has_app_context
from sqlalchemy import event, inspect, select
from sqlalchemy.orm import Session

from webapp.models import Assessment, HistoryEvent, Operation, StageRun

log = logging.getLogger(__name__)

ENTRY_TTL = 60  # rebuilt once a minute at most; bounds staleness if an invalidation is lost
VERSION_TTL = 86400  # longer than any entry, so a version never resets under a live entry
PENDING = "status_cache_touched"  # session.info: assessment ids changed in this transaction

STATUS = "status"  # the JSON of GET /api/v1/assessments/{id}/status
PARTIAL = "partial"  # the htmx progress partial
KINDS = (STATUS, PARTIAL)
CHANNEL = "scoreline:poll-changes"  # bumps and token revocations, for the near caches


def entry_key(kind: str, assessment_id: int) -> str:
    return f"scoreline:poll:{kind}:{assessment_id}"


def lock_key(kind: str, assessment_id: int) -> str:
    return f"scoreline:poll-build:{kind}:{assessment_id}"


def version_key(assessment_id: int) -> str:
    return f"scoreline:poll-version:{assessment_id}"


def _redis() -> redis.Redis:
    from webapp.queues import get_redis

    return get_redis()


# One round trip: the entry if it is current, the owner check (the bearer token's account, or
# the session's user given in ARGV[3]) and the rate-limit count as well. Returns {hit, version,
# owner, etag, finished, content}; hit is 0 for a miss (the caller builds the entry), a stale
# entry, someone else's poll, or a poll over the limit (the ordinary path then answers, and
# refuses with 429 where due).
#
# A stale entry is rebuilt by one request only: the first to find it stale takes a short build
# lock and builds; while the lock lives (REBUILD_MS, less than one poll interval) the others get
# the previous answer (hit 2) instead of all rebuilding at once. So no poll waits on another,
# and no answer is older than the change by more than REBUILD_MS.
#
# Keys of the limit counters are built here from the caller's account, so this needs a single
# Redis server (not Redis Cluster).
READ_SCRIPT = """
local e = redis.call('HMGET', KEYS[1], 'v', 'owner', 'etag', 'finished', 'content')
local version = redis.call('GET', KEYS[2]) or '0'
local hit = 1
if not e[1] then return {0, version} end
if e[1] ~= version then
  if redis.call('SET', KEYS[3], version, 'PX', ARGV[1], 'NX') then return {0, version} end
  hit = 2
end
local account = ARGV[3]
if #KEYS == 4 then account = redis.call('GET', KEYS[4]) end
if account ~= e[2] then return {0, version} end
for i = 0, tonumber(ARGV[2]) - 1 do
  local key = ARGV[4 + 4 * i] .. account .. ARGV[5 + 4 * i]
  redis.call('SET', key, 0, 'EX', ARGV[6 + 4 * i], 'NX')
  if redis.call('INCR', key) > tonumber(ARGV[7 + 4 * i]) then return {0, version} end
end
return {hit, version, e[2], e[3], e[4], e[5]}
"""
REBUILD_MS = 1000


def read(kind: str, assessment_id: int, limits=(), *, token_key: str | None = None,
         account: str = "") -> list:  # fmt: skip
    """Run the read script for the caller: the account named by `token_key` (a bearer token's
    cache key) or `account` (the session's user id). The entry is used only if that account
    owns it, and the poll is counted in each of `limits`: (key before the account id, key
    after it, window seconds, amount)."""
    from webapp.queues import lua_script

    keys = [
        entry_key(kind, assessment_id),
        version_key(assessment_id),
        lock_key(kind, assessment_id),
    ]
    if token_key is not None:
        keys.append(token_key)
    args = [REBUILD_MS, len(limits), account, *(part for limit in limits for part in limit)]
    return lua_script(READ_SCRIPT)(keys=keys, args=args)


def current_version(assessment_id: int) -> int | None:
    """The version to build an entry from (read before the database); None without Redis."""
    try:
        return int(_redis().get(version_key(assessment_id)) or 0)
    except redis.RedisError:
        return None


def store(kind: str, assessment_id: int, version: int | None, owner_id: int, *, etag: str = "",
          finished: bool, content: str) -> None:  # fmt: skip
    """Keep what a poll showed, stamped with the version it was built from."""
    if version is None:
        return
    key = entry_key(kind, assessment_id)
    fields = {"v": version, "owner": owner_id, "etag": etag, "finished": int(finished),
              "content": content}  # fmt: skip
    try:
        pipe = _redis().pipeline(transaction=True)
        pipe.delete(key)
        pipe.hset(key, mapping=fields)
        pipe.expire(key, ENTRY_TTL)
        pipe.delete(lock_key(kind, assessment_id))
        pipe.execute()
    except redis.RedisError:
        log.debug("poll cache: Redis unreachable; entry for %s not kept", assessment_id)


def touch(session: Session, assessment_id: int | None) -> None:
    """Mark an assessment changed in this transaction (for bulk UPDATEs the ORM doesn't see)."""
    if assessment_id is not None:
        session.info.setdefault(PENDING, set()).add(assessment_id)


# Versions this process could not bump (Redis unreachable); retried with the next bump.
_unbumped: set[int] = set()


# INCR each version, keep it a day, and announce the new versions in one message (atomically,
# so a subscriber never sees a version before it exists). ARGV: channel, TTL, then the ids.
BUMP_SCRIPT = """
local out = {}
for i, key in ipairs(KEYS) do
  local v = redis.call('INCR', key)
  redis.call('EXPIRE', key, ARGV[2])
  out[i] = ARGV[2 + i] .. ':' .. v
end
redis.call('PUBLISH', ARGV[1], 'v ' .. table.concat(out, ' '))
return out
"""


def bump(assessment_ids) -> None:
    """Advance the versions: every cached poll answer of these assessments is now stale."""
    ids = sorted(set(assessment_ids) | _unbumped)
    if not ids or not has_app_context():
        return
    from flask import current_app

    try:
        from webapp.queues import lua_script

        bump_script = lua_script(BUMP_SCRIPT)
        pairs = bump_script(keys=[version_key(i) for i in ids], args=[CHANNEL, VERSION_TTL, *ids])
    except redis.RedisError:
        # Polls take the database path while Redis is away; entries it kept are stale until
        # this bump succeeds (the next commit here retries it) or they expire (ENTRY_TTL).
        log.warning("poll cache: Redis unreachable; will invalidate %s later", ids)
        _unbumped.update(ids)
        return
    _unbumped.difference_update(ids)
    near = current_app.extensions.get("near_cache")
    if near is not None:
        near.bumped({int(a): int(v) for a, v in (p.decode().split(":") for p in pairs)})


def _assessment_of(session: Session, obj) -> int | None:
    """The assessment an ORM object belongs to, without loading anything new if possible."""
    if isinstance(obj, Assessment):
        return obj.id
    if isinstance(obj, (Operation, HistoryEvent)):
        return obj.assessment_id
    if isinstance(obj, StageRun):
        operation = inspect(obj).attrs.operation.loaded_value
        if isinstance(operation, Operation):
            return operation.assessment_id
        if obj.operation_id is None:
            return None
        return session.connection().scalar(
            select(Operation.assessment_id).where(Operation.id == obj.operation_id)
        )
    return None


@event.listens_for(Session, "after_flush")
def _collect(session: Session, _flush_context) -> None:
    for obj in (*session.new, *session.dirty, *session.deleted):
        if isinstance(obj, (Assessment, Operation, StageRun, HistoryEvent)):
            touch(session, _assessment_of(session, obj))


@event.listens_for(Session, "after_commit")
def _publish(session: Session) -> None:
    ids = session.info.pop(PENDING, None)
    if ids:
        bump(ids)


@event.listens_for(Session, "after_rollback")
def _forget(session: Session) -> None:
    session.info.pop(PENDING, None)
