"""The `rule_score` stage: theoretical questions right or wrong, profile questions for answering."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from webapp.scoring.base import QuestionInput
from webapp.scoring.vocabulary import QuestionType


@dataclass(frozen=True)
class RuleScore:
    """Points for the rule-scored questions, with one item per question."""

    score: float
    max_score: float
    items: list[dict]

    @property
    def percentage(self) -> float:
        """Score as a percentage of the maximum (0 when nothing was rule-scored)."""
        return round(100 * self.score / self.max_score, 1) if self.max_score else 0.0

    def to_dict(self) -> dict:
        """The shape of `rule_score` in the submit response."""
        return {
            "score": self.score,
            "max_score": self.max_score,
            "percentage": self.percentage,
            "items": self.items,
        }


def rule_score(questions: Sequence[QuestionInput]) -> RuleScore:
    """Score theoretical (full weight when correct) and profile (full weight when answered)."""
    items = []
    for q in questions:
        if q.type == QuestionType.THEORETICAL:
            correct = q.answered and q.answer.strip() == (q.correct_option or "")
            points = q.weight if correct else 0.0
            items.append(_item(q, points, correct=correct))
        elif q.type == QuestionType.PROFILE:
            items.append(_item(q, q.weight if q.answered else 0.0))
    score = round(sum(i["points"] for i in items), 2)
    max_score = round(sum(i["max_points"] for i in items), 2)
    return RuleScore(score=score, max_score=max_score, items=items)


def _item(q: QuestionInput, points: float, correct: bool | None = None) -> dict:
    """One line of the rule score."""
    item = {
        "question_id": q.id,
        "type": q.type,
        "topic": q.topic,
        "answered": q.answered,
        "points": round(points, 2),
        "max_points": q.weight,
    }
    if correct is not None:
        item["correct"] = correct
    return item


def missing_question_ids(questions: Sequence[QuestionInput]) -> list[int]:
    """Questions left unanswered (they score 0 and make the assessment degraded)."""
    return [q.id for q in questions if not q.answered]
