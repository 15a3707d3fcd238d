"""The product's words, each defined once: question types, statuses, stages, events, rubric.

Models store these values, services and the worker decide with them, views and the API show
them, the scoring stages compute with them. Plain `str` enums (a member equals its value), so
they go into JSON, database columns and templates as they are.
"""

from __future__ import annotations

import enum


class QuestionType(enum.StrEnum):
    """How a question is answered and scored."""

    THEORETICAL = "theoretical"  # pick one option; rule-scored right or wrong
    PROFILE = "profile"  # free text about the student; full weight when answered
    ESSAY = "essay"  # free text scored on the rubric by the gpt stage


# The four dimensions an essay is scored on, each an integer 0-10 with a rationale, in this order.
RUBRIC_DIMENSIONS: tuple[str, ...] = ("relevance", "depth", "clarity", "technical")


class AssessmentStatus(enum.StrEnum):
    """Lifecycle of an assessment; responses can change only in `draft`."""

    DRAFT = "draft"
    SUBMITTED = "submitted"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        """True once scoring has ended, well or badly."""
        return self in (AssessmentStatus.COMPLETED, AssessmentStatus.FAILED)


class OperationType(enum.StrEnum):
    """Kinds of long-running work."""

    ASSESSMENT_SCORING = "assessment_scoring"
    QUESTION_GENERATION = "question_generation"


class OperationStatus(enum.StrEnum):
    """Lifecycle of an operation."""

    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"

    @property
    def done(self) -> bool:
        """True once the operation has a result or an error."""
        return self in (OperationStatus.COMPLETED, OperationStatus.FAILED)


class Stage(enum.StrEnum):
    """The scoring pipeline's stages, in the order they start."""

    RULE_SCORE = "rule_score"
    GPT = "gpt"
    RAG = "rag"
    FUSION = "fusion"


# The weight of each stage in `overall_progress` (they sum to 100).
STAGE_WEIGHTS: dict[Stage, int] = {
    Stage.RULE_SCORE: 20,
    Stage.GPT: 30,
    Stage.RAG: 30,
    Stage.FUSION: 20,
}
# Stages that run on workers; rule_score runs inline during submit.
WORKER_STAGES: tuple[Stage, ...] = (Stage.GPT, Stage.RAG, Stage.FUSION)
STAGE_LABELS: dict[Stage, str] = {
    Stage.RULE_SCORE: "Rule score",
    Stage.GPT: "Essay scoring",  # by OpenAI or the offline scorer: the page names which
    Stage.RAG: "Recommendations",
    Stage.FUSION: "Final report",
}


class StageStatus(enum.StrEnum):
    """Lifecycle of one stage run."""

    PENDING = "pending"
    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"

    @property
    def finished(self) -> bool:
        """Failed and skipped stages count as finished for progress."""
        return self in (StageStatus.COMPLETED, StageStatus.FAILED, StageStatus.SKIPPED)


class EventType(enum.StrEnum):
    """Every event a webhook receiver can get (SPEC 5)."""

    ASSESSMENT_SUBMITTED = "assessment.submitted"
    ASSESSMENT_STARTED = "assessment.started"
    ASSESSMENT_PROGRESS = "assessment.progress"
    ASSESSMENT_COMPLETED = "assessment.completed"
    ASSESSMENT_FAILED = "assessment.failed"
    OPERATION_COMPLETED = "operation.completed"
    OPERATION_FAILED = "operation.failed"
    WEBHOOK_TEST = "webhook.test"


EVENT_TYPE_DESCRIPTIONS: dict[EventType, str] = {
    EventType.ASSESSMENT_SUBMITTED: "An assessment was submitted; its scoring operation exists.",
    EventType.ASSESSMENT_STARTED: "A worker started scoring an assessment.",
    EventType.ASSESSMENT_PROGRESS: "Scoring passed 25, 50 or 75 percent (each at most once).",
    EventType.ASSESSMENT_COMPLETED: "Scoring finished; the data carries a result summary.",
    EventType.ASSESSMENT_FAILED: "Scoring failed; the data carries the error.",
    EventType.OPERATION_COMPLETED: "An operation (scoring or question generation) completed.",
    EventType.OPERATION_FAILED: "An operation failed.",
    EventType.WEBHOOK_TEST: "A test event an admin sent from the settings page or the API.",
}
# Percentages of overall progress that send `assessment.progress`, each at most once.
PROGRESS_MILESTONES: tuple[int, ...] = (25, 50, 75)
