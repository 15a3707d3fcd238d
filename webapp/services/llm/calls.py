"""One call to the provider for one essay, run in a pool thread, and what came of it.

Nothing here sleeps or retries: the batch (main thread) decides what an outcome means, so a
429 or an outage never holds a thread.
"""

from __future__ import annotations

import enum
import logging
import time
from dataclasses import dataclass, field

from webapp import metrics
from webapp.scoring.base import QuestionInput
from webapp.scoring.gpt import RUBRIC_SCHEMA, Retryable, parse_rubric, rubric_messages
from webapp.scoring.rubric import EssayScore
from webapp.services.llm.rate_limit import retry_after
from webapp.services.llm.usage import Usage

log = logging.getLogger(__name__)


class Outcome(enum.StrEnum):
    """How a call ended, as far as what to do next is concerned."""

    SCORED = "scored"
    RATE_LIMITED = "rate_limited"  # 429: wait as told, try again (not an attempt)
    OUTAGE = "outage"  # 5xx, timeout, refused connection: the breaker counts it
    MALFORMED = "malformed"  # an answer that is not a rubric: another attempt
    REFUSED = "refused"  # any other 4xx: no point trying again


@dataclass
class CallResult:
    """What one call returned."""

    outcome: Outcome
    rubric: EssayScore | None = None
    usage: Usage = field(default_factory=Usage)
    headers: dict[str, str] = field(default_factory=dict)
    retry_after: float | None = None
    problem: str = ""
    seconds: float = 0.0


def notify(result: CallResult, model: str) -> None:
    """Count one call in the metrics: its outcome, duration and the tokens billed."""
    metrics.llm_call(model, result.outcome.value, result.seconds or None)
    metrics.llm_usage(model, result.usage.prompt_tokens, result.usage.completion_tokens)


def estimate_tokens(essay: QuestionInput) -> int:
    """Tokens a call for this essay will be charged against TPM: about 4 characters a token
    for the prompt, plus room for the rubric answer."""
    text = "".join(m["content"] for m in rubric_messages(essay))
    return len(text) // 4 + 200


def score_once(client, model: str, essay: QuestionInput, timeout: float) -> CallResult:
    """Ask the provider once for this essay's rubric."""
    import openai

    started = time.monotonic()
    try:
        raw = client.chat.completions.with_raw_response.create(
            model=model,
            messages=rubric_messages(essay),
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "rubric", "strict": True, "schema": RUBRIC_SCHEMA},
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
    try:
        rubric = parse_rubric(content, f"openai:{model}")
    except Retryable as exc:
        return _result(Outcome.MALFORMED, started, headers, problem=str(exc), usage=usage)
    return _result(Outcome.SCORED, started, headers, rubric=rubric, usage=usage)


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
