"""The bulkhead: how many attempts may wait on one target at once, so a slow one can't take
every worker.

A target (an endpoint, or an assessment's callback) that recently answered 2xx quickly may have
up to FAST_IN_FLIGHT attempts out at once; any other (new, failing, slow or hanging) gets one.
An attempt that finds its target's slots taken is deferred, not made: its delivery waits in the
target's line in Redis (no attempt is counted), and each attempt that ends wakes the next one in
line. Slots are leases: a worker killed mid-request frees its slot when the lease runs out, and
the watchdog wakes a line nobody is draining (`wake_stalled`).

Keys (Redis): `webhooks:inflight:<target>` (sorted set: job id -> lease end), `webhooks:fast:
<target>` (present while the target is known fast), `webhooks:line:<target>` (list of
"delivery_id job_id"), `webhooks:deferred` (set of the job ids in some line, for the watchdog).
"""

from __future__ import annotations

import logging
import time

import redis

from webapp.queues import get_redis, lua_script

log = logging.getLogger(__name__)

FAST_IN_FLIGHT = 8  # attempts at once for a target known to answer quickly
FAST_SECONDS = 1.0  # a 2xx within this (or half the timeout, if less) marks the target fast
FAST_TTL = 300  # seconds a target stays known fast without another fast answer
LEASE_MARGIN = 10  # seconds a slot outlives the request timeout (then it is free again)
LINE_TTL = 30 * 86400
DEFERRED = "webhooks:deferred"

# KEYS: inflight, fast, line, deferred. ARGV: now, lease end, job id, fast limit, line entry
# ("" to only try). Returns 1 when the slot is taken for the job, 0 when it was put in line.
_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local limit = 1
if redis.call('EXISTS', KEYS[2]) == 1 then limit = tonumber(ARGV[4]) end
if redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
  redis.call('EXPIREAT', KEYS[1], math.ceil(tonumber(ARGV[2])))
  return 1
end
if ARGV[5] ~= '' then
  redis.call('RPUSH', KEYS[3], ARGV[5])
  redis.call('EXPIRE', KEYS[3], tonumber(ARGV[6]))
  redis.call('SADD', KEYS[4], ARGV[3])
end
return 0
"""
# KEYS: inflight and fast key of each target. ARGV: now, lease end, job id, fast limit.
# Takes a slot of each target that has one free; returns 1 (taken) or 0 per target.
_ACQUIRE_ALL = """
local out = {}
for i = 1, #KEYS, 2 do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', ARGV[1])
  local limit = 1
  if redis.call('EXISTS', KEYS[i + 1]) == 1 then limit = tonumber(ARGV[4]) end
  if redis.call('ZCARD', KEYS[i]) < limit then
    redis.call('ZADD', KEYS[i], ARGV[2], ARGV[3])
    redis.call('EXPIREAT', KEYS[i], math.ceil(tonumber(ARGV[2])))
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
"""
# KEYS: inflight, fast, line, deferred. ARGV: now, job id ("" to free nothing), fast limit,
# how the target answered ("fast", "slow" or ""), fast TTL. Frees the job's slot and returns
# the line entries that may now go (one per free slot).
_RELEASE = """
if ARGV[2] ~= '' then redis.call('ZREM', KEYS[1], ARGV[2]) end
if ARGV[4] == 'fast' then redis.call('SET', KEYS[2], 1, 'EX', tonumber(ARGV[5])) end
if ARGV[4] == 'slow' then redis.call('DEL', KEYS[2]) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local limit = 1
if redis.call('EXISTS', KEYS[2]) == 1 then limit = tonumber(ARGV[3]) end
local free = limit - redis.call('ZCARD', KEYS[1])
local woken = {}
while free > 0 do
  local entry = redis.call('LPOP', KEYS[3])
  if not entry then break end
  local job = string.match(entry, ' (.+)$')
  redis.call('SREM', KEYS[4], job)
  table.insert(woken, entry)
  free = free - 1
end
return woken
"""


def target_key(endpoint_id: int | None, callback_id: int | None) -> str:
    """`endpoint:<id>` or `callback:<id>`: whom the slots and the line belong to."""
    return f"endpoint:{endpoint_id}" if endpoint_id is not None else f"callback:{callback_id}"


def _keys(target: str) -> list[str]:
    return [f"webhooks:inflight:{target}", f"webhooks:fast:{target}",
            f"webhooks:line:{target}", DEFERRED]  # fmt: skip


def acquire(target: str, job_id: str, timeout: float, *, line_entry: str = "") -> bool:
    """Take a slot of `target` for `job_id` (True); else put `line_entry` in line (False).

    Fails open: with Redis unreachable the attempt goes ahead without a slot.
    """
    now = time.time()
    try:
        taken = lua_script(_ACQUIRE)(
            keys=_keys(target),
            args=[now, now + timeout + LEASE_MARGIN, job_id, FAST_IN_FLIGHT, line_entry, LINE_TTL],
        )
    except redis.RedisError:
        log.warning("bulkhead: Redis unreachable; attempting %s without a slot", job_id)
        return True
    return bool(taken)


def acquire_all(targets: list[str], job_id: str, timeout: float) -> list[bool]:
    """Take a slot of each target for `job_id`, in one round trip: True where one was free.

    Fails open, as `acquire` does.
    """
    now = time.time()
    keys = [key for target in targets for key in _keys(target)[:2]]
    try:
        taken = lua_script(_ACQUIRE_ALL)(
            keys=keys, args=[now, now + timeout + LEASE_MARGIN, job_id, FAST_IN_FLIGHT]
        )
    except redis.RedisError:
        log.warning("bulkhead: Redis unreachable; attempting %s without slots", job_id)
        return [True] * len(targets)
    return [bool(flag) for flag in taken]


def release(target: str, job_id: str, *, fast: bool | None) -> list[tuple[int, str]]:
    """Free the job's slot and note how the target answered (fast True / slow False / unknown
    None); returns the (delivery id, job id) pairs in line that may go now."""
    keys = _keys(target)
    try:
        answered = {True: "fast", False: "slow", None: ""}[fast]
        woken = lua_script(_RELEASE)(
            keys=keys, args=[time.time(), job_id, FAST_IN_FLIGHT, answered, FAST_TTL]
        )
    except redis.RedisError:
        log.warning("bulkhead: Redis unreachable; the line of %s waits for the watchdog", target)
        return []
    return [_parse(entry) for entry in woken]


def forget(target: str) -> None:
    """Forget that `target` answered quickly: its URL changed, or it was deleted (and SQLite
    may give its id to the next endpoint created). It starts again with one slot."""
    try:
        get_redis().delete(f"webhooks:fast:{target}")
    except redis.RedisError:
        log.warning("bulkhead: Redis unreachable; %s stays known fast until FAST_TTL", target)


def line_entry(delivery_id: int, job_id: str) -> str:
    return f"{delivery_id} {job_id}"


def _parse(entry: bytes | str) -> tuple[int, str]:
    text = entry.decode() if isinstance(entry, bytes) else entry
    delivery_id, job_id = text.split(" ", 1)
    return int(delivery_id), job_id


def in_line(job_ids: list[str]) -> set[str]:
    """Which of these job ids wait in some target's line (alive, for the watchdog)."""
    if not job_ids:
        return set()
    flags = get_redis().smismember(DEFERRED, job_ids)
    return {job_id for job_id, flag in zip(job_ids, flags, strict=True) if flag}


def wake_stalled() -> list[tuple[int, str]]:
    """Entries of lines whose slots are free (their holder died, or its lease ran out)."""
    client = get_redis()
    woken = []
    for key in client.scan_iter(match="webhooks:line:*", count=100):
        target = (key.decode() if isinstance(key, bytes) else key).removeprefix("webhooks:line:")
        woken += [
            _parse(e)
            for e in lua_script(_RELEASE)(
                keys=_keys(target), args=[time.time(), "", FAST_IN_FLIGHT, "", FAST_TTL]
            )
        ]
    return woken


def fast_threshold(timeout: float) -> float:
    """The answer time under which a 2xx marks a target fast."""
    return min(FAST_SECONDS, timeout / 2)
