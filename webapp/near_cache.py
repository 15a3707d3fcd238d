"""This web process's memory of what the app answered to polls, kept true by Redis pub/sub.

The WSGI shortcut (webapp/fast_polls) answers the hottest polls from here, before Flask runs.
Everything here was learnt by the app's ordinary path while it answered a poll (`learn`):

- ("a", assessment id): the status JSON and the progress partial its owner was shown;
- ("t", token hash): the account of a bearer token the app accepted;
- ("s", account): the account's session generation, read from the database;
- ("l", account): the poll limits Flask-Limiter counted the account's poll against.

Every commit that touches an assessment names it on CHANNEL (services/poll_changes), a revoked
token names its hash and ended sessions their account; a listener thread forgets what a message
names, within milliseconds in every process. Why nothing stale is served:

- what the ordinary path learns carries a ticket taken before it read anything; a fact named by
  a change that arrived after the ticket was taken is not kept;
- everything is forgotten when the subscription is confirmed (the first time and after any
  reconnection, redis-py's own included) and when it breaks; until it is confirmed nothing is
  served from here, and polls take the ordinary path.

Memory is bounded: facts about MAX_FACTS subjects, the first learnt go first.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

import redis
from flask import Flask, current_app

from webapp.queues import get_redis, redis_url

log = logging.getLogger(__name__)

# Messages: "<kind> <origin> <name> ...": kind a (assessment ids), t (a token hash) or s (an
# account); origin, the near cache of the process that made the change ("-" if none).
CHANNEL = "scoreline:poll-changes"
MAX_FACTS = 20000
# A ticket older than this learns nothing (the changes it must be checked against are dropped).
TICKET_LIFETIME = 60.0


@dataclass(frozen=True)
class Entry:
    """A poll answer as the app built it for the assessment's owner."""

    owner: int
    etag: str
    finished: bool
    content: str


@dataclass(frozen=True)
class Ticket:
    """Taken before a request reads anything; what it learns is checked against later changes."""

    seq: int
    taken: float


class NearCache:
    def __init__(self, client_factory) -> None:
        self._client_factory = client_factory
        self.origin = secrets.token_hex(8)  # its own changes apply at once, not on their echo
        self._lock = threading.Lock()
        self._facts: dict[tuple[str, str], dict[str, Any]] = {}  # subject -> kind -> fact
        self._changed: dict[tuple[str, str], tuple[int, float]] = {}  # subject -> (seq, when)
        self._seq = 0
        self._flushed = 0  # tickets taken before this were taken before the last flush
        self._live = False
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def get(self, subject: tuple[str, str], kind: str = "") -> Any:
        """What was learnt about `subject`, or None (also while the subscription is down)."""
        if not self._live:
            self._ensure_listening()
            return None
        return self._facts.get(subject, {}).get(kind)

    def ticket(self) -> Ticket | None:
        """A ticket for a request about to read the database; None while nothing is served."""
        if not self._live:
            self._ensure_listening()
            return None
        return Ticket(self._seq, time.monotonic())

    def learn(self, ticket: Ticket | None, subject: tuple[str, str], value, kind: str = ""):
        """Keep `value` about `subject`, unless `subject` changed since `ticket` was taken."""
        if ticket is None:
            return
        with self._lock:
            if not self._live or ticket.seq < self._flushed:
                return
            if time.monotonic() - ticket.taken > TICKET_LIFETIME:
                return
            if self._changed.get(subject, (-1, 0.0))[0] > ticket.seq:
                return
            self._facts.setdefault(subject, {})[kind] = value
            if len(self._facts) > MAX_FACTS:
                del self._facts[next(iter(self._facts))]

    def changed(self, *subjects: tuple[str, str]) -> None:
        """Forget what is known about `subjects`, and refuse it from earlier tickets. Called by
        the listener, and at once by the process that made the change (so a client never reads
        its own change as not yet made)."""
        with self._lock:
            self._seq += 1
            now = time.monotonic()
            for subject in subjects:
                self._facts.pop(subject, None)
                self._changed.pop(subject, None)
                self._changed[subject] = (self._seq, now)
            while self._changed:
                oldest = next(iter(self._changed))
                if now - self._changed[oldest][1] <= TICKET_LIFETIME:
                    break
                del self._changed[oldest]

    def _flush(self, live: bool) -> None:
        with self._lock:
            self._seq += 1
            self._flushed = self._seq
            self._facts.clear()
            self._changed.clear()
            self._live = live

    # --- the subscription ---------------------------------------------------------------------

    def _ensure_listening(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            with self._lock:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(
                        target=self._listen, name="poll-cache-listener", daemon=True
                    )
                    self._thread.start()

    def _listen(self) -> None:
        delay = 0.5
        while not self._stop.is_set():
            pubsub = None
            try:
                pubsub = self._client_factory().pubsub()
                pubsub.subscribe(CHANNEL)
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=5.0)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        # The first confirmation, or redis-py's own resubscription after it
                        # reconnected: changes announced meanwhile were lost to us.
                        self._flush(live=True)
                        delay = 0.5
                    elif message["type"] == "message":
                        kind, origin, *names = message["data"].decode().split()
                        if origin != self.origin:
                            self.changed(*((kind, name) for name in names))
            except (redis.RedisError, OSError):
                if self._live:  # said once per loss, not at every failed retry
                    log.info(
                        "poll cache: subscription lost; polls take the app's path until it is back"
                    )
            finally:
                self._flush(live=False)
                if pubsub is not None:
                    with contextlib.suppress(redis.RedisError, OSError):
                        pubsub.close()
            self._stop.wait(delay)
            delay = min(delay * 2, 10.0)

    def stop(self) -> None:
        self._stop.set()


def announce(kind: str, *names) -> None:
    """Tell every web process's near cache that `names` of `kind` changed: this process's at
    once, the others through Redis (RedisError when it is unreachable)."""
    near = current_app.extensions.get("near_cache")
    if near is not None:
        near.changed(*((kind, str(name)) for name in names))
    origin = near.origin if near is not None else "-"
    get_redis().publish(CHANNEL, " ".join([kind, origin, *map(str, names)]))


def near_cache(app: Flask) -> NearCache:
    """This process's near cache for `app` (created on first use, after any fork)."""
    cache = app.extensions.get("near_cache")
    if cache is None:

        def client() -> redis.Redis:
            # A connection of its own (a subscription holds it for good), and no retries: a
            # broken connection must reach the listener, which forgets everything.
            return redis.Redis.from_url(redis_url(app), socket_connect_timeout=2, retry=None)

        cache = app.extensions["near_cache"] = NearCache(client)
    return cache
