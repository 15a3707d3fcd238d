"""The `rag` stage: learning resources for the student's weak areas, from the knowledge base."""

from __future__ import annotations

import re
from collections.abc import Sequence

from webapp.scoring.base import ProgressCallback, QuestionInput, no_progress
from webapp.scoring.retrieval import WeakAreas, default_knowledge_base
from webapp.scoring.rubric import score_essay_offline
from webapp.scoring.vocabulary import QuestionType

# Rubric dimensions scored below this (0-10) by the offline rubric count as weak.
WEAK_DIMENSION_BELOW = 5


def weak_areas(questions: Sequence[QuestionInput]) -> WeakAreas:
    """Missed theoretical topics, weak rubric dimensions, missing key concepts, essay content.

    `rag` runs beside `gpt`, so it cannot wait for the essay rubric; it estimates the weak
    dimensions with the deterministic offline rubric instead (cheap, and the same for a rerun).
    """
    missed = []
    essays = []
    missing_concepts = []
    weak_dimensions = []
    for q in questions:
        if q.type == QuestionType.THEORETICAL:
            if not q.answered or q.answer.strip() != (q.correct_option or ""):
                missed.append(q.topic)
        elif q.type == QuestionType.ESSAY:
            if q.answered:
                essays.append(q.answer)
                rubric = score_essay_offline(q.prompt, q.key_concepts, q.answer).rubric
                weak_dimensions += [
                    name for name, dim in rubric.items() if dim.score < WEAK_DIMENSION_BELOW
                ]
            text = _normalise(q.answer)
            missing_concepts += [c for c in q.key_concepts if _normalise(c) not in text]
            if not q.answered and q.topic:
                missed.append(q.topic)
    return WeakAreas(
        missed_topics=tuple(dict.fromkeys(t for t in missed if t)),
        weak_dimensions=tuple(dict.fromkeys(weak_dimensions)),
        essay_texts=tuple(essays),
        missing_concepts=tuple(dict.fromkeys(missing_concepts)),
    )


def recommend(
    questions: Sequence[QuestionInput], limit: int = 5, on_progress: ProgressCallback = no_progress
) -> list[dict]:
    """Recommendations (title, provider, url, source_id, passage, score), best first."""
    weak = weak_areas(questions)
    on_progress(40)
    found = default_knowledge_base().recommend(weak, limit=limit)
    on_progress(90)
    return [r.to_dict() for r in found]


def _normalise(text: str) -> str:
    """Lowercase with hyphens and runs of whitespace as single spaces, for concept matching."""
    return re.sub(r"[\s\-_]+", " ", (text or "").lower())
