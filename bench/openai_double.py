"""A real OpenAI-compatible HTTP server (chat completions) for the tests and the benchmarks.

Two ways to use it:

- scripted: `then(Reply(...))` queues answers, given in order before `default` (the tests);
- as a provider: `ProviderLimits` gives a lognormal latency, requests- and tokens-per-minute
  limits answered as OpenAI does (429 with its body, `x-ratelimit-*`, `retry-after(-ms)`), a rate
  of injected 5xx and outage windows; `schema_reply()` answers any `json_schema` structured-output
  request with a document that matches the schema (the benchmarks).

It lives in bench/ so the benchmarks can use it without importing the tests; tests/openai_server.py
re-exports it.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Reply:
    """One scripted answer: a status, headers, a JSON body (or raw text), and an optional delay.

    `from_schema` answers with content generated from the request's json_schema instead of `body`.
    """

    status: int = 200
    body: dict | str | None = None
    headers: dict = field(default_factory=dict)
    delay: float = 0.0
    from_schema: bool = False


def completion_body(content: str, usage: dict | None = None) -> dict:
    """A chat.completion body carrying `content` as the assistant's message."""
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": "test-model",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": content},
            }
        ],
        "usage": usage or {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
    }


def rubric_reply(scores: dict[str, int] | None = None, content: str | None = None) -> Reply:
    """A successful chat completion whose message content is a rubric JSON (or `content`)."""
    scores = scores or {"relevance": 8, "depth": 7, "clarity": 9, "technical": 6}
    if content is None:
        content = json.dumps(
            {
                k: {"score": v, "rationale": f"Model judged {k} as {v}/10."}
                for k, v in scores.items()
            }
        )
    return Reply(body=completion_body(content))


def schema_reply() -> Reply:
    """Answer every request with a document generated from its `json_schema`."""
    return Reply(from_schema=True)


def document_for(schema: dict, name: str = "value", seed: int = 0) -> object:
    """A value that satisfies a (strict, simple) JSON schema: objects, arrays, enums, scalars."""
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props = schema.get("properties", {})
        return {key: document_for(sub, key, seed + i) for i, (key, sub) in enumerate(props.items())}
    if kind == "array":
        count = max(schema.get("minItems", 1), 1)
        return [document_for(schema.get("items", {}), name, seed + i) for i in range(count)]
    if kind == "integer":
        low, high = schema.get("minimum", 0), schema.get("maximum", 10)
        return low + (seed * 7 + 6) % (high - low + 1)
    if kind == "number":
        return float(schema.get("minimum", 0))
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return f"A generated {name} that satisfies the schema."


@dataclass
class ProviderLimits:
    """How the double behaves as a provider (every field optional).

    Limits are enforced as OpenAI documents them, per minute but quantised: a token bucket that
    holds one second's worth (`burst_seconds`) and refills continuously.
    """

    rpm: int | None = None
    tpm: int | None = None
    median_latency: float = 0.0
    latency_sigma: float = 0.5
    error_rate: float = 0.0
    # (start, end) in seconds since start_clock(): every call inside gets `outage_status`.
    outages: list[tuple[float, float]] = field(default_factory=list)
    outage_status: int = 503
    burst_seconds: float = 1.0
    # Prompt caching, as OpenAI does it: prompts of at least this many tokens, in 128-token blocks.
    cache_min_tokens: int = 1024
    seed: int = 15


class _Bucket:
    """A token bucket: `rate` per second, holding at most `capacity`."""

    def __init__(self, per_minute: int, burst_seconds: float) -> None:
        self.limit = per_minute
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * burst_seconds)
        self.level = self.capacity
        self.stamp = time.monotonic()

    def take(self, cost: float) -> float:
        """Take `cost` and return 0, or return the seconds until it could be taken."""
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.level >= cost:
            self.level -= cost
            return 0.0
        return (min(cost, self.capacity) - self.level) / self.rate

    def headers(self, kind: str) -> dict[str, str]:
        """OpenAI's x-ratelimit-* headers for this bucket."""
        missing = max(0.0, self.capacity - self.level)
        return {
            f"x-ratelimit-limit-{kind}": str(self.limit),
            f"x-ratelimit-remaining-{kind}": str(int(self.level)),
            f"x-ratelimit-reset-{kind}": f"{max(1, math.ceil(1000 * missing / self.rate))}ms",
        }


@dataclass
class Stats:
    """What the provider saw."""

    calls: int = 0
    ok: int = 0
    rate_limited: int = 0
    errors: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    # (arrived, answered, status) of every call, seconds since the clock started: where a
    # burst's time went (gaps between calls, how many were in flight when).
    timeline: list[tuple[float, float, int]] = field(default_factory=list)


class OpenAICompatibleServer:
    """Serves scripted replies in order, then `default`; records every request it gets."""

    def __init__(self, default: Reply | None = None, limits: ProviderLimits | None = None) -> None:
        self.script: deque[Reply] = deque()
        self.default = default or rubric_reply()
        self.limits = limits or ProviderLimits()
        self.requests: list[dict] = []
        self.stats = Stats()
        self._lock = threading.Lock()
        self._rng = random.Random(self.limits.seed)
        self._buckets: dict[str, _Bucket] = {}
        self._prefixes: set[str] = set()
        self.start_clock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the real API does

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                arrived = time.monotonic()
                status, headers, payload, delay = outer._answer(self.path, body)
                if status == 0:  # a refused connection
                    self.close_connection = True
                    return
                time.sleep(delay)
                data = payload.encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (its timeout); that is what the test wanted
                finally:
                    with outer._lock:
                        outer.stats.in_flight -= 1
                        outer.stats.timeline.append(
                            (arrived - outer.started, time.monotonic() - outer.started, status)
                        )

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 512  # a burst of new connections must not be dropped
            daemon_threads = True

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_port}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def start_clock(self) -> None:
        """Outage windows count from now."""
        self.started = time.monotonic()

    def configure(self, limits: ProviderLimits) -> None:
        """New provider behaviour from now on (fresh buckets and statistics)."""
        with self._lock:
            self.limits = limits
            self._rng = random.Random(limits.seed)
            self._buckets = {}
            self.stats = Stats()
            self.start_clock()

    def _answer(self, path: str, body: dict) -> tuple[int, dict, str, float]:
        """Decide one request's answer: (status, headers, body text, delay before answering)."""
        limits = self.limits
        prompt = _prompt_tokens(body)
        with self._lock:
            self.requests.append({"path": path, "body": body})
            self.stats.calls += 1
            self.stats.in_flight += 1
            self.stats.max_in_flight = max(self.stats.max_in_flight, self.stats.in_flight)
            elapsed = time.monotonic() - self.started
            if any(start <= elapsed < end for start, end in limits.outages):
                self.stats.errors += 1
                return _error(limits.outage_status, "The server is temporarily unavailable.")
            limited = self._take(prompt + 200)
            if limited:
                self.stats.rate_limited += 1
                return limited
            headers = self._limit_headers()
            if limits.error_rate and self._rng.random() < limits.error_rate:
                self.stats.errors += 1
                return _error(500, "The server had an error while processing your request.")
            reply = self.script.popleft() if self.script else self.default
            delay = reply.delay
            if limits.median_latency:
                mu = math.log(limits.median_latency)
                delay += self._rng.lognormvariate(mu, limits.latency_sigma)
            cached = self._cached_tokens(body, prompt)
            self.stats.ok += reply.status == 200
            self.stats.prompt_tokens += prompt
            self.stats.cached_tokens += cached
        if reply.from_schema:
            content = json.dumps(_schema_document(body))
            usage = {
                "prompt_tokens": prompt,
                "completion_tokens": max(1, len(content) // 4),
                "total_tokens": prompt + max(1, len(content) // 4),
                "prompt_tokens_details": {"cached_tokens": cached},
            }
            body_text = json.dumps(completion_body(content, usage))
            return reply.status, {**headers, **reply.headers}, body_text, delay
        payload = reply.body if isinstance(reply.body, str) else json.dumps(reply.body or {})
        return reply.status, {**headers, **reply.headers}, payload, delay

    def _take(self, tokens: int) -> tuple[int, dict, str, float] | None:
        """None when the call fits the limits, else OpenAI's 429 answer (under the lock)."""
        limits = self.limits
        for kind, per_minute, cost in (("requests", limits.rpm, 1), ("tokens", limits.tpm, tokens)):
            if not per_minute:
                continue
            bucket = self._buckets.setdefault(kind, _Bucket(per_minute, limits.burst_seconds))
            wait = bucket.take(cost)
            if wait:
                unit = "RPM" if kind == "requests" else "TPM"
                message = (
                    f"Rate limit reached for test-model on {kind} per min ({unit}): Limit "
                    f"{per_minute}, Requested {cost}. Please try again in {int(wait * 1000)}ms."
                )
                status, headers, payload, _ = _error(429, message, kind, "rate_limit_exceeded")
                headers.update(self._limit_headers())
                headers["retry-after-ms"] = str(max(1, int(wait * 1000)))
                headers["retry-after"] = str(max(1, math.ceil(wait)))
                return status, headers, payload, 0.0
        return None

    def _limit_headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        for kind, bucket in self._buckets.items():
            headers.update(bucket.headers(kind))
        return headers

    def _cached_tokens(self, body: dict, prompt: int) -> int:
        """Tokens of the prompt's leading 128-token blocks seen before (prompt caching)."""
        if prompt < self.limits.cache_min_tokens:
            return 0
        text = "".join(str(m.get("content", "")) for m in body.get("messages", []))
        cached = 0
        for end in range(512, len(text) + 1, 512):  # about 128 tokens each
            key = hashlib.sha1(text[:end].encode(), usedforsecurity=False).hexdigest()
            if key not in self._prefixes:
                self._prefixes.add(key)
                break
            cached += 128
        return min(cached, prompt)

    def then(self, *replies: Reply) -> OpenAICompatibleServer:
        """Queue replies to give, in order, before falling back to the default."""
        self.script.extend(replies)
        return self

    @property
    def count(self) -> int:
        """How many requests arrived."""
        return len(self.requests)

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.httpd.shutdown()
        self.httpd.server_close()


def _prompt_tokens(body: dict) -> int:
    """About four characters a token, as OpenAI's rule of thumb says."""
    text = "".join(str(m.get("content", "")) for m in body.get("messages", []))
    return max(1, len(text) // 4)


def _schema_document(body: dict) -> object:
    """The structured output the request asked for, seeded by its text (varied, repeatable)."""
    schema = (body.get("response_format") or {}).get("json_schema", {}).get("schema", {})
    text = json.dumps(body.get("messages", []))
    seed = int(hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:6], 16)
    return document_for(schema, seed=seed)


def _error(
    status: int, message: str, kind: str = "server_error", code: str | None = None
) -> tuple[int, dict, str, float]:
    """An OpenAI error answer."""
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return status, {}, json.dumps(body), 0.0
