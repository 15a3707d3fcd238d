"""Pure stage logic: rule score, fusion, and the OpenAI scorer against a real local server."""

from __future__ import annotations

import openai
import pytest

from tests.openai_server import Reply, rubric_reply
from webapp.scoring.base import QuestionInput, StageError
from webapp.scoring.fusion import build_report
from webapp.scoring.gpt import OfflineScorer, OpenAIScorer, score_essays
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


def scorer_for(server, **kwargs) -> OpenAIScorer:
    client = openai.OpenAI(api_key="test", base_url=server.base_url, max_retries=0)
    sleeps: list[float] = []
    scorer = OpenAIScorer(client, "test-model", sleep=sleeps.append, **kwargs)
    scorer.sleeps = sleeps
    return scorer


ESSAY = QuestionInput(
    id=1, type="essay", weight=4.0, prompt="Explain recursion.", answer="A base case."
)


def test_openai_scorer_parses_the_structured_answer(openai_server):
    scorer = scorer_for(openai_server)
    result = scorer.score(ESSAY)
    assert result.scorer == "openai:test-model"
    assert result.rubric["relevance"].score == 8
    assert openai_server.count == 1
    sent = openai_server.requests[0]["body"]
    assert sent["response_format"]["type"] == "json_schema"
    assert "A base case." in sent["messages"][1]["content"]


def test_openai_scorer_honours_retry_after_on_429(openai_server):
    openai_server.then(Reply(status=429, body={"error": {}}, headers={"Retry-After": "3"}))
    scorer = scorer_for(openai_server)
    assert scorer.score(ESSAY).rubric["depth"].score == 7
    assert openai_server.count == 2
    assert scorer.sleeps == [3.0]


def test_openai_scorer_gives_up_after_retries_on_500(openai_server):
    openai_server.default = Reply(status=500, body={"error": {"message": "down"}})
    scorer = scorer_for(openai_server, max_retries=2)
    with pytest.raises(StageError, match=r"after 3 attempts \(HTTP 500\)"):
        scorer.score(ESSAY)
    assert openai_server.count == 3
    assert len(scorer.sleeps) == 2 and scorer.sleeps[1] > scorer.sleeps[0] * 0.5


def test_openai_scorer_retries_malformed_json(openai_server):
    openai_server.then(rubric_reply(content="{not json"))
    scorer = scorer_for(openai_server)
    assert scorer.score(ESSAY).rubric["clarity"].score == 9
    assert openai_server.count == 2


def test_openai_scorer_times_out_and_retries(openai_server):
    slow = rubric_reply()
    slow.delay = 1.5
    openai_server.then(slow)
    scorer = scorer_for(openai_server, timeout=0.3)
    assert scorer.score(ESSAY).rubric["technical"].score == 6
    assert openai_server.count == 2


def test_openai_scorer_does_not_retry_a_400(openai_server):
    openai_server.default = Reply(status=400, body={"error": {"message": "bad"}})
    with pytest.raises(StageError, match="refused"):
        scorer_for(openai_server).score(ESSAY)
    assert openai_server.count == 1


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
