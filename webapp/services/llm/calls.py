"""One call to the provider, and what came of it; and the gate every caller goes through.

`ask` and `score_once` make one call and neither sleeps nor retries: the batch (main thread)
decides what an essay's outcome means, so a 429 or an outage never holds a pool thread.
`Gate` puts the fleet's rate limiter and circuit breaker in front of a caller that waits for its
answer (question generation), so every call to the provider, from whatever job, is counted
against one limit and stopped by one breaker.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import redis

from webapp import metrics
from webapp.scoring.base import QuestionInput, StageError
from webapp.scoring.gpt import RUBRIC_SCHEMA, Retryable, parse_rubric, rubric_messages
from webapp.scoring.rubric import EssayScore
from webapp.services.llm.breaker import CircuitBreaker
from webapp.services.llm.rate_limit import FleetLimiter, retry_after
from webapp.services.llm.usage import Usage

log = logging.getLogger(__name__)


class Outcome(enum.StrEnum):
    """How a call ended, as far as what to do next is concerned."""

    SCORED = "scored"
    ANSWERED = "answered"  # a readable answer to a request other than a rubric (generation)
    RATE_LIMITED = "rate_limited"  # 429: wait as told, try again (not an attempt)
    OUTAGE = "outage"  # 5xx, timeout, refused connection: the breaker counts it
    MALFORMED = "malformed"  # an answer that is not a rubric: another attempt
    REFUSED = "refused"  # any other 4xx: no point trying again


@dataclass
class CallResult:
    """What one call returned."""

    outcome: Outcome
    rubric: EssayScore | None = None
    content: str = ""
    usage: Usage = field(default_factory=Usage)
    headers: dict[str, str] = field(default_factory=dict)
    retry_after: float | None = None
    problem: str = ""
    seconds: float = 0.0


def notify(result: CallResult, model: str) -> None:
    """Count one call in the metrics: its outcome, duration and the tokens billed."""
    metrics.llm_call(model, result.outcome.value, result.seconds or None)
    metrics.llm_usage(model, result.usage.prompt_tokens, result.usage.completion_tokens)


def estimate_tokens(messages: list[dict]) -> int:
    """Tokens a call will be charged against TPM: about 4 characters a token for the prompt,
    plus room for the answer."""
    return sum(len(m["content"]) for m in messages) // 4 + 200


def essay_tokens(essay: QuestionInput) -> int:
    """estimate_tokens of the call for this essay."""
    return estimate_tokens(rubric_messages(essay))


def score_once(client, model: str, essay: QuestionInput, timeout: float) -> CallResult:
    """Ask the provider once for this essay's rubric."""
    result = ask(client, model, rubric_messages(essay), "rubric", RUBRIC_SCHEMA, timeout)
    if result.outcome != Outcome.ANSWERED:
        return result
    try:
        result.rubric = parse_rubric(result.content, f"openai:{model}")
    except Retryable as exc:
        result.outcome, result.problem = Outcome.MALFORMED, str(exc)
        return result
    result.outcome = Outcome.SCORED
    return result


def ask(
    client, model: str, messages: list[dict], name: str, schema: dict, timeout: float
) -> CallResult:
    """One structured-output call: ANSWERED with the message content, or why not."""
    import openai

    started = time.monotonic()
    try:
        raw = client.chat.completions.with_raw_response.create(
            model=model,
            messages=messages,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": name, "strict": True, "schema": schema},
            },
            temperature=0,
            timeout=timeout,
        )
        completion = raw.parse()
    except openai.APITimeoutError:
        return _result(Outcome.OUTAGE, started, problem=f"timed out after {timeout:g}s")
    except openai.APIConnectionError as exc:
        return _result(Outcome.OUTAGE, started, problem=f"connection failed: {exc}")
    except openai.APIStatusError as exc:
        headers = dict(exc.response.headers)
        problem = f"HTTP {exc.status_code}"
        if exc.status_code == 429:
            wait = retry_after(exc.response.headers)
            return _result(Outcome.RATE_LIMITED, started, headers, wait, problem)
        if exc.status_code >= 500 or exc.status_code == 408:
            return _result(Outcome.OUTAGE, started, headers, problem=problem)
        return _result(Outcome.REFUSED, started, headers, problem=problem)
    except (openai.APIError, ValueError) as exc:  # answered, but not a body the client can read
        return _result(Outcome.MALFORMED, started, problem=f"unreadable answer: {exc}")
    headers = dict(raw.headers)
    if not hasattr(completion, "choices"):  # a text body (a proxy's error page) parses as str
        return _result(Outcome.MALFORMED, started, headers, problem="not a chat completion")
    usage = Usage.from_completion(completion)
    content = (completion.choices[0].message.content or "") if completion.choices else ""
    return _result(Outcome.ANSWERED, started, headers, content=content, usage=usage)


def _result(
    outcome: Outcome,
    started: float,
    headers: dict | None = None,
    wait: float | None = None,
    problem: str = "",
    **more,
) -> CallResult:
    return CallResult(
        outcome,
        headers=headers or {},
        retry_after=wait,
        problem=problem,
        seconds=time.monotonic() - started,
        **more,
    )


@dataclass
class Provider:
    """The provider as every caller sees it: a client, the model, the per-call timeout, and
    the fleet's limiter and breaker (both in Redis)."""

    client: object
    model: str
    timeout: float
    limiter: FleetLimiter
    breaker: CircuitBreaker

    @classmethod
    def from_config(cls, config: Mapping, connection: redis.Redis) -> Provider:
        """Built from the app's settings (OPENAI_*, LLM_BREAKER_*)."""
        import openai

        timeout = config["OPENAI_TIMEOUT"]
        client = openai.OpenAI(
            api_key=config["OPENAI_API_KEY"], base_url=config.get("OPENAI_BASE_URL"), max_retries=0
        )
        # The client imports its chat modules on first use: here, not between a call's turn at
        # the limiter and its sending (a first call that lagged by that long arrived at the
        # provider together with the next one's turn, and met a 429).
        _ = client.chat.completions.with_raw_response
        breaker = CircuitBreaker(
            connection,
            failures=config["LLM_BREAKER_FAILURES"],
            cooldown=config["LLM_BREAKER_COOLDOWN"],
            probe_timeout=timeout + 5,
        )
        limiter = FleetLimiter(connection, config["OPENAI_RPM"], config["OPENAI_TPM"])
        return cls(client, config["OPENAI_MODEL"], timeout, limiter, breaker)


# A caller that waits for its answer waits for the limiter this long at most per attempt; a
# longer wait (the provider's own hold) is an attempt that failed, with the wait as its backoff.
MAX_LIMITER_WAIT = 5.0


@dataclass
class Gate:
    """One structured-output call at a time, let through by the fleet's breaker and limiter.

    `complete` is what OpenAICaller (webapp.scoring.gpt) calls per attempt: it raises Retryable
    (with how long to wait) when the breaker is open, the limit is held, or the provider failed
    in a way worth another attempt, and StageError when it refused the request.
    """

    provider: Provider
    sleep: Callable[[float], None] = time.sleep

    def complete(self, messages: list[dict], name: str, schema: dict) -> str:
        """The provider's answer to one request, or Retryable / StageError."""
        p = self.provider
        permission = p.breaker.permission()
        if not permission.allowed:
            state = p.breaker.state()
            raise Retryable(
                f"the provider is paused after failures ({state.get('reason') or 'outage'})",
                permission.wait,
            )
        tokens = estimate_tokens(messages)
        waited = 0.0
        while not (grant := p.limiter.acquire([tokens])).count:
            if waited + grant.wait > MAX_LIMITER_WAIT:
                raise Retryable("the fleet's rate limit is used up", grant.wait)
            self.sleep(grant.wait)
            waited += grant.wait
        result = ask(p.client, p.model, messages, name, schema, p.timeout)
        notify(result, p.model)
        if result.outcome == Outcome.ANSWERED:
            p.breaker.succeeded()
            p.limiter.observe(result.headers, tokens)
            return result.content
        if result.outcome == Outcome.RATE_LIMITED:
            p.limiter.hold(result.retry_after if result.retry_after is not None else 1.0)
            raise Retryable(result.problem, result.retry_after)
        if result.outcome == Outcome.OUTAGE:
            p.breaker.failed(result.problem)
            raise Retryable(result.problem)
        if result.outcome == Outcome.MALFORMED:
            raise Retryable(result.problem)
        raise StageError(f"The OpenAI API refused the request ({result.problem}).")
