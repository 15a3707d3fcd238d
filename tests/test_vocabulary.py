"""The product's words (webapp.scoring.vocabulary) say what SPEC 2 and 5 say."""

from __future__ import annotations

from webapp.scoring.vocabulary import (
    EVENT_TYPE_DESCRIPTIONS,
    RUBRIC_DIMENSIONS,
    STAGE_LABELS,
    STAGE_WEIGHTS,
    WORKER_STAGES,
    AssessmentStatus,
    EventType,
    QuestionType,
    Stage,
    StageStatus,
)


def test_stage_weights_are_the_specs_and_sum_to_100():
    assert STAGE_WEIGHTS == {"rule_score": 20, "gpt": 30, "rag": 30, "fusion": 20}
    assert sum(STAGE_WEIGHTS.values()) == 100
    assert set(STAGE_LABELS) == set(Stage)
    assert WORKER_STAGES == (Stage.GPT, Stage.RAG, Stage.FUSION)


def test_question_types_statuses_and_rubric_are_the_specs():
    assert list(QuestionType) == ["theoretical", "profile", "essay"]
    assert RUBRIC_DIMENSIONS == ("relevance", "depth", "clarity", "technical")
    assert [s for s in AssessmentStatus if s.finished] == ["completed", "failed"]
    assert [s for s in StageStatus if s.finished] == ["completed", "failed", "skipped"]


def test_every_event_type_is_described():
    assert set(EVENT_TYPE_DESCRIPTIONS) == set(EventType)
    assert len(EventType) == 8
