"""The fleet's rate limiter and circuit breaker against a real Redis, and the provider double's
OpenAI-shaped answers (429s with headers, structured output, outages, prompt caching)."""

from __future__ import annotations

import time

import openai
import pytest
import redis
import requests

from bench.openai_double import OpenAICompatibleServer, ProviderLimits, Reply, schema_reply
from webapp.scoring.base import QuestionInput
from webapp.scoring.gpt import RUBRIC_SCHEMA, parse_rubric
from webapp.services.llm.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from webapp.services.llm.calls import Outcome, score_once
from webapp.services.llm.rate_limit import FleetLimiter, parse_duration, retry_after


@pytest.fixture()
def connection(redis_url) -> redis.Redis:
    """The test Redis with no limiter or breaker state left from another test."""
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter("*llm*"):
        client.delete(key)
    for key in client.scan_iter("LIMITS*"):
        client.delete(key)
    return client


def test_the_limiter_counts_requests_per_second_for_every_worker_alike(connection):
    first, second = (FleetLimiter(connection, rpm=120, tpm=1_000_000) for _ in range(2))

    assert first.acquire([100]) == (1, 0)
    assert second.acquire([100]) == (1, 0)  # another worker, the same count: 2 a second
    count, wait = first.acquire([100])
    assert count == 0 and 0 < wait <= 1.0
    time.sleep(wait + 0.05)
    assert second.acquire([100, 100, 100]) == (2, 0)  # as many as fit: the window is free again


def test_several_calls_are_counted_in_one_go(connection):
    limiter = FleetLimiter(connection, rpm=600, tpm=1_000_000)  # 10 a second

    assert limiter.acquire([100] * 4) == (4, 0)
    assert limiter.acquire([100] * 8) == (6, 0)
    assert limiter.acquire([100]).count == 0


def test_the_limiter_counts_tokens_too(connection):
    limiter = FleetLimiter(connection, rpm=6000, tpm=60_000)  # 1,000 tokens a second

    assert limiter.acquire([600]) == (1, 0)
    assert limiter.acquire([600]).count == 0  # 1,200 tokens would overrun this second
    assert limiter.acquire([300, 300]) == (1, 0)  # 900 of the second's 1,000 tokens


def test_the_providers_own_account_holds_the_whole_fleet(connection):
    limiter = FleetLimiter(connection, rpm=6000, tpm=1_000_000)
    other_worker = FleetLimiter(connection, rpm=6000, tpm=1_000_000)

    limiter.observe(
        {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "400ms"}, 10
    )

    held = other_worker.acquire([10])
    assert held.count == 0 and 0.2 < held.wait <= 0.4
    time.sleep(0.45)
    assert other_worker.acquire([10]) == (1, 0)
    limiter.observe({"x-ratelimit-remaining-tokens": "5", "x-ratelimit-reset-tokens": "1s"}, 300)
    assert other_worker.held_for() > 0.8


def test_out_of_room_waits_for_the_next_call_not_for_a_full_reset(connection):
    """At 600 RPM the provider refills one request every 0.1 s: "0 remaining" means wait that
    long, not the second its bucket takes to refill completely."""
    limiter = FleetLimiter(connection, rpm=6000, tpm=1_000_000)
    limiter.observe(
        {
            "x-ratelimit-limit-requests": "600",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "1s",
        },
        10,
    )
    assert 0.05 < limiter.held_for() <= 0.1
    limiter.observe(
        {
            "x-ratelimit-limit-tokens": "60000",  # 1,000 tokens a second
            "x-ratelimit-remaining-tokens": "100",
            "x-ratelimit-reset-tokens": "2s",
        },
        600,
    )
    assert 0.4 < limiter.held_for() <= 0.5  # the 500 tokens missing


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after-ms": "1500", "retry-after": "2"}, 1.5),
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, None),
        ({}, None),
    ],
)
def test_retry_after_prefers_milliseconds(headers, seconds):
    assert retry_after(headers) == seconds


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1s", 1.0), ("6m0s", 360.0), ("120ms", 0.12), ("1.5s", 1.5), ("1h2m", 3720.0), ("", None)],
)
def test_openai_reset_durations_are_parsed(text, seconds):
    assert parse_duration(text) == seconds


def test_the_breaker_opens_after_consecutive_failures_and_one_probe_closes_it(connection):
    breaker = CircuitBreaker(connection, failures=3, cooldown=0.3)
    fleet_peer = CircuitBreaker(connection, failures=3, cooldown=0.3)

    assert not breaker.failed("HTTP 503")
    breaker.succeeded()  # a success in between: the count starts again
    assert not breaker.failed("HTTP 503") and not fleet_peer.failed("timed out after 30s")
    assert fleet_peer.failed("HTTP 503")  # the third in a row, on another worker
    assert breaker.state()["state"] == OPEN and breaker.state()["reason"] == "HTTP 503"
    denied = breaker.permission()
    assert not denied.allowed and 0 < denied.wait <= 0.3

    time.sleep(0.35)
    assert breaker.state()["state"] == HALF_OPEN
    probe = breaker.permission()
    assert probe.allowed and probe.probe
    assert not fleet_peer.permission().allowed  # exactly one probe at a time
    assert breaker.failed("HTTP 503")  # the probe failed: open for another cooldown
    assert not breaker.permission().allowed

    time.sleep(0.35)
    assert breaker.permission().probe
    assert breaker.succeeded()
    assert breaker.state()["state"] == CLOSED and fleet_peer.permission().allowed


def chat(base_url: str, **body) -> requests.Response:
    """POST a chat completion to the double."""
    payload = {"model": "m", "messages": [{"role": "user", "content": "Hello"}], **body}
    return requests.post(f"{base_url}/chat/completions", json=payload, timeout=5)


def test_the_double_answers_over_its_limit_as_openai_does():
    provider = OpenAICompatibleServer(default=schema_reply(), limits=ProviderLimits(rpm=60))
    try:
        assert chat(provider.base_url).status_code == 200
        refused = chat(provider.base_url)
    finally:
        provider.stop()

    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "rate_limit_exceeded" and error["type"] == "requests"
    assert "Please try again in" in error["message"]
    assert refused.headers["x-ratelimit-limit-requests"] == "60"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert 0 < int(refused.headers["retry-after-ms"]) <= 1000
    assert parse_duration(refused.headers["x-ratelimit-reset-requests"]) <= 1.0
    assert provider.stats.rate_limited == 1 and provider.stats.ok == 1


def test_the_double_gives_structured_output_for_the_requested_schema():
    provider = OpenAICompatibleServer(default=schema_reply())
    client = openai.OpenAI(api_key="k", base_url=provider.base_url, max_retries=0)
    try:
        completion = client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "Grade this."}],
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "rubric", "strict": True, "schema": RUBRIC_SCHEMA},
            },
        )
    finally:
        provider.stop()

    rubric = parse_rubric(completion.choices[0].message.content, "openai:m")
    assert all(0 <= rubric.to_dict()["rubric"][d]["score"] <= 10 for d in RUBRIC_SCHEMA["required"])
    assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens > 0


def test_the_double_has_outages_errors_latency_and_prompt_caching():
    provider = OpenAICompatibleServer(
        default=schema_reply(),
        limits=ProviderLimits(outages=[(0, 0.5)], median_latency=0.2, cache_min_tokens=0),
    )
    long_prompt = "Static instructions. " * 200
    try:
        assert chat(provider.base_url).status_code == 503  # inside the outage window
        time.sleep(0.5)
        started = time.monotonic()
        first = chat(provider.base_url, messages=[{"role": "system", "content": long_prompt}])
        assert time.monotonic() - started >= 0.1  # lognormal around 0.2 s
        again = chat(provider.base_url, messages=[{"role": "system", "content": long_prompt}])
        provider.configure(ProviderLimits(error_rate=1.0))
        failing = chat(provider.base_url)
    finally:
        provider.stop()

    assert first.json()["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    assert again.json()["usage"]["prompt_tokens_details"]["cached_tokens"] > 0
    assert failing.status_code == 500 and failing.json()["error"]["type"] == "server_error"


@pytest.mark.parametrize(
    "reply",
    [
        Reply(body="<html>a proxy's error page</html>", headers={"Content-Type": "text/html"}),
        Reply(body="{not json", headers={"Content-Type": "application/json"}),
        Reply(body={"unexpected": "shape"}),
    ],
)
def test_an_answer_the_client_cannot_read_is_malformed_not_a_crash(reply):
    """One odd answer must not raise out of the pool thread and end the whole batch."""
    provider = OpenAICompatibleServer(default=reply)
    try:
        client = openai.OpenAI(api_key="k", base_url=provider.base_url, max_retries=0)
        essay = QuestionInput(1, "essay", 10, prompt="Explain recursion.", answer="A base case.")
        result = score_once(client, "test-model", essay, timeout=5)
    finally:
        provider.stop()
    assert result.outcome == Outcome.MALFORMED
    assert result.problem
