"""What every stage takes and raises."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

# Called with a percentage (0-100) as a stage makes headway.
ProgressCallback = Callable[[int], None]


def no_progress(percentage: int) -> None:
    """A progress callback that ignores progress (for callers that don't track it)."""


class StageError(Exception):
    """A stage gave up; the message says why in words a student or admin can read."""


@dataclass(frozen=True)
class QuestionInput:
    """What a stage needs to know about one question and the answer given to it."""

    id: int
    type: str
    weight: float
    prompt: str = ""
    answer: str = ""
    correct_option: str | None = None
    topic: str = ""
    key_concepts: tuple[str, ...] = field(default_factory=tuple)

    @property
    def answered(self) -> bool:
        """True when the student gave a non-blank answer."""
        return bool(self.answer and self.answer.strip())
