"""One rate limit for the whole fleet: requests and tokens per minute, counted in Redis.

The counting is the `limits` library's (a moving window for requests, a sliding window counter
for tokens, so a call's token estimate is one INCRBY rather than one list entry per token). On
top, a shared hold: when the provider says it is out of capacity (a 429's `retry-after`, or
`x-ratelimit-remaining-*` at zero with its `x-ratelimit-reset-*`), no worker sends until then.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import redis
from limits import RateLimitItemPerSecond
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter

HOLD_KEY = "scoreline:llm:hold-until"
NAMESPACE = "scoreline-llm"


def per_second_item(per_minute: int) -> RateLimitItemPerSecond:
    """A per-minute limit as `limits` counts it: per second when it allows one a second or
    more (the provider enforces per-minute limits per second too), else one per N seconds."""
    if per_minute >= 60:
        return RateLimitItemPerSecond(per_minute // 60, 1, namespace=NAMESPACE)
    return RateLimitItemPerSecond(1, -(-60 // max(per_minute, 1)), namespace=NAMESPACE)


class Grant(NamedTuple):
    """How many calls may go now; when none, how long to wait."""

    count: int
    wait: float


@dataclass
class FleetLimiter:
    """Every worker's gate before a call: `acquire()` counts the call or says how long to wait."""

    connection: redis.Redis
    rpm: int
    tpm: int

    def __post_init__(self) -> None:
        storage = RedisStorage("redis://", connection_pool=self.connection.connection_pool)
        self._requests = MovingWindowRateLimiter(storage)
        self._tokens = SlidingWindowCounterRateLimiter(storage)
        self._rpm_item = per_second_item(self.rpm)
        self._tpm_item = per_second_item(self.tpm)

    def acquire(self, tokens: Sequence[int]) -> Grant:
        """Count as many of these calls (each of about so many tokens), in order, as the limits
        allow now. Asking for several at once costs the same few round trips as for one."""
        held = self.held_for()
        if held > 0:
            return Grant(0, held)
        requests = self._requests.get_window_stats(self._rpm_item, "requests")
        count = min(len(tokens), requests.remaining)
        if count <= 0:
            return Grant(0, self._until(requests.reset_time, self._rpm_item))
        if self.tpm:
            room = self._tokens.get_window_stats(self._tpm_item, "tokens")
            fitting, total = 0, 0
            for need in tokens[:count]:
                total += min(need, self._tpm_item.amount)
                if total > room.remaining:
                    break
                fitting += 1
            if fitting == 0:
                return Grant(0, self._until(room.reset_time, self._tpm_item))
            count = fitting
        if not self._requests.hit(self._rpm_item, "requests", cost=count):
            return Grant(0, 0.005)  # another worker took the room meanwhile
        if self.tpm:
            cost = sum(min(need, self._tpm_item.amount) for need in tokens[:count])
            self._tokens.hit(self._tpm_item, "tokens", cost=min(cost, self._tpm_item.amount))
        return Grant(count, 0.0)

    @staticmethod
    def _until(reset: float, item) -> float:
        """Seconds until a window has room again (at least a few ms, at most the window)."""
        return min(max(reset - time.time(), 0.005), item.get_expiry())

    def held_for(self) -> float:
        """Seconds left of a hold the provider asked for (0 when none)."""
        until = self.connection.get(HOLD_KEY)
        return max(0.0, float(until) - time.time()) if until else 0.0

    def hold(self, seconds: float) -> None:
        """No worker sends for `seconds` (a longer hold already set stays)."""
        if seconds <= 0:
            return
        until = time.time() + min(seconds, 120.0)
        # Only ever extended: GET-compare-SET races between workers at worst shorten a hold to
        # the other worker's, which the provider's next answer corrects.
        current = self.connection.get(HOLD_KEY)
        if current is None or float(current) < until:
            self.connection.set(HOLD_KEY, repr(until), px=int(min(seconds, 120.0) * 1000) + 50)

    def observe(self, headers: Mapping[str, str], tokens: int) -> None:
        """Adapt to the provider's own account: out of requests or tokens means wait.

        How long: until the provider has room for one more such call, which it refills at its
        per-minute limit (`x-ratelimit-limit-*`): 60 / limit seconds per request, or per token.
        Never longer than its `x-ratelimit-reset-*` (the time to refill completely), which is
        the wait when it names no limit. A fleet sending right at the limit sees "0 remaining"
        on most answers; waiting for a full reset each time would leave the limit unused.
        """
        for kind, need in (("requests", 1), ("tokens", tokens)):
            remaining = _number(headers.get(f"x-ratelimit-remaining-{kind}"))
            if remaining is None or remaining >= need:
                continue
            reset = parse_duration(headers.get(f"x-ratelimit-reset-{kind}")) or 1.0
            limit = _number(headers.get(f"x-ratelimit-limit-{kind}"))
            refill = (need - max(remaining, 0)) * 60 / limit if limit and limit > 0 else reset
            self.hold(min(reset, refill))


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from `retry-after-ms` or `retry-after` (seconds form), if present and sane."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = _number(headers.get(name))
        if value is not None and value >= 0:
            return value * scale
    return None


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str | None) -> float | None:
    """OpenAI's reset durations: "1s", "6m0s", "120ms", "1.5s" -> seconds."""
    if not text:
        return None
    parts = _DURATION.findall(text.strip())
    return sum(float(n) * _UNITS[unit] for n, unit in parts) if parts else None


def _number(raw: str | None) -> float | None:
    try:
        return float(raw) if raw not in (None, "") else None
    except ValueError:
        return None
