"""The `fusion` stage: the final report from the rule score, essay rubrics and recommendations."""

from __future__ import annotations

from collections.abc import Sequence

from webapp.scoring.vocabulary import QuestionType


def build_report(
    *,
    assessment_id: int,
    rule_items: Sequence[dict],
    essays: Sequence[dict],
    essay_question_ids: Sequence[int],
    essay_weights: dict[int, float],
    recommendations: Sequence[dict],
    degraded_reasons: Sequence[str],
) -> dict:
    """Sum points per question type into the report the result endpoint returns.

    Essays the gpt stage did not score (it failed) count 0 of their weight, so the total stays
    honest, and the reasons say so.
    """
    sections = {name: {"score": 0.0, "max_score": 0.0} for name in QuestionType}
    for item in rule_items:
        section = sections[item["type"]]
        section["score"] += item["points"]
        section["max_score"] += item["max_points"]
    scored = {e["question_id"]: e for e in essays}
    for qid in essay_question_ids:
        sections[QuestionType.ESSAY]["max_score"] += essay_weights[qid]
        if qid in scored:
            sections[QuestionType.ESSAY]["score"] += scored[qid]["points"]
    for section in sections.values():
        section["score"] = round(section["score"], 2)
        section["max_score"] = round(section["max_score"], 2)
        section["percentage"] = _percent(section["score"], section["max_score"])
    total = round(sum(s["score"] for s in sections.values()), 2)
    max_total = round(sum(s["max_score"] for s in sections.values()), 2)
    return {
        "assessment_id": assessment_id,
        "total": total,
        "max_total": max_total,
        "percentage": _percent(total, max_total),
        "degraded": bool(degraded_reasons),
        "degraded_reasons": list(degraded_reasons),
        "sections": sections,
        "essays": [
            {"question_id": e["question_id"], "scorer": e["scorer"], "rubric": e["rubric"]}
            for e in essays
        ],
        "recommendations": list(recommendations),
    }


def _percent(score: float, max_score: float) -> float:
    """A percentage with one decimal, 0 when there is nothing to score."""
    return round(100 * score / max_score, 1) if max_score else 0.0
