"""Deterministic offline essay rubric (`offline-rubric-v1`), used by `gpt` without OPENAI_API_KEY.

It skims an answer the way a fair but hurried teacher would, scoring four dimensions 0-10:

* relevance: 75% key-concept coverage, 25% use of the prompt's topic words. Concepts match
  case-insensitively, tolerate -s/-es/-ies/-ing/-ed/-ly and hyphen vs space, and their words may
  sit a few words apart in any order ("calls itself recursively" counts as "recursive call").
* depth: 4 for vocabulary breadth, 4 for sentences that explain (because, therefore, which means,
  trade-off, however ...), 2 for sentences with examples or code.
* clarity: 3 for several sentences, 3 for a readable average length (10-25 words; run-ons and
  fragments lose), 2 for paragraphs or a list, 2 for capitals and end punctuation; under three
  words scores at most 1.
* technical: 4 for key concepts, 4 for words from a small programming/web/database lexicon, 2 for
  code-like tokens (`f(n)`, `sys.getrecursionlimit`, `/orders/42`, `Idempotency-Key`); filler
  (basically, stuff ...) costs up to 2.

Depth, clarity and technical are capped at relevance + 3 (and the rationale says so): a fluent
essay about something else doesn't answer the question. Limits: it counts words without
understanding them, so confident nonsense in the right vocabulary scores well, and concepts that
are everyday words (HTTP "PUT" vs "put") match the everyday word. Rationales contain only counts,
fixed wording and the teacher's key-concept names, never the student's text.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from webapp.scoring.vocabulary import RUBRIC_DIMENSIONS

OFFLINE_SCORER = "offline-rubric-v1"


def _words(text: str) -> frozenset[str]:
    """A set from a space-separated word list (easier to scan than a list literal)."""
    return frozenset(text.split())


_STOPWORDS = _words(
    "a about above after again against all also am an and any are as at be been before being "
    "below between both but by can could did do does doing down during each few for from further "
    "get gets had has have having he her here hers him his how if in into is it its itself just "
    "lot lots made make makes many may me might more most much must my no nor not now of off on "
    "once one only or other our out over own same she should so some such than that the their "
    "them then there these they thing things this those through to too two under until up use "
    "used uses using very was way we well were what when where which while who whom why will "
    "with would you your"
)
# Instruction words in a prompt say what to do, not what the topic is.
_PROMPT_NOISE = _words(
    "explain describe discuss compare contrast outline give show answer question matter matters "
    "work works example examples"
)
_LEXICON_WORDS = (
    "algorithm api argument array async await boolean bytecode cache callback closure compiler "
    "complexity concurrency constraint cpython database deadlock decorator dict dictionary "
    "endpoint exception frame function generator hash header heap http https idempotent "
    "idempotency immutable integer interpreter iteration iterative iterator json lambda latency "
    "lock loop memoization memory method module mutable mutex network null overflow parameter "
    "payload pointer python query queue recursion recursive recursionerror request response "
    "retry rollback runtime schema server client socket sql stack status tcp thread timeout "
    "token transaction traversal tree tuple uuid variable commit replay upsert webhook"
)
_FILLER = _words("basically stuff really just literally actually obviously whatever kinda etc")
_WORD_RE = re.compile(r"[^\W_]+")
_LIST_RE = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+")
_ABBREV_RE = re.compile(r"\b(e\.g|i\.e|etc|vs)\.", re.IGNORECASE)
_SPLIT_RE = re.compile(r"(?<=[.!?])\s+")
_EXPLAIN_RE = re.compile(
    r"\b(?:because|therefore|thus|hence|so that|which means|this means|that means|as a result|"
    r"in other words|however|whereas|although|instead|otherwise|unless|trade-?offs?|the reason|"
    r"is why|means|leads to|causes?|results? in|in order to)\b|, so\b"
)
_EXAMPLE_RE = re.compile(r"\b(?:for example|for instance|e\.g|such as|suppose|imagine)\b")
# Every alternative is anchored (\b, "/" or "`") so long junk words can't cause quadratic scans.
_CODE_RE = re.compile(
    r"\b[A-Za-z_]\w*\([^()\n]{0,40}\)"
    r"|\b[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+"
    r"|\b[A-Za-z]\w*_\w+"
    r"|(?:/[\w{}.-]+){2,}"
    r"|\b[A-Z][a-z]+(?:-[A-Z][a-z]+)+\b"
    r"|`[^`\n]+`"
)


@dataclass(frozen=True)
class DimensionScore:
    """One rubric dimension: an integer score 0..10 and a one-sentence rationale."""

    score: int
    rationale: str

    def __post_init__(self) -> None:
        """Reject scores outside 0..10 (bools too) and blank rationales."""
        if type(self.score) is not int or not 0 <= self.score <= 10:
            raise ValueError(f"score must be an int in 0..10, got {self.score!r}")
        if not isinstance(self.rationale, str) or not self.rationale.strip():
            raise ValueError("rationale must be a non-empty string")


@dataclass(frozen=True)
class EssayScore:
    """Four dimension scores (keys exactly RUBRIC_DIMENSIONS, in order) and their scorer."""

    scorer: str
    rubric: dict[str, DimensionScore]

    def __post_init__(self) -> None:
        """Reject a blank scorer or a rubric that isn't exactly RUBRIC_DIMENSIONS in order."""
        if not isinstance(self.scorer, str) or not self.scorer.strip():
            raise ValueError("scorer must be a non-empty string")
        if not isinstance(self.rubric, dict) or tuple(self.rubric) != RUBRIC_DIMENSIONS:
            raise ValueError(f"rubric must have exactly the dimensions {RUBRIC_DIMENSIONS}")
        if not all(isinstance(d, DimensionScore) for d in self.rubric.values()):
            raise ValueError("rubric values must be DimensionScore")

    def mean(self) -> float:
        """Mean of the four dimension scores."""
        return sum(d.score for d in self.rubric.values()) / len(RUBRIC_DIMENSIONS)

    def to_dict(self) -> dict:
        """JSON-ready form: {"scorer": ..., "rubric": {dimension: {"score", "rationale"}}}."""
        return {
            "scorer": self.scorer,
            "rubric": {
                k: {"score": d.score, "rationale": d.rationale} for k, d in self.rubric.items()
            },
        }

    @classmethod
    def from_dict(cls, data: dict) -> EssayScore:
        """Inverse of to_dict; raises ValueError on anything malformed (extra top-level keys ok)."""
        if not isinstance(data, dict) or not isinstance(data.get("rubric"), dict):
            raise ValueError("expected a dict with a 'rubric' dict")
        if set(data["rubric"]) != set(RUBRIC_DIMENSIONS):
            raise ValueError(f"rubric must have exactly the dimensions {RUBRIC_DIMENSIONS}")
        rubric = {}
        for name in RUBRIC_DIMENSIONS:
            entry = data["rubric"][name]
            if not isinstance(entry, dict) or "score" not in entry or "rationale" not in entry:
                raise ValueError(f"{name} must be a dict with 'score' and 'rationale'")
            rubric[name] = DimensionScore(entry["score"], entry["rationale"])
        return cls(scorer=data.get("scorer"), rubric=rubric)  # type: ignore[arg-type]


@lru_cache(maxsize=8192)
def _stem(word: str) -> str:
    """Crude suffix stripper: both sides go through it, so it only has to be consistent."""
    if len(word) > 4 and word.endswith(("ies", "ied")):
        return word[:-3] + "y"
    for suffix in ("ing", "ed", "es", "ly", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith("ss"):
            word = word[: -len(suffix)]
            if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "lsz":
                word = word[:-1]  # stopping -> stop, but calling -> call
            break
    return word[:-1] if len(word) > 3 and word.endswith("e") else word  # case/cases -> cas


_LEXICON = frozenset(_stem(w) for w in _words(_LEXICON_WORDS))


def _tokens(text: str) -> list[str]:
    """Lower-cased words; underscores and hyphens split, so base-case and base_case both match."""
    return [t.lower() for t in _WORD_RE.findall(text)]  # match first: same words as _units


def _is_content(token: str) -> bool:
    """A word that carries meaning rather than grammar."""
    return len(token) >= 3 and token.isalpha() and token not in _STOPWORDS


def _clamp(value: float) -> int:
    """Round half up (not banker's rounding) and clamp to 0..10."""
    return max(0, min(10, int(value + 0.5)))


def _plural(count: int, noun: str) -> str:
    """'1 sentence' / '3 sentences'."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _names(items: list[str]) -> str:
    """Up to three names in prose, e.g. 'a, b and 2 more'."""
    shown, rest = items[:3], len(items) - 3
    if rest > 0:
        return f"{', '.join(shown)} and {rest} more"
    return shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} and {shown[-1]}"


def _label(raw: float, high: str, mid: str, low: str) -> str:
    """Verbal band for a raw score, so rationales open with a teacher's verdict."""
    return high if raw >= 7.5 else mid if raw >= 4.5 else low


def _near(sorted_positions: list[int], p: int, slack: int) -> bool:
    """True when some position lies within slack of p."""
    i = bisect_left(sorted_positions, p - slack)
    return i < len(sorted_positions) and sorted_positions[i] <= p + slack


def _match_concepts(
    key_concepts: Sequence[str], positions: dict[str, list[int]]
) -> tuple[list[str], list[str]]:
    """Split key concepts into found and missing; a concept's words may be a few words apart."""
    concepts: dict[tuple[str, ...], str] = {}  # keyed by stems so "Base case"/"base-cases" dedupe
    for c in key_concepts:
        key = tuple(_stem(t) for t in _tokens(c))
        if key and key not in concepts:
            concepts[key] = " ".join(c.replace("<", " ").replace(">", " ").split())
    found, missing = [], []
    for key, name in concepts.items():
        hit = all(s in positions for s in key) and any(
            all(_near(positions[s], p, len(key) + 1) for s in key[1:]) for p in positions[key[0]]
        )
        (found if hit else missing).append(name)
    return found, missing


def _relevance(
    prompt: str, found: list[str], missing: list[str], positions: dict[str, list[int]]
) -> tuple[int, str]:
    """Key-concept coverage (what the teacher asked for, so it dominates) plus prompt overlap."""
    topic = {_stem(t) for t in _tokens(prompt or "") if _is_content(t) and t not in _PROMPT_NOISE}
    echoed, n = len(topic & positions.keys()), len(found) + len(missing)
    if not n and not topic:
        return 5, "No key concepts or topic words were given to compare with."  # neutral
    weight = (0.75 if topic else 1.0) if n else 0.0  # concepts dominate when the teacher gave some
    score = _clamp(
        10 * (weight * len(found) / max(n, 1) + (1 - weight) * echoed / max(len(topic), 1))
    )
    parts = []
    if n and not missing:
        parts.append(f"Covers all {n} key concepts ({_names(found)})")
    elif n and not found:
        parts.append(f"Misses all {n} key concepts ({_names(missing)})")
    elif n:
        parts.append(f"Covers {len(found)} of the {n} key concepts ({_names(found)})")
        parts[-1] += f" but misses {_names(missing)}"
    if topic:
        parts.append(f"uses {echoed} of the {len(topic)} topic words from the question")
    text = "; ".join(parts)
    verdict = ", so it reads as off-topic" if score <= 1 else ""
    verdict = ", so it addresses little of the question" if 2 <= score <= 3 else verdict
    return score, text[0].upper() + text[1:] + verdict + "."


def _units(text: str) -> tuple[list[str], int, int]:
    """Sentences and list items, plus the paragraph and list-item counts."""
    units, paragraphs, items = [], 0, 0
    for block in re.split(r"\n\s*\n", _ABBREV_RE.sub(r"\1", text)):
        paragraphs += bool(_WORD_RE.search(block))
        prose = []
        for line in block.splitlines():
            if _LIST_RE.match(line):
                items += 1
                units.append(_LIST_RE.sub("", line).strip())
            else:
                prose.append(line.strip())
        units.extend(_SPLIT_RE.split(" ".join(prose)))  # hard-wrapped lines are one sentence
    return [u.strip() for u in units if _WORD_RE.search(u)], paragraphs, items


def _depth(tokens: list[str], stems: list[str], units: list[str]) -> tuple[float, str]:
    """Vocabulary breadth, sentences that explain, and sentences with examples or code."""
    vocab = len({s for t, s in zip(tokens, stems, strict=True) if _is_content(t)})
    explains = sum(1 for u in units if _EXPLAIN_RE.search(u.lower()))
    examples = sum(1 for u in units if _EXAMPLE_RE.search(u.lower()) or _CODE_RE.search(u))
    raw = min(4.0, vocab / 12) + min(4, explains) + min(2, examples)
    label = _label(raw, "Well developed", "Partly developed", "Thin")
    return raw, (
        f"{label}: {_plural(vocab, 'distinct content word')}, "
        f"{_plural(explains, 'explanatory sentence')} and "
        f"{_plural(examples, 'sentence')} with examples or code"
    )


def _clarity(n_words: int, units: list[str], paragraphs: int, items: int) -> tuple[float, str]:
    """Enough sentences, readable sentence length, paragraphs or lists, and tidy mechanics."""
    n, avg = len(units), n_words / len(units)
    length_pts = 3 if 10 <= avg <= 25 else 2 if 6 <= avg <= 35 else 1 if 4 <= avg <= 50 else 0
    structure_pts = 2 if paragraphs >= 2 or items >= 2 else 1 if n >= 4 else 0
    capitals = sum(1 for u in units if not u.lstrip("\"'(")[:1].islower())
    mechanics = (capitals + sum(1 for u in units if u[-1] in ".!?:;)`\"'")) / n
    raw = min(3.0, (n - 1) * 0.6) + length_pts + structure_pts + mechanics
    raw = min(raw, 1.0) if n_words < 3 else raw  # a word or two is not an answer to follow
    shape = f"in {paragraphs} paragraphs" if paragraphs >= 2 else "in a single paragraph"
    shape = f"in a list of {items} items" if items >= 2 and paragraphs < 2 else shape
    pace = " (run-on)" if avg > 35 else " (fragments)" if avg < 6 else ""
    return raw, (
        f"{_label(raw, 'Clear', 'Readable but thinly structured', 'Hard to follow')}: "
        f"{_plural(n, 'sentence')} {shape} averaging {_plural(round(avg), 'word')}{pace}, with "
        f"{'consistent' if mechanics >= 1.8 else 'inconsistent'} capitalisation and punctuation"
    )


def _technical(
    answer: str, tokens: list[str], positions: dict[str, list[int]], found: int, n_concepts: int
) -> tuple[float, str]:
    """Key concepts, lexicon terms and code-like tokens, minus a penalty for filler."""
    lexicon = len(_LEXICON & positions.keys())
    code = len({m for m in _CODE_RE.findall(answer) if len(m) > 3})  # > 3 drops e.g / i.e
    filler = sum(1 for t in tokens if t in _FILLER) / len(tokens)
    concept_pts = 4 * found / n_concepts if n_concepts else min(4.0, lexicon / 2.5)
    raw = concept_pts + min(4.0, lexicon / 2.5) + min(2.0, code / 2)
    raw -= 2 if filler > 0.08 else 1 if filler > 0.04 else 0
    used = f"{found} of the {n_concepts} key concepts, " if n_concepts else ""
    return raw, (
        f"{_label(raw, 'Strong', 'Some', 'Little')} technical vocabulary: {used}"
        f"{_plural(lexicon, 'technical term')} and {_plural(code, 'code-style reference')}"
        + ", but leans on filler words"
        * (filler > 0.04)
    )


def score_essay_offline(prompt: str, key_concepts: Sequence[str], answer: str) -> EssayScore:
    """Score one essay answer on the four rubric dimensions, deterministically."""
    tokens = _tokens(answer or "")
    if not tokens:
        why = "No answer was given, so there is nothing to assess."
        return EssayScore(OFFLINE_SCORER, {d: DimensionScore(0, why) for d in RUBRIC_DIMENSIONS})
    stems = [_stem(t) for t in tokens]
    positions: dict[str, list[int]] = {}
    for i, s in enumerate(stems):
        positions.setdefault(s, []).append(i)
    found, missing = _match_concepts(key_concepts, positions)
    relevance, why = _relevance(prompt, found, missing, positions)
    rubric = {"relevance": DimensionScore(relevance, why)}
    units, paragraphs, items = _units(answer)
    cap = relevance + 3  # the off-topic cap described in the module docstring
    for name, (raw, why) in (
        ("depth", _depth(tokens, stems, units)),
        ("clarity", _clarity(len(tokens), units, paragraphs, items)),
        ("technical", _technical(answer, tokens, positions, len(found), len(found + missing))),
    ):
        score = min(_clamp(raw), cap)
        if score < _clamp(raw):
            why += f", capped at {cap} because it addresses little of the question"
        rubric[name] = DimensionScore(score, why + ".")
    return EssayScore(OFFLINE_SCORER, rubric)
