"""BM25 retrieval of learning resources from the knowledge base shipped with the worker."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import asdict, dataclass
from functools import cache, cached_property
from pathlib import Path
from typing import Any

DEFAULT_PATH = Path(__file__).resolve().parent / "knowledge" / "resources.json"
LEVELS = ("beginner", "intermediate")
REQUIRED_FIELDS = ("id", "title", "provider", "url", "topics", "skills", "level", "summary")

# Kept inline rather than taken from a library so tokens never change with a dependency upgrade.
_STOPWORD_TEXT = (
    "a about above after again against all also am an and any are as at be because been before "
    "being below between both but by can could did do does doing down during each few for from "
    "further had has have having he her here hers him his how i if in into is it its itself just "
    "me more most my no nor not now of off on once only or other our ours out over own same she "
    "should so some such than that the their theirs them then there these they this those through "
    "to too under until up very was we were what when where which while who whom why will with "
    "would you your yours"
)
STOPWORDS = frozenset(_STOPWORD_TEXT.split())
# Rubric dimensions name no topic; these words only nudge towards explanatory passages.
DIMENSION_TERMS = {
    "relevance": "purpose when to use core idea",
    "depth": "trade-offs edge cases pitfalls why",
    "clarity": "example step by step explain",
    "technical": "precise semantics correct syntax",
}
# BM25 sums repeated query terms, so repetition is how the query expresses priority.
TOPIC_REPEAT, CONCEPT_REPEAT = 3, 2
MAX_TOPIC_SKILLS, MAX_ESSAY_TERMS, MAX_ESSAY_CHARS = 8, 12, 4000
# Title, topics and skills are short but say what a resource is about, so they count extra.
FIELD_REPEAT = {"title": 2, "topics": 3, "skills": 2, "summary": 1}

_WORD = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
# A sentence runs to . ! or ? before whitespace, but not to the dots of "..." or "e.g."/"i.e.".
_SENTENCE = re.compile(r"\S.*?(?:(?<!\.)(?<!\be\.g)(?<!\bi\.e)[.!?](?=\s|$)|$)", re.DOTALL)


def _stem(word: str) -> str:
    """Strip a few English suffixes so plurals and -ing/-ed forms meet their base form."""
    if word.endswith("sses"):
        word = word[:-2]
    elif word.endswith("ies") and len(word) > 4:
        word = word[:-3] + "y"
    elif word.endswith("s") and not word.endswith(("ss", "us", "is")) and len(word) > 3:
        word = word[:-1]
    for suffix in ("ing", "ed"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    # Dropping a final "e" lets "cache", "cached" and "caching" share one stem.
    return word[:-1] if word.endswith("e") and len(word) > 3 else word


def tokenize(text: str) -> list[str]:
    """Lowercase, split on non-alphanumerics, keep hyphenated words whole and as parts, stem."""
    tokens: list[str] = []
    for word in _WORD.findall(text.lower()):
        parts = word.split("-")
        if len(parts) > 1:
            tokens.append(word)  # exact topic slugs like "rate-limiting" are the strongest signal
        tokens.extend(_stem(p) for p in parts if p not in STOPWORDS)
    return tokens


@dataclass(frozen=True)
class Recommendation:
    """One recommended resource with the passage of its summary that matched best."""

    title: str
    provider: str
    url: str
    source_id: str
    passage: str
    score: float

    def to_dict(self) -> dict:
        """Plain dict for JSON serialisation."""
        return asdict(self)


@dataclass(frozen=True)
class WeakAreas:
    """What a student got wrong or left out, as collected by the earlier scoring stages."""

    missed_topics: tuple[str, ...] = ()
    weak_dimensions: tuple[str, ...] = ()
    essay_texts: tuple[str, ...] = ()
    missing_concepts: tuple[str, ...] = ()


def _resource_problem(res: Any) -> str | None:
    """What is wrong with one resource entry, or None when it is well-formed."""
    missing = [f for f in REQUIRED_FIELDS if f not in res] if isinstance(res, dict) else ["all"]
    if missing:
        return f"missing field(s): {', '.join(missing)}"
    for field in ("id", "title", "provider", "url", "summary"):
        if not isinstance(res[field], str) or not res[field].strip():
            return f"{field!r} must be a non-empty string"
    for field in ("topics", "skills"):
        if not isinstance(res[field], list) or not res[field]:
            return f"{field!r} must be a non-empty list"
        if not all(isinstance(v, str) and v.strip() for v in res[field]):
            return f"{field!r} must contain only non-empty strings"
    if not all(_WORD.fullmatch(t) for t in res["topics"]):
        return "'topics' must be lowercase slugs like 'sql-basics'"
    return None if res["level"] in LEVELS else f"'level' must be one of {', '.join(LEVELS)}"


def _validate(data: Any, source: str) -> list[dict]:
    """Check the knowledge-base document shape and return its resources."""
    resources = data.get("resources") if isinstance(data, dict) else None
    if not isinstance(data, dict) or data.get("version") != 1:
        raise ValueError(f'{source}: expected a JSON object with "version": 1')
    if not isinstance(resources, list) or not resources:
        raise ValueError(f'{source}: "resources" must be a non-empty list')
    seen: set[str] = set()
    for index, res in enumerate(resources):
        problem = _resource_problem(res)
        if problem is None and res["id"] in seen:
            problem = "duplicate id"
        if problem:
            rid = res.get("id", "?") if isinstance(res, dict) else "?"
            raise ValueError(f"{source}: resource #{index} ({rid}): {problem}")
        seen.add(res["id"])
    return resources


def _validate_areas(data: dict, source: str) -> dict[str, str]:
    """The optional `"areas"` object (area name -> its topics) as a topic -> area map."""
    areas = data.get("areas", {})
    if not isinstance(areas, dict):
        raise ValueError(f'{source}: "areas" must map an area name to a list of topic slugs')
    area_of: dict[str, str] = {}
    for area, area_topics in areas.items():
        if not isinstance(area_topics, list) or not all(
            isinstance(t, str) and _WORD.fullmatch(t) for t in area_topics
        ):
            raise ValueError(f'{source}: area {area!r} must list topic slugs like "sql-basics"')
        for topic in area_topics:
            if topic in area_of:
                raise ValueError(f"{source}: topic {topic!r} is in two areas")
            area_of[topic] = area
    return area_of


def _doc_tokens(res: dict) -> list[str]:
    """Index tokens of one resource, its short descriptive fields repeated for weight."""
    text = {f: " ".join(v) if isinstance(v, list) else v for f, v in res.items()}
    return [token for f, n in FIELD_REPEAT.items() for token in tokenize(text[f]) * n]


class KnowledgeBase:
    """Learning resources indexed with BM25 (bm25s) for weak-area recommendations."""

    def __init__(self, resources: list[dict], areas: dict[str, str] | None = None) -> None:
        """Index validated resources; use KnowledgeBase.load() to read them from disk."""
        self._resources = resources
        self._areas = dict(areas or {})
        docs = [_doc_tokens(res) for res in resources]
        self._docs = docs
        df = Counter(t for doc in docs for t in set(doc))
        self._idf = {t: math.log(1 + len(docs) / n) for t, n in df.items()}
        # Sorted token tuples, not sets, so passage weights sum in a hash-independent order.
        self._sentences = [
            [(m.span(), tuple(sorted(set(tokenize(m.group()))))) for m in _SENTENCE.finditer(s)]
            for s in (res["summary"] for res in resources)
        ]
        skills: dict[str, Counter[str]] = {}
        for res in resources:  # a resource's first topic is the one it is mainly about
            skills.setdefault(res["topics"][0], Counter()).update(res["skills"])
        self._topic_skills = {
            topic: tuple(sorted(c, key=lambda s: (-c[s], s))[:MAX_TOPIC_SKILLS])
            for topic, c in skills.items()
        }

    @cached_property
    def _bm25(self):
        """The BM25 index, built on first search: bm25s brings NumPy, which the web process
        (it only reads topics and resources) then never loads."""
        import bm25s

        retriever = bm25s.BM25()
        retriever.index(self._docs, show_progress=False)
        return retriever

    def build_index(self) -> None:
        """Build the BM25 index now rather than on the first search (the worker does, before
        it forks, so no job builds it again)."""
        _ = self._bm25

    @classmethod
    def load(cls, path: str | Path | None = None) -> KnowledgeBase:
        """Read, validate and index a resources.json file (default: the one shipped with worker)."""
        path = Path(path) if path is not None else DEFAULT_PATH
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from err
        return cls(_validate(data, str(path)), _validate_areas(data, str(path)))

    @property
    def resources(self) -> list[dict]:
        """The resources as loaded, in file order (treat as read-only)."""
        return self._resources

    @property
    def areas(self) -> dict[str, str]:
        """Each topic's area (a group of related topics, e.g. `http`), for those the file groups."""
        return self._areas

    def __len__(self) -> int:
        """Number of resources."""
        return len(self._resources)

    def _passage(self, doc: int, query: Counter[str]) -> str:
        """Best-matching summary sentence, joined with its neighbour when that one matches too."""
        sentences = self._sentences[doc]
        weights = [sum(query[t] * self._idf.get(t, 0.0) for t in toks) for _, toks in sentences]
        best = max(range(len(sentences)), key=lambda i: (weights[i], -i))
        start, end = sentences[best][0]
        near = [i for i in (best - 1, best + 1) if 0 <= i < len(sentences) and weights[i] > 0]
        if weights[best] > 0 and near:
            (other_start, other_end), _ = sentences[max(near, key=lambda i: (weights[i], -i))]
            start, end = min(start, other_start), max(end, other_end)
        return self._resources[doc]["summary"][start:end]

    def search(self, query: str, limit: int = 5) -> list[Recommendation]:
        """Top resources for a free-text query, best first; ties go to the lower resource id."""
        tokens = [t for t in tokenize(query) if t in self._bm25.vocab_dict]
        if not tokens or limit <= 0:
            return []
        scores = [round(float(s), 4) for s in self._bm25.get_scores(tokens)]
        order = sorted(range(len(scores)), key=lambda i: (-scores[i], self._resources[i]["id"]))
        counts, found = Counter(tokens), []
        for i in (i for i in order[:limit] if scores[i] > 0):
            res, passage = self._resources[i], self._passage(i, counts)
            found.append(
                Recommendation(
                    res["title"], res["provider"], res["url"], res["id"], passage, scores[i]
                )
            )
        return found

    def recommend(self, weak: WeakAreas, limit: int = 5) -> list[Recommendation]:
        """Resources for a student's weak areas; [] when the weak areas say nothing."""
        query = _build_query(weak, self._topic_skills)
        return self.search(query, limit) if query else []


def _essay_terms(texts: tuple[str, ...]) -> list[str]:
    """Most frequent content words of the essays as written, ties by first appearance."""
    counts: Counter[str] = Counter()
    surface: dict[str, str] = {}
    for text in texts:
        for word in _WORD.findall(text[:MAX_ESSAY_CHARS].lower()):
            if len(word) >= 3 and word not in STOPWORDS:
                counts[_stem(word)] += 1
                # The first surface form goes in the query: re-stemming a stem can shorten it.
                surface.setdefault(_stem(word), word)
    return [surface[stem] for stem, _ in counts.most_common(MAX_ESSAY_TERMS)]


def _build_query(weak: WeakAreas, topic_skills: dict[str, tuple[str, ...]]) -> str:
    """Query text from weak areas, in priority order and weighted by repetition."""
    parts: list[str] = []
    for topic in dict.fromkeys(t.strip().lower() for t in weak.missed_topics if t.strip()):
        parts += [topic] * TOPIC_REPEAT
        parts += topic_skills.get(topic, ())
    for concept in dict.fromkeys(c.strip() for c in weak.missing_concepts if c.strip()):
        parts += [concept] * CONCEPT_REPEAT
    for dim in dict.fromkeys(d.strip().lower() for d in weak.weak_dimensions):
        parts += [DIMENSION_TERMS[dim]] if dim in DIMENSION_TERMS else []
    parts += _essay_terms(weak.essay_texts)
    return " ".join(parts)


def build_query(weak: WeakAreas) -> str:
    """Deterministic BM25 query for weak areas, using the default knowledge base's topic skills."""
    return _build_query(weak, default_knowledge_base()._topic_skills)


@cache
def default_knowledge_base() -> KnowledgeBase:
    """The shipped knowledge base, loaded and indexed once per process."""
    return KnowledgeBase.load()
