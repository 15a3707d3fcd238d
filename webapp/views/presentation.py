"""How the pages put product facts into words: status wording, labels, filters."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from flask import current_app, url_for
from markupsafe import Markup, escape

from webapp.fast_polls import POLL_INTERVAL_SECONDS
from webapp.scoring.vocabulary import (
    STAGE_LABELS,
    STAGE_WEIGHTS,
    AssessmentStatus,
    QuestionType,
    Stage,
    StageStatus,
)
from webapp.services.assessments import MAX_ANSWER_LENGTH

ASSESSMENT_STATUS_WORDS: dict[AssessmentStatus, str] = {
    AssessmentStatus.DRAFT: "Draft",
    AssessmentStatus.SUBMITTED: "Waiting to be scored",
    AssessmentStatus.PROCESSING: "Being scored",
    AssessmentStatus.COMPLETED: "Scored",
    AssessmentStatus.FAILED: "Scoring failed",
}
STAGE_STATUS_WORDS: dict[StageStatus, str] = {
    StageStatus.PENDING: "Not started",
    StageStatus.QUEUED: "Waiting for a worker",
    StageStatus.IN_PROGRESS: "Working on it",
    StageStatus.COMPLETED: "Done",
    StageStatus.FAILED: "Failed",
    StageStatus.SKIPPED: "Skipped, nothing to do",
}
QUESTION_TYPE_WORDS: dict[QuestionType, str] = {
    QuestionType.THEORETICAL: "Multiple choice",
    QuestionType.PROFILE: "About you",
    QuestionType.ESSAY: "Essay",
}
SECTION_WORDS: dict[str, str] = {
    "theoretical": "Multiple choice",
    "profile": "About you",
    "essay": "Essays",
}
DIMENSION_WORDS: dict[str, str] = {
    "relevance": "Relevance",
    "depth": "Depth",
    "clarity": "Clarity",
    "technical": "Technical accuracy",
}
# What a student reads when a stage failed: what it means for them, and that they need do nothing.
STAGE_FAILURE_WORDS: dict[Stage, str] = {
    Stage.RULE_SCORE: "The multiple-choice answers could not be scored this time.",
    Stage.GPT: (
        "Your essays could not be scored this time, so they count as 0 in this report for now. "
        "An admin can score them again; you don't need to do anything."
    ),
    Stage.RAG: ("Reading recommendations could not be made this time. Your score is not affected."),
    Stage.FUSION: (
        "The final report could not be written this time. An admin can score it again; "
        "you don't need to do anything."
    ),
}
# A report written after a failed stage is partial: never the green "Scored" of a clean run.
PARTLY_SCORED = "Partly scored"
# Where the "Admin" link leads: the admin entry page, which names every admin page.
ADMIN_HOMES = ("admin.index",)
IN_FLIGHT = (AssessmentStatus.SUBMITTED, AssessmentStatus.PROCESSING)

_CODE_SPAN = re.compile(r"`([^`\n]+)`")


def inline_code(text: str | None) -> Markup:
    """Escape `text`, then show `backticked` spans as <code> (prompts use them for code)."""
    parts = _CODE_SPAN.split(text or "")
    out = []
    for index, part in enumerate(parts):
        out.append(Markup("<code>{}</code>").format(part) if index % 2 else escape(part))
    return Markup("").join(out)


def parse_time(value: str | datetime | None) -> datetime | None:
    """An API timestamp (ISO 8601, Z suffix) or a datetime, as an aware datetime."""
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def clock(value: str | datetime | None) -> str:
    """A timestamp as `HH:MM:SS UTC`, or an empty string."""
    moment = parse_time(value)
    return moment.astimezone(UTC).strftime("%H:%M:%S UTC") if moment else ""


def day_and_time(value: str | datetime | None) -> str:
    """A timestamp as `24 Nov 2025, 14:03 UTC`, or an empty string."""
    moment = parse_time(value)
    return moment.astimezone(UTC).strftime("%-d %b %Y, %H:%M UTC") if moment else ""


def iso(value: str | datetime | None) -> str:
    """A timestamp for a <time datetime> attribute."""
    moment = parse_time(value)
    return moment.astimezone(UTC).isoformat(timespec="seconds") if moment else ""


def points(value: float | int | None) -> str:
    """Points without a pointless `.0`: 4.0 -> 4, 2.75 -> 2.75."""
    if value is None:
        return ""
    return f"{value:g}"


def scorer_words(scorer: str | None) -> str:
    """Which scorer rated an essay, in words."""
    if not scorer:
        return "no scorer"
    if scorer.startswith("openai:"):
        return f"OpenAI ({scorer.removeprefix('openai:')})"
    return f"the offline rubric scorer ({scorer})"


def safe_url(url: str | None) -> str | None:
    """A link target only when it is http(s); anything else is shown as text, never linked."""
    if url and url.lower().startswith(("https://", "http://")):
        return url
    return None


def status_badge(status: str, failed_stages: list[str] | None = None) -> tuple[str, str]:
    """The badge of an assessment: its words and its tone (a CSS suffix)."""
    status = AssessmentStatus(status)
    if status == AssessmentStatus.COMPLETED and failed_stages:
        return PARTLY_SCORED, "degraded"
    return ASSESSMENT_STATUS_WORDS[status], status.value


def seconds_words(seconds: float | None) -> str:
    """A duration as people say it: 0.4 s, 12 s, 3 min 5 s, 2 h 10 min."""
    if seconds is None:
        return ""
    if seconds < 0.1:
        return "under 0.1 s"
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        minutes, rest = divmod(whole, 60)
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    hours, rest = divmod(whole, 3600)
    return f"{hours} h {rest // 60} min" if rest >= 60 else f"{hours} h"


def plural(count: int, singular: str, many: str | None = None) -> str:
    """`1 question`, `3 questions`: never `question(s)`."""
    return f"{count} {singular if count == 1 else (many or singular + 's')}"


def admin_home() -> str | None:
    """The admin area's entry page, if the app has one."""
    endpoint = next((e for e in ADMIN_HOMES if e in current_app.view_functions), None)
    return url_for(endpoint) if endpoint else None


def template_globals() -> dict:
    """What every template may use: one home per fact, imported rather than restated."""
    return {
        "admin_home": admin_home,
        "status_badge": status_badge,
        "plural": plural,
        "STAGE_FAILURE_WORDS": STAGE_FAILURE_WORDS,
        "STAGES": list(Stage),
        "STAGE_LABELS": STAGE_LABELS,
        "STAGE_WEIGHTS": STAGE_WEIGHTS,
        "ASSESSMENT_STATUS_WORDS": ASSESSMENT_STATUS_WORDS,
        "STAGE_STATUS_WORDS": STAGE_STATUS_WORDS,
        "QUESTION_TYPE_WORDS": QUESTION_TYPE_WORDS,
        "SECTION_WORDS": SECTION_WORDS,
        "DIMENSION_WORDS": DIMENSION_WORDS,
        "POLL_INTERVAL_SECONDS": POLL_INTERVAL_SECONDS,
        "MAX_ANSWER_LENGTH": MAX_ANSWER_LENGTH,
    }


FILTERS = {
    "inline_code": inline_code,
    "clock": clock,
    "day_and_time": day_and_time,
    "iso": iso,
    "points": points,
    "scorer_words": scorer_words,
    "safe_url": safe_url,
    "seconds_words": seconds_words,
}
