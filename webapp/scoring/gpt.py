"""The `gpt` stage: each essay scored on the rubric, by the OpenAI API or the offline scorer."""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

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


class OfflineScorer:
    """The deterministic offline rubric scorer (the gpt stage with no OpenAI key; with a key,
    essays are scored in batches: webapp.services.llm.batch)."""

    def __init__(self) -> None:
        self.name = score_essay_offline("", (), "").scorer

    def score(self, essay: QuestionInput) -> EssayScore:
        """Score with the offline rubric."""
        return score_essay_offline(essay.prompt, essay.key_concepts, essay.answer)


# One structured-output request: (messages, schema name, schema) -> the answer's content.
# Raises Retryable for a failure worth another attempt, StageError for a refusal.
Complete = Callable[[list[dict], str, dict], str]


class OpenAICaller:
    """Bounded retries around one structured-output request to the OpenAI chat API.

    `complete` makes one attempt (webapp.services.llm.calls.Gate: the fleet's rate limiter and
    circuit breaker, then the call). A Retryable failure is retried with exponential backoff and
    jitter, or after the wait it names (Retry-After, the breaker's cooldown), bounded in count
    and in total time.
    """

    def __init__(
        self,
        complete: Complete,
        name: str,
        *,
        max_retries: int = 4,
        max_total_seconds: float = 120.0,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.complete = complete
        self.name = name
        self.max_retries = max_retries
        self.max_total_seconds = max_total_seconds
        self.sleep = sleep
        self.rng = rng or random.Random()

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

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff with jitter, or the server's Retry-After within bounds."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), 60.0)
        return min(30.0, 0.5 * 2**attempt) * self.rng.uniform(0.5, 1.5)


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


def _user_message(essay: QuestionInput) -> str:
    """The question, its key concepts and the student's answer, clearly delimited."""
    concepts = ", ".join(essay.key_concepts) or "(none listed)"
    return (
        f"Question:\n{essay.prompt}\n\nKey concepts a strong answer covers: {concepts}\n\n"
        f"Student answer (between the markers):\n<<<\n{essay.answer}\n>>>"
    )


def score_essays(
    essays: Sequence[QuestionInput],
    scorer: OfflineScorer,
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
