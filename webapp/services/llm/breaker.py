"""The circuit breaker in front of the LLM provider, shared by the fleet through Redis.

Closed: calls go. After `failures` consecutive outage-class failures (5xx, timeouts, refused
connections) anywhere in the fleet it opens: nobody calls until `cooldown` seconds have passed;
then one worker sends one probe (half-open). The probe's success closes it; its failure opens it
for another cooldown. Only outages count: a 429 is the rate limiter's business, a 400 the
request's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis

KEY = "scoreline:llm:breaker"
PROBE_KEY = "scoreline:llm:breaker:probe"

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"

# failures += 1; open (or re-open) when over the threshold or when already open (a failed probe).
_FAIL = """
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
redis.call('HSET', KEYS[1], 'reason', ARGV[3], 'failed_at', ARGV[1])
if state == 'open' or failures >= tonumber(ARGV[2]) then
  if state ~= 'open' then redis.call('HSET', KEYS[1], 'opened_at', ARGV[1]) end
  redis.call('HSET', KEYS[1], 'state', 'open', 'retry_at', tonumber(ARGV[1]) + tonumber(ARGV[4]))
  redis.call('DEL', KEYS[2])
  return 1
end
return 0
"""
# Close, unless already closed with no failures counted (the common case writes nothing).
_SUCCEED = """
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
local failures = tonumber(redis.call('HGET', KEYS[1], 'failures') or '0')
if state ~= 'closed' or failures > 0 then
  redis.call('HSET', KEYS[1], 'state', 'closed', 'failures', 0, 'closed_at', ARGV[1])
  redis.call('HDEL', KEYS[1], 'retry_at')
  redis.call('DEL', KEYS[2])
  return 1
end
return 0
"""


@dataclass
class Permission:
    """May a call go now? `probe` marks the one half-open trial call; `wait` when it may not."""

    allowed: bool
    probe: bool = False
    wait: float = 0.0


@dataclass
class CircuitBreaker:
    """The fleet's breaker; every method is one or two Redis round trips."""

    connection: redis.Redis
    failures: int = 5
    cooldown: float = 5.0
    probe_timeout: float = 60.0

    def permission(self) -> Permission:
        """Closed: yes. Open: no, until the cooldown ends; then yes for exactly one probe."""
        state, retry_at = self.connection.hmget(KEY, "state", "retry_at")
        if state is None or state.decode() == CLOSED:
            return Permission(True)
        wait = float(retry_at or 0) - time.time()
        if wait > 0:
            return Permission(False, wait=wait)
        if self.connection.set(PROBE_KEY, "1", nx=True, ex=int(self.probe_timeout)):
            return Permission(True, probe=True)
        return Permission(False, wait=0.5)  # another worker's probe is in flight

    def succeeded(self) -> bool:
        """Record a call that worked; True when that closed an open breaker."""
        return bool(self.connection.eval(_SUCCEED, 2, KEY, PROBE_KEY, f"{time.time():.3f}"))

    def failed(self, reason: str) -> bool:
        """Record an outage-class failure; True when the breaker is (now) open."""
        now = f"{time.time():.3f}"
        args = (now, self.failures, reason[:300], self.cooldown)
        return bool(self.connection.eval(_FAIL, 2, KEY, PROBE_KEY, *args))

    def state(self) -> dict:
        """The breaker as admins see it: state, failures, reason and times (epoch seconds)."""
        raw = {k.decode(): v.decode() for k, v in self.connection.hgetall(KEY).items()}
        state = raw.get("state", CLOSED)
        if state == OPEN and float(raw.get("retry_at", 0)) <= time.time():
            state = HALF_OPEN
        return {
            "state": state,
            "failures": int(raw.get("failures", 0)),
            "reason": raw.get("reason"),
            "opened_at": _float(raw.get("opened_at")) if state != CLOSED else None,
            "retry_at": _float(raw.get("retry_at")) if state != CLOSED else None,
            "failed_at": _float(raw.get("failed_at")),
        }


def _float(raw: str | None) -> float | None:
    return float(raw) if raw else None
