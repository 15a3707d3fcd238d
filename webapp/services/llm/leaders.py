"""Which jobs are gathering gpt work right now: at most LLM_BATCHES slots in Redis.

A slot is a key holding the leading job's id with a short expiry that the leader renews every
second, so a leader whose worker was killed frees its slot within SLOT_TTL seconds.
"""

from __future__ import annotations

import contextlib
import threading

import redis

SLOT_KEY = "scoreline:llm:leader:{}"
SLOT_TTL = 3

# Renew (or free) a slot only while it still holds this job's id.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  if ARGV[2] == '0' then return redis.call('DEL', KEYS[1]) end
  return redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


class LeaderSlots:
    """The fleet's gathering slots."""

    def __init__(self, connection: redis.Redis, slots: int) -> None:
        self.connection = connection
        self.keys = [SLOT_KEY.format(i) for i in range(max(1, slots))]

    def acquire(self, job_id: str) -> str | None:
        """Take a free slot for `job_id`; returns its key, or None when all are taken."""
        for key in self.keys:
            if self.connection.set(key, job_id, nx=True, ex=SLOT_TTL):
                return key
        return None

    def renew(self, key: str, job_id: str) -> bool:
        """Keep holding the slot; False if it was lost (expired and taken)."""
        return bool(self.connection.eval(_RENEW, 1, key, job_id, SLOT_TTL))

    def release(self, key: str, job_id: str) -> None:
        """Free the slot if this job still holds it."""
        self.connection.eval(_RENEW, 1, key, job_id, 0)

    def live(self) -> list[str]:
        """Job ids of the leaders now."""
        return [v.decode() for v in self.connection.mget(self.keys) if v]


class SlotKeeper(threading.Thread):
    """Renews a leader's slot every second until stopped."""

    def __init__(self, slots: LeaderSlots, key: str, job_id: str) -> None:
        super().__init__(name="llm-leader-slot", daemon=True)
        self.slots, self.key, self.job_id = slots, key, job_id
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(1.0):
            # A failed renewal is tried again a second later; the slot outlives a few misses.
            with contextlib.suppress(redis.RedisError):
                self.slots.renew(self.key, self.job_id)
