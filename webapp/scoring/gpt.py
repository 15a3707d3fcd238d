"""The `gpt` stage: each essay scored on the rubric, by the OpenAI API or the offline scorer."""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from webapp.scoring.base import ProgressCallback, QuestionInput, StageError, no_progress
from webapp.scoring.rubric import EssayScore, score_essay_offline
from webapp.scoring.vocabulary import RUBRIC_DIMENSIONS

log = logging.getLogger(__name__)
T = TypeVar("T")

RUBRIC_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": list(RUBRIC_DIMENSIONS),
    "properties": {
        name: {
            "type": "object",
            "additionalProperties": False,
            "required": ["score", "rationale"],
            "properties": {
                "score": {"type": "integer", "minimum": 0, "maximum": 10},
                "rationale": {"type": "string"},
            },
        }
        for name in RUBRIC_DIMENSIONS
    },
}

SYSTEM_PROMPT = (
    "You are a fair, precise teacher grading a student's essay answer. Score it on four "
    "dimensions, each an integer from 0 to 10 with a one-sentence rationale: relevance (does it "
    "answer the question and cover its key concepts), depth (explanation, reasoning, examples), "
    "clarity (structure and readability), technical (correct use of technical terms). "
    "Answer with JSON only, matching the schema."
)


def openai_client(api_key: str, base_url: str | None):
    """An `openai.OpenAI` client that never retries by itself (OpenAICaller's retries are
    bounded and honour Retry-After). `openai` is imported here, on first use: it takes about
    0.7 s, which a process with no key, or one that never scores, should not pay."""
    import openai

    return openai.OpenAI(api_key=api_key, base_url=base_url, max_retries=0)


class EssayScorer(Protocol):
    """Scores one essay answer on the rubric."""

    name: str

    def score(self, essay: QuestionInput) -> EssayScore: ...


class OfflineScorer:
    """The deterministic offline rubric scorer, used when no OpenAI key is configured."""

    def __init__(self) -> None:
        self.name = score_essay_offline("", (), "").scorer

    def score(self, essay: QuestionInput) -> EssayScore:
        """Score with the offline rubric."""
        return score_essay_offline(essay.prompt, essay.key_concepts, essay.answer)


class OpenAICaller:
    """Structured-output calls to the OpenAI chat API with bounded retries.

    One attempt is one call with a per-call timeout; 429, 5xx, timeouts, connection errors and
    answers that fail validation are retried with exponential backoff and jitter, honouring the
    server's Retry-After, bounded in count and in total time. Other refusals end at once.
    """

    def __init__(
        self,
        client,
        model: str,
        *,
        max_retries: int = 4,
        timeout: float = 30.0,
        max_total_seconds: float = 120.0,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.client = client
        self.model = model
        self.name = f"openai:{model}"
        self.max_retries = max_retries
        self.timeout = timeout
        self.max_total_seconds = max_total_seconds
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.calls = 0

    def with_retries(self, attempt_once: Callable[[], T]) -> T:
        """Run `attempt_once` until it succeeds, raises StageError, or the retry budget is spent."""
        started = time.monotonic()
        last_problem = "no attempt made"
        for attempt in range(self.max_retries + 1):
            try:
                return attempt_once()
            except Retryable as exc:
                last_problem, retry_after = str(exc), exc.retry_after
            delay = self._delay(attempt, retry_after)
            spent = time.monotonic() - started
            if attempt == self.max_retries or spent + delay > self.max_total_seconds:
                break
            log.warning("openai: %s; retrying in %.2fs", last_problem, delay)
            self.sleep(delay)
        raise StageError(
            f"The OpenAI API did not give a usable answer after {attempt + 1} "
            f"attempt{'s' if attempt else ''} ({last_problem})."
        )

    def complete(self, messages: list[dict], name: str, schema: dict) -> str:
        """One structured-output call: the message content, or Retryable / StageError."""
        import openai

        self.calls += 1
        try:
            completion = self.client.chat.completions.create(
                model=self.model,
                messages=messages,
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": name, "strict": True, "schema": schema},
                },
                temperature=0,
                timeout=self.timeout,
            )
        except openai.APITimeoutError as exc:
            raise Retryable(f"timed out after {self.timeout:g}s") from exc
        except openai.APIConnectionError as exc:
            raise Retryable(f"connection failed: {exc}") from exc
        except openai.APIStatusError as exc:
            if exc.status_code == 429 or exc.status_code >= 500:
                raise Retryable(
                    f"HTTP {exc.status_code}", _retry_after(exc.response.headers)
                ) from exc
            raise StageError(
                f"The OpenAI API refused the request (HTTP {exc.status_code})."
            ) from exc
        return (completion.choices[0].message.content or "") if completion.choices else ""

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff with jitter, or the server's Retry-After within bounds."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), 60.0)
        return min(30.0, 0.5 * 2**attempt) * self.rng.uniform(0.5, 1.5)


class OpenAIScorer(OpenAICaller):
    """Scores essays on the rubric with the OpenAI chat API."""

    def score(self, essay: QuestionInput) -> EssayScore:
        """A validated rubric for one essay, or StageError once retries are spent."""
        return self.with_retries(lambda: self._ask(essay))

    def _ask(self, essay: QuestionInput) -> EssayScore:
        """One call; an answer that is not a valid rubric is worth another attempt."""
        content = self.complete(rubric_messages(essay), "rubric", RUBRIC_SCHEMA)
        return parse_rubric(content, self.name)


def rubric_messages(essay: QuestionInput) -> list[dict]:
    """The chat messages for one essay, static parts first.

    Providers cache the longest prompt prefix they have seen recently, so what never changes
    (the instructions) comes first, then what every student answering this question shares
    (the question and its key concepts), and the student's own answer last.
    """
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": _user_message(essay)},
    ]


def parse_rubric(content: str, scorer: str) -> EssayScore:
    """The model's answer as a rubric, or Retryable when it is not a valid one."""
    try:
        return EssayScore.from_dict({"scorer": scorer, "rubric": json.loads(content)})
    except (ValueError, TypeError, KeyError) as exc:
        raise Retryable(f"malformed rubric JSON: {exc}") from exc


class Retryable(Exception):
    """A failure worth another attempt."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _retry_after(headers) -> float | None:
    """Seconds from `retry-after-ms` or `retry-after` (seconds form), if present and sane."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw:
            try:
                return float(raw) * scale
            except ValueError:
                continue
    return None


def _user_message(essay: QuestionInput) -> str:
    """The question, its key concepts and the student's answer, clearly delimited."""
    concepts = ", ".join(essay.key_concepts) or "(none listed)"
    return (
        f"Question:\n{essay.prompt}\n\nKey concepts a strong answer covers: {concepts}\n\n"
        f"Student answer (between the markers):\n<<<\n{essay.answer}\n>>>"
    )


def score_essays(
    essays: Sequence[QuestionInput],
    scorer: EssayScorer,
    on_progress: ProgressCallback = no_progress,
) -> list[dict]:
    """Score each essay, reporting progress after each; returns one result per essay."""
    results = []
    for done, essay in enumerate(essays, start=1):
        # A blank answer needs no model call: it scores zero on every dimension.
        rubric = scorer.score(essay) if essay.answered else score_essay_offline("", (), "")
        results.append(essay_result(essay, rubric))
        on_progress(done * 100 // len(essays))
    return results


def essay_result(essay: QuestionInput, rubric: EssayScore, fallback: str | None = None) -> dict:
    """One essay's entry in the gpt stage's result; `fallback` says why the offline scorer ran."""
    mean = rubric.mean()
    result = {
        "question_id": essay.id,
        "scorer": rubric.scorer,
        "rubric": rubric.to_dict()["rubric"],
        "mean": round(mean, 2),
        "points": round(essay.weight * mean / 10, 2),
        "max_points": essay.weight,
    }
    if fallback:
        result["fallback_reason"] = fallback
    return result
