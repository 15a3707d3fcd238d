"""Tests for the knowledge base and BM25 retrieval behind the `rag` stage."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from webapp.scoring.retrieval import (
    DEFAULT_PATH,
    KnowledgeBase,
    Recommendation,
    WeakAreas,
    build_query,
    default_knowledge_base,
)

PYTHON_BASICS_TOPICS = (
    "variables-types",
    "control-flow",
    "functions",
    "recursion",
    "data-structures",
    "comprehensions",
    "exceptions",
    "modules-packages",
    "classes-oop",
    "testing",
    "iterators-generators",
    "file-io",
)
WEB_APIS_TOPICS = (
    "http-methods",
    "status-codes",
    "rest-design",
    "json",
    "authentication",
    "idempotency",
    "caching",
    "webhooks",
    "rate-limiting",
    "sql-basics",
    "pagination",
    "security",
)
ALL_TOPICS = PYTHON_BASICS_TOPICS + WEB_APIS_TOPICS
FIELDS = ("id", "title", "provider", "url", "topics", "skills", "level", "summary")

SQL_JOIN_ESSAY = (
    "To list every customer with their orders I would join the customers table to the orders "
    "table on the customer id, which is a foreign key in orders. An inner join returns only "
    "customers that have at least one matching order, while a left join keeps every customer "
    "and fills the order columns with NULL when there is no match."
)


@pytest.fixture(scope="module")
def shipped() -> list[dict]:
    return json.loads(DEFAULT_PATH.read_text(encoding="utf-8"))["resources"]


@pytest.fixture(scope="module")
def kb() -> KnowledgeBase:
    return default_knowledge_base()


@pytest.fixture(scope="module")
def by_id(shipped: list[dict]) -> dict[str, dict]:
    return {res["id"]: res for res in shipped}


def _write(tmp_path: Path, document: object) -> Path:
    path = tmp_path / "resources.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def _resource(**overrides: object) -> dict:
    base = {
        "id": "kb-900",
        "title": "A title",
        "provider": "Python docs",
        "url": "https://docs.python.org/3/",
        "topics": ["functions"],
        "skills": ["return values", "parameters", "scope"],
        "level": "beginner",
        "summary": "One sentence. Two sentences. Three sentences.",
    }
    return base | overrides


# --- the shipped knowledge base -------------------------------------------------------------


def test_shipped_knowledge_base_loads_with_at_least_48_resources(kb: KnowledgeBase) -> None:
    assert len(kb) >= 48
    assert len(KnowledgeBase.load(DEFAULT_PATH)) == len(kb)


def test_shipped_resources_have_unique_ids_and_every_field(shipped: list[dict]) -> None:
    ids = [res["id"] for res in shipped]
    assert len(ids) == len(set(ids))
    for res in shipped:
        assert set(FIELDS) <= set(res), res["id"]
        assert all(
            isinstance(res[f], str) and res[f].strip()
            for f in FIELDS
            if f not in ("topics", "skills")
        )
        assert res["url"].startswith("https://"), res["id"]
        assert res["level"] in ("beginner", "intermediate"), res["id"]
        assert 3 <= len(res["skills"]) <= 6, res["id"]
        assert set(res["topics"]) <= set(ALL_TOPICS), res["id"]


@pytest.mark.parametrize("topic", ALL_TOPICS)
def test_every_demo_topic_has_at_least_two_resources(shipped: list[dict], topic: str) -> None:
    assert sum(topic in res["topics"] for res in shipped) >= 2


# --- recommendations ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "topic",
    [
        "recursion",
        "comprehensions",
        "exceptions",
        "classes-oop",
        "file-io",
        "idempotency",
        "caching",
        "webhooks",
        "sql-basics",
        "security",
    ],
)
def test_missed_topic_brings_resources_on_that_topic_to_the_top(
    kb: KnowledgeBase, by_id: dict[str, dict], topic: str
) -> None:
    recs = kb.recommend(WeakAreas(missed_topics=(topic,)), limit=5)
    assert recs, topic
    assert topic in by_id[recs[0].source_id]["topics"]
    for rec in recs:
        assert isinstance(rec, Recommendation)
        assert rec.source_id in by_id
        assert rec.passage and rec.passage in by_id[rec.source_id]["summary"]
        assert rec.score > 0
        assert rec.title == by_id[rec.source_id]["title"]
    assert [r.score for r in recs] == sorted((r.score for r in recs), reverse=True)


@pytest.mark.parametrize("topic", ALL_TOPICS)
def test_each_demo_topic_alone_is_top_ranked_by_its_own_resources(
    kb: KnowledgeBase, by_id: dict[str, dict], topic: str
) -> None:
    top_two = kb.recommend(WeakAreas(missed_topics=(topic,)), limit=2)
    assert all(topic in by_id[rec.source_id]["topics"] for rec in top_two)


def test_missed_recursion_topic_brings_recursion_resources_to_the_top(
    kb: KnowledgeBase, by_id: dict[str, dict]
) -> None:
    recs = kb.recommend(WeakAreas(missed_topics=("recursion",)), limit=3)
    assert all("recursion" in by_id[r.source_id]["topics"] for r in recs)


def test_essay_about_sql_joins_with_no_missed_topics_recommends_sql_resources(
    kb: KnowledgeBase, by_id: dict[str, dict]
) -> None:
    recs = kb.recommend(WeakAreas(essay_texts=(SQL_JOIN_ESSAY,)), limit=3)
    assert recs
    assert "sql-basics" in by_id[recs[0].source_id]["topics"]
    assert "join" in recs[0].passage.lower()
    assert sum("sql-basics" in by_id[r.source_id]["topics"] for r in recs) >= 2


def test_missing_concept_steers_the_passage_to_the_sentence_that_explains_it(
    kb: KnowledgeBase,
) -> None:
    recs = kb.recommend(WeakAreas(missing_concepts=("Idempotency-Key header",)), limit=1)
    assert recs and "Idempotency-Key" in recs[0].passage


def test_passage_is_one_or_two_sentences_of_the_summary(
    kb: KnowledgeBase, by_id: dict[str, dict]
) -> None:
    for rec in kb.search("call stack base case recursion", limit=5):
        summary = by_id[rec.source_id]["summary"]
        assert rec.passage in summary
        assert rec.passage[-1] in ".!?" and len(rec.passage) < len(summary)


def test_empty_weak_areas_recommend_nothing(kb: KnowledgeBase) -> None:
    assert kb.recommend(WeakAreas()) == []
    assert build_query(WeakAreas()) == ""
    assert kb.recommend(WeakAreas(weak_dimensions=("not-a-dimension",), essay_texts=("",))) == []


def test_query_with_no_known_words_returns_no_results(kb: KnowledgeBase) -> None:
    assert kb.search("zzqx wibble") == []
    assert kb.search("") == []
    assert kb.search("recursion", limit=0) == []


def test_limit_caps_the_number_of_recommendations(kb: KnowledgeBase) -> None:
    assert len(kb.recommend(WeakAreas(missed_topics=("caching", "json")), limit=3)) == 3


def test_recommendations_are_deterministic(kb: KnowledgeBase) -> None:
    weak = WeakAreas(
        missed_topics=("webhooks", "recursion"),
        weak_dimensions=("depth", "clarity"),
        essay_texts=(SQL_JOIN_ESSAY,),
        missing_concepts=("base case",),
    )
    first = [r.to_dict() for r in kb.recommend(weak, limit=8)]
    fresh = KnowledgeBase.load()
    assert [r.to_dict() for r in fresh.recommend(weak, limit=8)] == first
    assert [r.to_dict() for r in kb.recommend(weak, limit=8)] == first
    assert build_query(weak) == build_query(weak)


def test_build_query_weighs_missed_topics_above_concepts_dimensions_and_essays() -> None:
    weak = WeakAreas(
        missed_topics=("caching",),
        weak_dimensions=("depth",),
        essay_texts=("Paginating with offsets gets slow on deep pages.",),
        missing_concepts=("ETag",),
    )
    words = build_query(weak).split()
    assert words.count("caching") == 3
    assert words.count("ETag") >= 2
    assert words.index("caching") < words.index("trade-offs") < words.index("paginating")


def test_equal_scores_are_ordered_by_resource_id(tmp_path: Path) -> None:
    twins = [
        _resource(id="kb-002", summary="Twin text about tuples. Second. Third."),
        _resource(id="kb-001", summary="Twin text about tuples. Second. Third."),
        _resource(id="kb-003", title="Other", summary="Nothing alike here. At all. Really."),
    ]
    kb = KnowledgeBase.load(_write(tmp_path, {"version": 1, "resources": twins}))
    recs = kb.search("tuples")
    assert [r.source_id for r in recs] == ["kb-001", "kb-002"]
    assert recs[0].score == recs[1].score


def test_recommendation_to_dict_has_the_documented_keys(kb: KnowledgeBase) -> None:
    rec = kb.search("ETag If-None-Match", limit=1)[0]
    assert rec.to_dict() == {
        "title": rec.title,
        "provider": rec.provider,
        "url": rec.url,
        "source_id": rec.source_id,
        "passage": rec.passage,
        "score": rec.score,
    }
    assert rec.score == round(rec.score, 4)


def test_search_is_fast(kb: KnowledgeBase) -> None:
    query = build_query(
        WeakAreas(missed_topics=("recursion", "caching"), essay_texts=(SQL_JOIN_ESSAY,))
    )
    start = time.perf_counter()
    for _ in range(100):
        kb.search(query)
    assert (time.perf_counter() - start) / 100 < 0.005


def test_default_knowledge_base_is_loaded_once_and_reused() -> None:
    assert default_knowledge_base() is default_knowledge_base()


# --- malformed files ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "version"),
        ({"version": 2, "resources": [_resource()]}, "version"),
        ({"version": 1, "resources": []}, "non-empty list"),
        ({"version": 1, "resources": ["kb-001"]}, "missing field"),
        ({"version": 1, "resources": [{"id": "kb-001", "title": "x"}]}, "summary"),
        ({"version": 1, "resources": [_resource(summary="")]}, "'summary'"),
        ({"version": 1, "resources": [_resource(topics="recursion")]}, "'topics'"),
        ({"version": 1, "resources": [_resource(topics=["Not A Slug"])]}, "slugs"),
        ({"version": 1, "resources": [_resource(level="expert")]}, "'level'"),
        ({"version": 1, "resources": [_resource(), _resource()]}, "duplicate id"),
        ({"version": 1, "areas": ["http"], "resources": [_resource()]}, "areas"),
        ({"version": 1, "areas": {"web": "http"}, "resources": [_resource()]}, "topic slugs"),
        (
            {"version": 1, "areas": {"a": ["json"], "b": ["json"]}, "resources": [_resource()]},
            "two areas",
        ),
    ],
)
def test_malformed_resources_file_raises_value_error_naming_the_problem(
    tmp_path: Path, document: object, message: str
) -> None:
    path = _write(tmp_path, document)
    with pytest.raises(ValueError, match=message) as info:
        KnowledgeBase.load(path)
    assert str(path) in str(info.value)


def test_file_that_is_not_json_raises_value_error(tmp_path: Path) -> None:
    path = tmp_path / "resources.json"
    path.write_text('{"version": 1, "resources": [', encoding="utf-8")
    with pytest.raises(ValueError, match="not valid JSON"):
        KnowledgeBase.load(path)
