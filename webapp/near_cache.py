"""The poll cache's in-process layer: answers the hottest polls without leaving the process.

The shared poll cache (services/status_cache) lives in Redis, one round trip per poll. Each web
process also keeps the entries it served in memory, and a thread subscribed to Redis pub/sub
drops them the moment a change is announced: every version bump and every token revocation is
published on CHANNEL in the same Lua call that makes it.

Why it never serves a stale answer:

- An entry is dropped when a bump of its assessment arrives.
- An entry is only kept if no bump newer than the version it was built from arrived while it
  was being built: `begin` registers the assessment before the version is read from Redis, and
  bumps for registered assessments are remembered until `end`.
- Everything learnt under one subscription is forgotten when the subscription breaks; while it
  is down, or not yet confirmed, nothing is served from here (polls take the Redis path).

Token -> account mappings are kept the same way; a revocation drops the token and keeps it out.
So are session cookies the app has checked (signature and session generation): when an
account's sessions end (logout, password change) its cookies are dropped, and one checked before
the end arrived is not taken in.
Memory is bounded: MAX_ENTRIES poll answers (least recently used go first).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass

import redis
from flask import Flask

from webapp.services.status_cache import CHANNEL, KINDS

log = logging.getLogger(__name__)

MAX_ENTRIES = 2000
MAX_TOKENS = 10000
MAX_SESSIONS = 10000
# Revoked tokens are remembered this long so a lookup that raced the revocation can't keep one.
REVOKED_MEMORY = 600.0


@dataclass(frozen=True)
class Entry:
    version: int
    owner: int
    etag: str
    finished: bool
    content: str


@dataclass(frozen=True)
class Ticket:
    """Proof that a build was registered before its version was read."""

    assessment_id: int
    epoch: int


class NearCache:
    def __init__(self, client_factory) -> None:
        self._client_factory = client_factory
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, int], Entry] = OrderedDict()
        self._tokens: dict[str, int] = {}
        self._revoked: dict[str, float] = {}
        self._sessions: dict[str, int] = {}  # session cookie -> account, checked by the app
        self._ended: dict[int, float] = {}  # account -> when its sessions last ended
        self._building: Counter[int] = Counter()
        self._bumped: dict[int, int] = {}  # newest version announced for a registered build
        self._epoch = 0
        self._live = False
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # --- reading ------------------------------------------------------------------------------

    def get(self, kind: str, assessment_id: int) -> Entry | None:
        if not self._live:
            self._ensure_listening()
            return None
        with self._lock:
            entry = self._entries.get((kind, assessment_id))
            if entry is not None:
                self._entries.move_to_end((kind, assessment_id))
            return entry

    def account_of(self, token_hash: str) -> int | None:
        return self._tokens.get(token_hash) if self._live else None

    def account_of_session(self, cookie: str | None) -> int | None:
        """The account of a session cookie the app has vouched for, if still current."""
        return self._sessions.get(cookie or "") if self._live else None

    # --- filling ------------------------------------------------------------------------------

    def begin(self, assessment_id: int) -> Ticket | None:
        """Register a build; call before reading the version it will be stamped with."""
        if not self._live:
            return None
        with self._lock:
            self._building[assessment_id] += 1
            return Ticket(assessment_id, self._epoch)

    def end(self, ticket: Ticket | None) -> None:
        if ticket is None:
            return
        with self._lock:
            self._building[ticket.assessment_id] -= 1
            if self._building[ticket.assessment_id] <= 0:
                del self._building[ticket.assessment_id]
                self._bumped.pop(ticket.assessment_id, None)

    def put(self, ticket: Ticket | None, kind: str, entry: Entry) -> None:
        """Keep an entry built under `ticket`, unless a newer version was announced meanwhile."""
        if ticket is None:
            return
        with self._lock:
            if not self._live or ticket.epoch != self._epoch:
                return
            if self._bumped.get(ticket.assessment_id, entry.version) > entry.version:
                return
            self._entries[(kind, ticket.assessment_id)] = entry
            self._entries.move_to_end((kind, ticket.assessment_id))
            while len(self._entries) > MAX_ENTRIES:
                self._entries.popitem(last=False)

    def put_token(self, ticket: Ticket | None, token_hash: str, account: int) -> None:
        if ticket is None:
            return
        with self._lock:
            if not self._live or ticket.epoch != self._epoch or token_hash in self._revoked:
                return
            if len(self._tokens) >= MAX_TOKENS:
                self._tokens.clear()
            self._tokens[token_hash] = account

    def put_session(self, ticket: Ticket | None, cookie: str, account: int, checked_at: float):
        """Vouch for a session cookie whose generation was checked at `checked_at` (monotonic),
        unless the account's sessions ended since."""
        if ticket is None or not cookie:
            return
        with self._lock:
            if not self._live or ticket.epoch != self._epoch:
                return
            if self._ended.get(account, float("-inf")) >= checked_at:
                return
            if len(self._sessions) >= MAX_SESSIONS:
                self._sessions.clear()
            self._sessions[cookie] = account

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
                pubsub = self._client_factory().pubsub(ignore_subscribe_messages=False)
                pubsub.subscribe(CHANNEL)
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=5.0)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        self._start_epoch()
                        delay = 0.5
                    elif message["type"] == "message":
                        self._apply(message["data"])
            except (redis.RedisError, OSError):
                log.info("poll cache: subscription lost; polls use Redis until it is back")
            finally:
                self._forget()
                if pubsub is not None:
                    with contextlib.suppress(redis.RedisError, OSError):
                        pubsub.close()
            self._stop.wait(delay)
            delay = min(delay * 2, 10.0)

    def _start_epoch(self) -> None:
        with self._lock:
            self._epoch += 1
            self._entries.clear()
            self._tokens.clear()
            self._sessions.clear()
            self._bumped.clear()
            self._live = True

    def _forget(self) -> None:
        with self._lock:
            self._live = False
            self._epoch += 1
            self._entries.clear()
            self._tokens.clear()
            self._sessions.clear()
            self._bumped.clear()

    def _apply(self, data: bytes) -> None:
        """`v <id>:<version> ...` (bumps), `t <token hash>` (a revocation) or `s <account>`
        (the account's sessions ended)."""
        kind, _, rest = data.decode().partition(" ")
        with self._lock:
            if kind == "s":
                self._end_sessions_locked(int(rest))
                return
            if kind == "t":
                now = time.monotonic()
                self._tokens.pop(rest, None)
                self._revoked[rest] = now
                for token, when in list(self._revoked.items()):
                    if now - when > REVOKED_MEMORY:
                        del self._revoked[token]
                return
            for pair in rest.split():
                assessment_id, _, version = pair.partition(":")
                self._bump_locked(int(assessment_id), int(version))

    def bumped(self, versions: dict[int, int]) -> None:
        """Bumps made by this process: applied at once, not when pub/sub echoes them back, so
        a client never reads its own change as not yet made."""
        with self._lock:
            for assessment_id, version in versions.items():
                self._bump_locked(assessment_id, version)

    def revoked(self, token_hash: str) -> None:
        self._apply(f"t {token_hash}".encode())

    def sessions_ended(self, account: int) -> None:
        """Applied at once in the process that ended them, as `bumped` is."""
        self._apply(f"s {account}".encode())

    def _end_sessions_locked(self, account: int) -> None:
        now = time.monotonic()
        for cookie in [c for c, owner in self._sessions.items() if owner == account]:
            del self._sessions[cookie]
        self._ended[account] = now
        for other, when in list(self._ended.items()):
            if now - when > REVOKED_MEMORY:
                del self._ended[other]

    def _bump_locked(self, assessment_id: int, version: int) -> None:
        for kind in KINDS:
            self._entries.pop((kind, assessment_id), None)
        if assessment_id in self._building:
            self._bumped[assessment_id] = max(self._bumped.get(assessment_id, 0), version)

    def stop(self) -> None:
        self._stop.set()


def near_cache(app: Flask) -> NearCache:
    """This process's near cache for `app` (created on first use, after any fork)."""
    cache = app.extensions.get("near_cache")
    if cache is None:
        from webapp.queues import redis_url

        def client() -> redis.Redis:
            # A connection of its own: a subscription holds it for good.
            return redis.Redis.from_url(redis_url(app), socket_connect_timeout=2)

        cache = app.extensions["near_cache"] = NearCache(client)
    return cache
