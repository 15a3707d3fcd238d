"""Pure stage logic: rule score, fusion, the offline essay scorer, rag's weak areas.

Scoring essays with the OpenAI API is the batch's (tests/test_gpt_pipeline.py, test_llm_*.py)."""

from __future__ import annotations

import pytest

from webapp.scoring.base import QuestionInput
from webapp.scoring.fusion import build_report
from webapp.scoring.gpt import OfflineScorer, score_essays
from webapp.scoring.rule_score import missing_question_ids, rule_score

QUESTIONS = [
    QuestionInput(id=1, type="theoretical", weight=1.0, answer="b", correct_option="b", topic="t1"),
    QuestionInput(id=2, type="theoretical", weight=2.0, answer="a", correct_option="c", topic="t2"),
    QuestionInput(id=3, type="theoretical", weight=1.0, answer="", correct_option="a", topic="t3"),
    QuestionInput(id=4, type="profile", weight=1.0, answer="I like Python"),
    QuestionInput(id=5, type="profile", weight=1.0, answer="   "),
    QuestionInput(
        id=6, type="essay", weight=4.0, prompt="Explain recursion.", answer="It calls itself."
    ),
]


def test_rule_score_scores_correct_options_and_answered_profiles():
    score = rule_score(QUESTIONS)
    assert score.score == 2.0  # q1 correct (1) + q4 answered (1)
    assert score.max_score == 6.0
    assert score.percentage == pytest.approx(33.3)
    assert [i["question_id"] for i in score.items] == [1, 2, 3, 4, 5]
    assert [i.get("correct") for i in score.items[:3]] == [True, False, False]


def test_blank_answers_are_missing():
    assert missing_question_ids(QUESTIONS) == [3, 5]


def test_fusion_sums_sections_and_counts_unscored_essays_as_zero():
    rule = rule_score(QUESTIONS)
    report = build_report(
        assessment_id=9,
        rule_items=rule.items,
        essays=[],
        essay_question_ids=[6],
        essay_weights={6: 4.0},
        recommendations=[],
        degraded_reasons=["The gpt stage failed: boom"],
    )
    assert report["sections"]["essay"] == {"score": 0.0, "max_score": 4.0, "percentage": 0.0}
    assert report["total"] == 2.0 and report["max_total"] == 10.0
    assert report["percentage"] == 20.0
    assert report["degraded"] is True


def test_fusion_is_deterministic():
    kwargs = dict(
        assessment_id=1, rule_items=rule_score(QUESTIONS).items, essays=[],
        essay_question_ids=[6], essay_weights={6: 4.0}, recommendations=[], degraded_reasons=[],
    )  # fmt: skip
    assert build_report(**kwargs) == build_report(**kwargs)


def test_offline_essay_points_follow_the_rubric_mean():
    essays = [q for q in QUESTIONS if q.type == "essay"]
    seen = []
    [result] = score_essays(essays, OfflineScorer(), seen.append)
    assert result["points"] == pytest.approx(4.0 * result["mean"] / 10, abs=0.01)
    assert result["scorer"] == "offline-rubric-v1"
    assert seen == [100]


def test_rag_weak_areas_name_missed_topics_missing_concepts_and_weak_dimensions():
    from webapp.scoring.rag import weak_areas

    questions = [
        QuestionInput(id=1, type="theoretical", weight=1, answer="a", correct_option="b",
                      topic="caching"),
        QuestionInput(id=2, type="theoretical", weight=1, answer="b", correct_option="b",
                      topic="json"),
        QuestionInput(
            id=3, type="essay", weight=4, prompt="Explain how recursion works in Python.",
            key_concepts=("base case", "call stack"), answer="It is when a function calls itself.",
        ),
    ]  # fmt: skip
    weak = weak_areas(questions)
    assert weak.missed_topics == ("caching",)
    assert weak.missing_concepts == ("base case", "call stack")
    assert "depth" in weak.weak_dimensions  # a one-line essay is thin
    assert weak.essay_texts == ("It is when a function calls itself.",)
