"""Tests for the deterministic offline essay rubric (webapp.scoring.rubric)."""

from __future__ import annotations

import re
import time
from collections import Counter

import pytest

from webapp.scoring.rubric import (
    OFFLINE_SCORER,
    DimensionScore,
    EssayScore,
    score_essay_offline,
)
from webapp.scoring.vocabulary import RUBRIC_DIMENSIONS

RECURSION_PROMPT = "Explain how recursion works in Python and when you would avoid it."
RECURSION_CONCEPTS = ("base case", "recursive call", "call stack", "recursion limit", "iteration")

RECURSION_ESSAY = """\
Recursion is a technique where a function solves a problem by calling itself on a smaller
version of the same problem. Every recursive function needs a base case, which is the input it
can answer directly without another recursive call. For example, factorial(0) returns 1, and
factorial(n) returns n * factorial(n - 1) for larger n.

Each recursive call pushes a new frame onto the call stack, holding that call's local variables
and the point to return to. When the base case is reached, the frames are popped one by one and
the partial results are combined. This is why a missing base case is dangerous: the calls never
stop, and the stack keeps growing.

Python does not optimise tail calls, so deep recursion is expensive. CPython enforces a recursion
limit of about 1000 frames, which you can inspect with sys.getrecursionlimit(), and exceeding it
raises RecursionError. Raising the limit with sys.setrecursionlimit() only moves the problem,
because the underlying C stack can still overflow.

I would avoid recursion when the depth grows with the size of the input, for instance when
walking a linked list with a million nodes. In those cases iteration with a simple loop, or an
explicit stack, uses constant memory and is usually faster. However, recursion is still the
clearest choice for naturally recursive data such as trees or nested JSON, where the depth is
small and the code reads like the definition.
"""

# A well-written answer to a different question (Git branching), of similar length.
RECURSION_OFF_TOPIC = """\
Git stores a project's history as a series of snapshots called commits. Each commit records the
full state of the tracked files, a message, the author, and a pointer to its parent commit. A
branch is simply a movable label that points at one commit, which is why creating a branch in
Git is almost instant.

When you create a feature branch and start committing, the branch label moves forward while the
main branch stays where it was. This lets several people work on separate features at the same
time without disturbing each other. For example, one developer can fix a login bug on one branch
while another redesigns the home page on a second branch.

Eventually the work has to be combined. A merge creates a new commit with two parents, so the
history shows exactly when the branches came together. A rebase instead replays your commits on
top of the latest main branch, which produces a straight, linear history but rewrites the commit
identifiers. Because of that, you should never rebase commits that other people have pulled.

Conflicts happen when both branches change the same lines of the same file. Git stops and marks
the conflicting region, and a person has to decide which version to keep before finishing the
merge. Small, frequent merges keep conflicts rare and easy to resolve.
"""

RECURSION_ONE_LINER = "Recursion is when a function calls itself until it reaches a base case."

HTTP_PROMPT = "Explain what makes an HTTP API idempotent and why it matters for retries."
HTTP_CONCEPTS = ("idempotency key", "retry", "side effect", "PUT", "POST", "duplicate")

HTTP_ESSAY = """\
An HTTP operation is idempotent when sending the same request once or many times leaves the
server in the same state. The response may differ, but the side effect on the stored data
happens only once. By definition GET, PUT and DELETE are idempotent: a PUT to /users/42 replaces
the whole resource, so repeating it writes the same value again. POST is not idempotent, because
each POST to /orders normally creates a new order.

This matters because networks are unreliable. A client that times out cannot tell whether the
request was lost or whether the server processed it and only the response was lost. The safe
reaction is to retry, but a blind retry of a non-idempotent request can cause a duplicate
payment or a second shipment, which means the customer is charged twice.

The common fix is an idempotency key. The client generates a unique value, such as a UUID, and
sends it in an Idempotency-Key header with the POST. The server stores the key together with the
result under a unique constraint, ideally in the same database transaction as the side effect.
If a retry arrives with a key it has already seen, the server returns the saved response instead
of repeating the work.

There are trade-offs. The keys must expire eventually, and two concurrent requests with the same
key need a lock or the unique constraint to decide which one wins. However, the cost is small
compared with debugging duplicate charges, so payment APIs such as Stripe's require it.
"""

# A well-written answer to a different question (photosynthesis), of similar length.
HTTP_OFF_TOPIC = """\
Photosynthesis is the process plants use to turn light into chemical energy. It takes place
mainly in the leaves, inside small structures called chloroplasts that contain the green pigment
chlorophyll. Chlorophyll absorbs red and blue light and reflects green light, which is why most
leaves look green to us.

The process has two main stages. In the light-dependent reactions, energy from sunlight splits
water molecules, releasing oxygen as a by-product and storing energy in two carrier molecules.
In the second stage, often called the Calvin cycle, the plant uses that stored energy to fix
carbon dioxide from the air into sugars such as glucose.

Several conditions control how fast photosynthesis happens. Light intensity, the concentration
of carbon dioxide and temperature all matter, and whichever one is in shortest supply limits the
overall rate. For example, on a bright but cold morning the temperature, not the light, is
usually the limiting factor.

Photosynthesis is important far beyond the plant itself. It produces almost all of the oxygen in
the atmosphere, and it is the starting point of nearly every food chain on Earth. Farmers in
greenhouses take advantage of this by raising carbon dioxide levels and keeping the air warm, so
their crops grow faster.
"""

HTTP_ONE_LINER = "Idempotent means you can send the same request twice safely."

CASES = {
    "recursion": (RECURSION_PROMPT, RECURSION_CONCEPTS, RECURSION_ESSAY),
    "http": (HTTP_PROMPT, HTTP_CONCEPTS, HTTP_ESSAY),
}
WEAK_ANSWERS = {
    "recursion": {"off-topic": RECURSION_OFF_TOPIC, "one-liner": RECURSION_ONE_LINER},
    "http": {"off-topic": HTTP_OFF_TOPIC, "one-liner": HTTP_ONE_LINER},
}

NASTY_INPUTS = [
    pytest.param("recursion base case call stack " * 20_000, id="huge-text"),
    pytest.param("Rekursion ist schön 🐍 — 再帰 ñandú\u200b\u202e ﬁ Ǆ 𝔁", id="unicode"),  # noqa: RUF001 (deliberately confusable)
    pytest.param("<script>alert(1)</script>", id="script-tag"),
    pytest.param("?!.,;:()[]{}---...!!! ??? ''' \"\"\" ```", id="only-punctuation"),
    pytest.param("a" * 100_000, id="one-huge-word"),
    pytest.param("x(" * 5_000 + "`" * 3_001 + "a." * 5_000, id="regex-bait"),
    pytest.param("stuff basically really just stuff etc " * 30, id="pure-filler"),
]


def _scores(result: EssayScore) -> dict[str, int]:
    """Plain {dimension: score} for readable assertion messages."""
    return {name: dim.score for name, dim in result.rubric.items()}


def _is_one_sentence(text: str) -> bool:
    """Exactly one sentence terminator, at the very end."""
    return bool(re.search(r"[.!?]$", text)) and len(re.findall(r"[.!?](?:\s|$)", text)) == 1


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("weak", ["off-topic", "one-liner"])
def test_thoughtful_essay_beats_weak_answer_by_three_points_on_every_dimension(case, weak):
    prompt, concepts, essay = CASES[case]
    good = _scores(score_essay_offline(prompt, concepts, essay))
    poor = _scores(score_essay_offline(prompt, concepts, WEAK_ANSWERS[case][weak]))
    for name in RUBRIC_DIMENSIONS:
        assert good[name] >= poor[name] + 3, (name, good, poor)


@pytest.mark.parametrize("case", CASES)
def test_thoughtful_essay_scores_at_least_seven_everywhere(case):
    result = score_essay_offline(*CASES[case])
    assert min(_scores(result).values()) >= 7, _scores(result)


def test_off_topic_essay_is_capped_and_says_so():
    result = score_essay_offline(RECURSION_PROMPT, RECURSION_CONCEPTS, RECURSION_OFF_TOPIC)
    assert result.rubric["relevance"].score <= 2
    assert "off-topic" in result.rubric["relevance"].rationale
    assert "capped at" in result.rubric["clarity"].rationale


@pytest.mark.parametrize("answer", ["", "   ", "\n\t  \n"])
def test_empty_answer_scores_all_zeros_and_says_no_answer(answer):
    result = score_essay_offline(RECURSION_PROMPT, RECURSION_CONCEPTS, answer)
    assert _scores(result) == dict.fromkeys(RUBRIC_DIMENSIONS, 0)
    assert all("no answer" in d.rationale.lower() for d in result.rubric.values())


@pytest.mark.parametrize("answer", ["Recursion", "recursion.", "stack"])
def test_one_word_answer_has_clarity_at_most_one(answer):
    result = score_essay_offline(RECURSION_PROMPT, RECURSION_CONCEPTS, answer)
    assert result.rubric["clarity"].score <= 1


@pytest.mark.parametrize("case", CASES)
def test_scoring_is_deterministic(case):
    first = score_essay_offline(*CASES[case])
    assert all(score_essay_offline(*CASES[case]) == first for _ in range(3))
    assert first.scorer == OFFLINE_SCORER
    assert tuple(first.rubric) == RUBRIC_DIMENSIONS


@pytest.mark.parametrize("answer", NASTY_INPUTS)
def test_scores_stay_within_0_to_10_for_junk_input(answer):
    result = score_essay_offline(RECURSION_PROMPT, RECURSION_CONCEPTS, answer)
    assert tuple(result.rubric) == RUBRIC_DIMENSIONS
    assert all(0 <= score <= 10 for score in _scores(result).values())
    assert EssayScore.from_dict(result.to_dict()) == result


def test_pure_filler_scores_low_on_technical():
    answer = "Basically it is really just stuff and things, etc. It does stuff. " * 5
    result = score_essay_offline(RECURSION_PROMPT, RECURSION_CONCEPTS, answer)
    assert result.rubric["technical"].score <= 1
    assert result.rubric["relevance"].score <= 1


@pytest.mark.parametrize(
    "answer",
    [RECURSION_ESSAY, RECURSION_ONE_LINER, "<script>alert(1)</script>", *NASTY_INPUTS[:4]],
)
def test_rationales_are_single_sentences_without_the_answers_text(answer):
    result = score_essay_offline(RECURSION_PROMPT, RECURSION_CONCEPTS, answer)
    for name, dim in result.rubric.items():
        assert _is_one_sentence(dim.rationale), (name, dim.rationale)
        assert "<" not in dim.rationale and "script" not in dim.rationale.lower(), dim.rationale


def test_concept_names_are_stripped_of_angle_brackets_in_rationales():
    result = score_essay_offline("Explain recursion.", ["<b>base case</b>"], "Recursion needs it.")
    assert all("<" not in d.rationale for d in result.rubric.values())
    assert "b base case /b" in result.rubric["relevance"].rationale


@pytest.mark.parametrize(
    ("concept", "answer", "matched"),
    [
        ("base case", "Every function needs Base-Cases.", True),
        ("call stack", "Frames go on the call-stacks.", True),
        ("call stack", "It lives in call_stack.", True),
        ("retry", "The client retries.", True),
        ("retry", "The client retried.", True),
        ("retry", "The client keeps retrying.", True),
        ("side effect", "It has side-effects.", True),
        ("duplicate", "The order was duplicated.", True),
        ("iteration", "Use ITERATIONS instead.", True),
        ("idempotency key", "Send idempotency_keys.", True),
        ("recursive call", "The function calls itself recursively.", True),
        ("recursion limit", "Python limits recursion depth.", True),
        ("call stack", "Call me later, and put the plates back on the kitchen stack.", False),
        ("base case", "The database is fast.", False),
    ],
)
def test_key_concepts_match_case_inflections_and_hyphens(concept, answer, matched):
    rationale = score_essay_offline("", [concept], answer).rubric["relevance"].rationale
    assert rationale.startswith("Covers all" if matched else "Misses all"), rationale


def test_relevance_rationale_names_at_most_three_missing_concepts():
    result = score_essay_offline(HTTP_PROMPT, HTTP_CONCEPTS, "Caching makes websites faster.")
    rationale = result.rubric["relevance"].rationale
    assert rationale.startswith("Misses all 6 key concepts"), rationale
    assert "idempotency key, retry, side effect and 3 more" in rationale


def test_run_on_sentence_scores_lower_clarity_than_the_same_words_in_paragraphs():
    run_on = re.sub(r"[.:]\s+", " and ", RECURSION_ESSAY.replace("\n\n", " ")).lower()
    good = score_essay_offline(RECURSION_PROMPT, RECURSION_CONCEPTS, RECURSION_ESSAY)
    bad = score_essay_offline(RECURSION_PROMPT, RECURSION_CONCEPTS, run_on)
    assert bad.rubric["clarity"].score <= good.rubric["clarity"].score - 5
    assert "run-on" in bad.rubric["clarity"].rationale


def test_to_dict_and_from_dict_round_trip():
    result = score_essay_offline(*CASES["http"])
    data = result.to_dict()
    assert data["scorer"] == OFFLINE_SCORER
    assert list(data["rubric"]) == list(RUBRIC_DIMENSIONS)
    assert set(data["rubric"]["depth"]) == {"score", "rationale"}
    assert EssayScore.from_dict(data) == result


def _valid() -> dict:
    """A well-formed to_dict() payload to break in one place per test case."""
    return {
        "scorer": "x",
        "rubric": {d: {"score": 5, "rationale": "Fine."} for d in RUBRIC_DIMENSIONS},
    }


def _with(path: tuple[str, ...], value: object) -> dict:
    """The valid payload with one nested key replaced (or deleted when value is ...)."""
    data = _valid()
    target = data
    for key in path[:-1]:
        target = target[key]
    if value is ...:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return data


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(None, id="not-a-dict"),
        pytest.param([], id="a-list"),
        pytest.param(_with(("rubric",), ...), id="no-rubric"),
        pytest.param(_with(("rubric",), [1, 2, 3, 4]), id="rubric-not-a-dict"),
        pytest.param(_with(("rubric", "depth"), ...), id="missing-dimension"),
        pytest.param(_with(("rubric", "style"), {"score": 1, "rationale": "x"}), id="extra-dim"),
        pytest.param(_with(("rubric", "depth"), 5), id="dimension-not-a-dict"),
        pytest.param(_with(("rubric", "depth", "score"), ...), id="missing-score"),
        pytest.param(_with(("rubric", "depth", "score"), 11), id="score-above-10"),
        pytest.param(_with(("rubric", "depth", "score"), -1), id="score-negative"),
        pytest.param(_with(("rubric", "depth", "score"), "7"), id="score-string"),
        pytest.param(_with(("rubric", "depth", "score"), 7.0), id="score-float"),
        pytest.param(_with(("rubric", "depth", "score"), True), id="score-bool"),
        pytest.param(_with(("rubric", "depth", "rationale"), ...), id="missing-rationale"),
        pytest.param(_with(("rubric", "depth", "rationale"), ""), id="empty-rationale"),
        pytest.param(_with(("rubric", "depth", "rationale"), "  "), id="blank-rationale"),
        pytest.param(_with(("rubric", "depth", "rationale"), 3), id="rationale-not-str"),
        pytest.param(_with(("scorer",), ...), id="missing-scorer"),
        pytest.param(_with(("scorer",), ""), id="empty-scorer"),
    ],
)
def test_from_dict_rejects_malformed_data(data):
    with pytest.raises(ValueError):
        EssayScore.from_dict(data)


def test_from_dict_accepts_the_valid_payload_and_restores_dimension_order():
    data = _valid()
    data["rubric"] = dict(reversed(data["rubric"].items()))
    assert tuple(EssayScore.from_dict(data).rubric) == RUBRIC_DIMENSIONS


def test_mean_is_the_average_of_the_four_scores():
    scores = dict(zip(RUBRIC_DIMENSIONS, (7, 4, 9, 3), strict=True))
    result = EssayScore("x", {d: DimensionScore(s, "Because.") for d, s in scores.items()})
    assert result.mean() == pytest.approx(5.75)
    assert score_essay_offline(RECURSION_PROMPT, RECURSION_CONCEPTS, "").mean() == 0.0


def test_scoring_a_1000_word_essay_costs_about_as_much_as_counting_its_words():
    """About 4 ms on a quiet machine. This shared machine's speed swings by 2x, so the bound is
    a ratio to plain Python work timed beside it: ten word counts of the same essay."""
    essay = "\n\n".join([RECURSION_ESSAY] * 5)  # ~1,180 words
    assert 1_000 <= len(essay.split()) <= 1_300

    def count_words():
        for _ in range(10):
            Counter(word[:5] for word in re.findall(r"[a-z]+", essay.lower()))

    scoring, baseline = [], []
    for _ in range(20):
        for timings, work in (
            (scoring, lambda: score_essay_offline(RECURSION_PROMPT, RECURSION_CONCEPTS, essay)),
            (baseline, count_words),
        ):
            start = time.perf_counter()
            work()
            timings.append(time.perf_counter() - start)
    ratio = min(scoring) / min(baseline)
    assert ratio < 2.5, f"best {min(scoring) * 1000:.2f} ms, {ratio:.2f}x the word counts"
