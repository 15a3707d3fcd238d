"""Question generation: a draft question on a topic, from the knowledge base or the OpenAI API.

Both generators ground the question in the knowledge base's resources for the topic and name
them in `source_ids`, so an admin can check the draft against its sources before adding it.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from typing import NamedTuple

from webapp.scoring.base import ProgressCallback, StageError, no_progress
from webapp.scoring.gpt import OpenAICaller, Retryable
from webapp.scoring.retrieval import STOPWORDS, KnowledgeBase
from webapp.scoring.vocabulary import QuestionType

# The question types a generator can write (profile questions are about the student).
QUESTION_TYPES: tuple[QuestionType, ...] = (QuestionType.THEORETICAL, QuestionType.ESSAY)
# The demo sets' weights: a multiple-choice question is worth 1, an essay 4.
WEIGHTS = {QuestionType.THEORETICAL: 1.0, QuestionType.ESSAY: 4.0}
OFFLINE_GENERATOR = "offline-generator-v1"
OPTION_IDS = "abcdef"
OPTION_COUNT = 4
ESSAY_CONCEPTS = 5
MAX_PROMPT = 1000
MAX_TEXT = 200
# Slugs that don't read well with their hyphens simply turned into spaces.
TOPIC_WORDS = {
    "classes-oop": "classes and OOP",
    "file-io": "file I/O",
    "iterators-generators": "iterators and generators",
    "modules-packages": "modules and packages",
    "variables-types": "variables and types",
}
# A distractor at most twice as long (or short) as the answer, where the area has enough of them.
MAX_LENGTH_RATIO = 2.0
_CODE = re.compile(r"[()_.@*=]")
_ACRONYMS = {"api": "API", "http": "HTTP", "json": "JSON", "rest": "REST", "sql": "SQL"}


def topic_label(topic: str) -> str:
    """A topic slug in words: `sql-basics` -> `SQL basics`."""
    if topic in TOPIC_WORDS:
        return TOPIC_WORDS[topic]
    return " ".join(_ACRONYMS.get(word, word) for word in topic.split("-"))


@dataclass(frozen=True)
class DraftQuestion:
    """A generated question an admin may add to a question set; validated on creation."""

    type: str
    prompt: str
    topic: str
    generator: str
    weight: float
    options: tuple[tuple[str, str], ...] = ()  # (id, text) pairs; theoretical only
    correct_option: str | None = None
    key_concepts: tuple[str, ...] = ()
    source_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """Reject drafts a question set could not use; ValueError says what is wrong."""
        if self.type not in QUESTION_TYPES:
            raise ValueError(f"type must be one of {QUESTION_TYPES}, got {self.type!r}")
        if not _text(self.prompt, MAX_PROMPT):
            raise ValueError(f"prompt must be non-blank text of at most {MAX_PROMPT} characters")
        if not all(_text(c, MAX_TEXT) for c in self.key_concepts):
            raise ValueError("key concepts must be short non-blank strings")
        if not isinstance(self.weight, int | float) or not 0 < self.weight <= 100:
            raise ValueError("weight must be a number from 0 (exclusive) to 100")
        if self.type == QuestionType.ESSAY:
            if self.options or self.correct_option is not None:
                raise ValueError("an essay has no options and no correct option")
            if len(self.key_concepts) < 2:
                raise ValueError("an essay needs at least two key concepts to be scored on")
            return
        ids = [option_id for option_id, _ in self.options]
        texts = [text.strip().lower() for _, text in self.options]
        if not 3 <= len(self.options) <= len(OPTION_IDS):
            raise ValueError(f"a theoretical question needs 3 to {len(OPTION_IDS)} options")
        if not all(_text(text, MAX_TEXT) for _, text in self.options):
            raise ValueError("options must be short non-blank strings")
        if len(set(ids)) != len(ids) or len(set(texts)) != len(texts):
            raise ValueError("option ids and texts must be unique")
        if self.correct_option not in ids:
            raise ValueError("the correct option must be one of the option ids")

    def to_dict(self) -> dict:
        """The draft as an operation result (and the shape `from_dict` reads back)."""
        return {
            "type": self.type,
            "prompt": self.prompt,
            "options": [{"id": i, "text": t} for i, t in self.options],
            "correct_option": self.correct_option,
            "weight": self.weight,
            "topic": self.topic,
            "key_concepts": list(self.key_concepts),
            "source_ids": list(self.source_ids),
            "generator": self.generator,
        }

    @classmethod
    def from_dict(cls, data: dict) -> DraftQuestion:
        """Inverse of to_dict; ValueError on anything malformed."""
        try:
            return cls(
                type=data["type"],
                prompt=data["prompt"],
                topic=data["topic"],
                generator=data["generator"],
                weight=data["weight"],
                options=tuple((o["id"], o["text"]) for o in data.get("options") or ()),
                correct_option=data.get("correct_option"),
                key_concepts=tuple(data.get("key_concepts") or ()),
                source_ids=tuple(data.get("source_ids") or ()),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a draft question: {exc!r}") from exc


def _text(value: object, limit: int) -> bool:
    """True for a non-blank string of at most `limit` characters."""
    return isinstance(value, str) and bool(value.strip()) and len(value) <= limit


# --- the knowledge base's view of topics -------------------------------------------------------


def _resources(kb: KnowledgeBase) -> list[dict]:
    """The knowledge base's validated resources."""
    # KnowledgeBase keeps them private; this is the one place generation reads them.
    return kb.resources


def topics(kb: KnowledgeBase) -> list[str]:
    """Every topic the knowledge base has resources for, sorted."""
    return sorted({topic for res in _resources(kb) for topic in res["topics"]})


def describe_sources(kb: KnowledgeBase, source_ids: list[str]) -> list[dict]:
    """`{"id", "title", "url"}` for each known id, in the order given."""
    by_id = {res["id"]: res for res in _resources(kb)}
    return [
        {"id": rid, "title": by_id[rid]["title"], "url": by_id[rid]["url"]}
        for rid in source_ids
        if rid in by_id
    ]


def topic_resources(kb: KnowledgeBase, topic: str) -> list[dict]:
    """Resources tagged with `topic`: the ones mainly about it first, then by id."""
    tagged = [res for res in _resources(kb) if topic in res["topics"]]
    return sorted(tagged, key=lambda res: (res["topics"][0] != topic, res["id"]))


# --- the offline generator ---------------------------------------------------------------------


def generate_offline(
    kb: KnowledgeBase,
    topic: str,
    question_type: str,
    on_progress: ProgressCallback = no_progress,
) -> DraftQuestion:
    """A draft built from the knowledge base alone; the same arguments give the same draft.

    Theoretical: the first skill of the topic's main resource that doesn't repeat the topic's
    name is the right answer; the distractors are skills from other topics of the same area,
    shaped like the answer (see `_distractors`): plausible, but wrong.
    Essay: the key concepts are the topic resources' skills, taken in turn from each resource.
    """
    sources = topic_resources(kb, topic)
    if not sources:
        raise StageError(f"The knowledge base has no resources on {topic!r}.")
    on_progress(40)
    build = {
        QuestionType.THEORETICAL: _offline_theoretical,
        QuestionType.ESSAY: _offline_essay,
    }.get(question_type)
    if build is None:
        raise StageError(f"Cannot generate {question_type!r} questions.")
    try:
        draft = build(kb, topic, sources)
    except ValueError as exc:  # too little material for a valid question
        raise StageError(f"Not enough on {topic!r} in the knowledge base: {exc}") from exc
    on_progress(90)
    return draft


def _offline_theoretical(kb: KnowledgeBase, topic: str, sources: list[dict]) -> DraftQuestion:
    """One right skill and OPTION_COUNT - 1 near-miss skills from the topic's area."""
    focus = sources[0]
    # An answer that repeats the topic's own words ("idempotent operations") gives itself away.
    label = topic_label(topic)
    correct = next((s for s in focus["skills"] if not _shares_a_word(s, label)), focus["skills"][0])
    distractors = _distractors(kb, topic, correct, sources)
    texts = [correct, *distractors]
    # Where the right answer sits is fixed per topic, but differs between topics.
    random.Random(f"{topic}:{QuestionType.THEORETICAL}").shuffle(texts)
    options = tuple(zip(OPTION_IDS, texts, strict=False))
    return DraftQuestion(
        type=QuestionType.THEORETICAL,
        prompt=f"Which of these concepts is part of {label}?",
        topic=topic,
        generator=OFFLINE_GENERATOR,
        weight=WEIGHTS[QuestionType.THEORETICAL],
        options=options,
        correct_option=OPTION_IDS[texts.index(correct)],
        key_concepts=(correct,),
        source_ids=(focus["id"],),
    )


def _distractors(kb: KnowledgeBase, topic: str, answer: str, sources: list[dict]) -> list[str]:
    """Up to OPTION_COUNT - 1 wrong options that a student who knows the topic can rule out.

    A candidate is a skill of a resource not tagged with the topic, that no resource on the topic
    lists, that shares no word with the topic's name or the answer (no giveaway, no near-synonym)
    and that the knowledge base's own search doesn't file under the topic. Those of the answer's
    form (code or prose) and length come first, from topics not used yet, then those of the
    resources BM25 finds closest to the topic's main resource; from outside the area only when it
    runs short. No two share a word.
    """
    label = topic_label(topic)
    on_topic = {skill.lower() for res in sources for skill in res["skills"]}
    focus = sources[0]
    near = [hit.source_id for hit in kb.search(f"{focus['title']} {focus['summary']}", len(kb))]
    closeness = {rid: rank for rank, rid in enumerate(near)}
    area = kb.areas.get(topic)
    topic_ids = {res["id"] for res in sources}
    candidates: list[_Candidate] = []
    for res in _resources(kb):
        if res["id"] in topic_ids:
            continue
        home = res["topics"][0]
        for index, skill in enumerate(res["skills"]):
            if (
                skill.lower() in on_topic
                or _shares_a_word(skill, label)
                or _shares_a_word(skill, answer)
                or _filed_under(kb, skill, topic_ids)
            ):
                continue
            shape = (
                area is not None and kb.areas.get(home) != area,  # no areas: all one area
                _code_like(skill) != _code_like(answer),
                _length_ratio(skill, answer) > MAX_LENGTH_RATIO,
            )
            nearness = (closeness.get(res["id"], len(kb)), abs(len(skill) - len(answer)), index)
            candidates.append(_Candidate(shape, nearness, res["id"], skill, home))
    chosen: list[str] = []
    homes: set[str] = set()
    while len(chosen) < OPTION_COUNT - 1:
        fresh = [c for c in candidates if not any(_shares_a_word(c.skill, d) for d in chosen)]
        if not fresh:
            break
        # Among equally well-shaped candidates, a topic not used yet spreads the options out.
        best = min(fresh, key=lambda c: (c.shape, c.home in homes, c.nearness, c.resource_id))
        chosen.append(best.skill)
        homes.add(best.home)
    return chosen


class _Candidate(NamedTuple):
    """A possible distractor; `shape` and `nearness` rank it, False and small numbers first."""

    shape: tuple[bool, bool, bool]  # outside the area, other form, length out of bounds
    nearness: tuple[int, int, int]  # BM25 rank of its resource, length difference, skill order
    resource_id: str
    skill: str
    home: str  # the main topic of its resource


def _filed_under(kb: KnowledgeBase, skill: str, topic_ids: set[str]) -> bool:
    """True when the resource BM25 finds first for `skill` is one of the topic's own."""
    hits = kb.search(skill, 1)
    return bool(hits) and hits[0].source_id in topic_ids


def _code_like(text: str) -> bool:
    """True for options written as code (`open() modes`, `@dataclass`), False for prose."""
    return bool(_CODE.search(text))


def _length_ratio(text: str, other: str) -> float:
    """How many times longer the longer of two texts is: 1.0 for equal lengths."""
    return max(len(text), len(other)) / max(1, min(len(text), len(other)))


def _shares_a_word(text: str, other: str) -> bool:
    """True when two texts share a content word, loosely: `caching` and `Cache-Control` do."""
    roots = {_root(w) for w in re.findall(r"[a-z0-9]+", other.lower()) if w not in STOPWORDS}
    return any(
        _root(w) in roots for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in STOPWORDS
    )


def _root(word: str) -> str:
    """The first four letters: crude, but enough to tie `idempotency` to `idempotent`."""
    return word[:4]


def _offline_essay(_kb: KnowledgeBase, topic: str, sources: list[dict]) -> DraftQuestion:
    """An explain-it prompt whose key concepts come from every resource on the topic in turn."""
    concepts: list[str] = []
    used: list[str] = []
    for depth in range(max(len(res["skills"]) for res in sources)):
        for res in sources:
            if depth < len(res["skills"]) and len(concepts) < ESSAY_CONCEPTS:
                skill = res["skills"][depth]
                if skill.lower() not in {c.lower() for c in concepts}:
                    concepts.append(skill)
                    used.append(res["id"])
    label = topic_label(topic)
    prompt = (
        f"Explain {label} to a fellow developer: the core ideas, how they fit together, and one "
        f"pitfall to avoid. Use a concrete example, and touch on {concepts[0]}, {concepts[1]} "
        f"and {concepts[2]}."
        if len(concepts) >= 3
        else f"Explain {label} to a fellow developer, with a concrete example and a pitfall."
    )
    return DraftQuestion(
        type=QuestionType.ESSAY,
        prompt=prompt,
        topic=topic,
        generator=OFFLINE_GENERATOR,
        weight=WEIGHTS[QuestionType.ESSAY],
        key_concepts=tuple(concepts),
        source_ids=tuple(dict.fromkeys(used)),
    )


# --- the OpenAI generator ----------------------------------------------------------------------

SYSTEM_PROMPT = (
    "You write assessment questions for a course on Python and web APIs. Write one question "
    "on the topic you are given, grounded in the reference material, for a student who has "
    "studied it. A multiple-choice question has exactly one correct option and plausible, "
    "clearly wrong distractors of similar length. An essay question asks the student to explain "
    "and give an example, and lists the key concepts a strong answer covers. "
    "Answer with JSON only, matching the schema."
)
_STRING_LIST = {"type": "array", "items": {"type": "string"}}
SCHEMAS = {
    QuestionType.THEORETICAL: {
        "type": "object",
        "additionalProperties": False,
        "required": ["prompt", "options", "correct_index", "key_concepts"],
        "properties": {
            "prompt": {"type": "string"},
            "options": _STRING_LIST,
            "correct_index": {"type": "integer"},
            "key_concepts": _STRING_LIST,
        },
    },
    QuestionType.ESSAY: {
        "type": "object",
        "additionalProperties": False,
        "required": ["prompt", "key_concepts"],
        "properties": {"prompt": {"type": "string"}, "key_concepts": _STRING_LIST},
    },
}
MAX_SOURCES = 4


@dataclass(frozen=True)
class _Brief:
    """What the model is asked to write, and the resources it is given to write it from."""

    topic: str
    question_type: str
    sources: tuple[dict, ...]


class OpenAIQuestionWriter(OpenAICaller):
    """Writes draft questions with the OpenAI chat API (structured output).

    It reuses OpenAICaller's attempt loop: exponential backoff with jitter, `Retry-After`, and
    the bounds on attempts and total time. Each attempt is `_ask`.
    """

    def write(
        self,
        kb: KnowledgeBase,
        topic: str,
        question_type: str,
        on_progress: ProgressCallback = no_progress,
    ) -> DraftQuestion:
        """A validated draft, or StageError once retries are spent or the API refuses."""
        if question_type not in SCHEMAS:
            raise StageError(f"Cannot generate {question_type!r} questions.")
        sources = tuple(topic_resources(kb, topic)[:MAX_SOURCES])
        if not sources:
            raise StageError(f"The knowledge base has no resources on {topic!r}.")
        on_progress(30)
        brief = _Brief(topic, question_type, sources)
        draft = self.with_retries(lambda: self._ask(brief))
        on_progress(90)
        return draft

    def _ask(self, brief: _Brief) -> DraftQuestion:
        """One call; an answer that does not make a valid draft is worth another attempt."""
        content = self.complete(
            [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": _brief_message(brief)},
            ],
            f"{brief.question_type}_question",
            SCHEMAS[brief.question_type],
        )
        try:
            return _draft_from_answer(json.loads(content), brief, self.name)
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            raise Retryable(f"unusable question JSON: {exc}") from exc


def _brief_message(brief: _Brief) -> str:
    """The topic, the question type and the reference material, clearly delimited."""
    kind = (
        "multiple-choice (theoretical)"
        if brief.question_type == QuestionType.THEORETICAL
        else "essay"
    )
    references = "\n\n".join(
        f"[{res['id']}] {res['title']}\nSkills: {', '.join(res['skills'])}\n{res['summary']}"
        for res in brief.sources
    )
    extra = (
        f"Give exactly {OPTION_COUNT} options and the 0-based index of the correct one."
        if brief.question_type == QuestionType.THEORETICAL
        else f"List {ESSAY_CONCEPTS} key concepts."
    )
    return (
        f"Topic: {topic_label(brief.topic)}\nQuestion type: {kind}\n{extra}\n\n"
        f"Reference material:\n<<<\n{references}\n>>>"
    )


def _draft_from_answer(answer: dict, brief: _Brief, generator: str) -> DraftQuestion:
    """The model's JSON as a validated draft; ValueError/TypeError/KeyError when it isn't one."""
    concepts = tuple(c.strip() for c in answer["key_concepts"])
    common = {
        "type": brief.question_type,
        "prompt": answer["prompt"].strip(),
        "topic": brief.topic,
        "generator": generator,
        "weight": WEIGHTS[brief.question_type],
        "key_concepts": concepts,
        "source_ids": tuple(res["id"] for res in brief.sources),
    }
    if brief.question_type == QuestionType.ESSAY:
        return DraftQuestion(**common)
    texts = [t.strip() for t in answer["options"]]
    if len(texts) > len(OPTION_IDS):
        raise ValueError(f"{len(texts)} options are too many")
    index = answer["correct_index"]
    if type(index) is not int or not 0 <= index < len(texts):
        raise ValueError(f"correct_index {index!r} is not an option")
    return DraftQuestion(
        **common,
        options=tuple(zip(OPTION_IDS, texts, strict=False)),
        correct_option=OPTION_IDS[index],
    )
