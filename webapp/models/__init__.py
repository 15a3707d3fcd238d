"""The data model, one module per aggregate; imported here so Alembic sees every table."""

from webapp.models.accounts import ApiToken, Role, User
from webapp.models.assessments import Assessment, AssessmentStatus, Response
from webapp.models.audit import AuditEntry
from webapp.models.history import Entity, HistoryEvent
from webapp.models.operations import (
    STAGE_LABELS,
    STAGE_WEIGHTS,
    WORKER_STAGES,
    Operation,
    OperationStatus,
    OperationType,
    Score,
    Stage,
    StageRun,
    StageStatus,
)
from webapp.models.questions import Question, QuestionSet, QuestionType

__all__ = [
    "STAGE_LABELS",
    "STAGE_WEIGHTS",
    "WORKER_STAGES",
    "ApiToken",
    "Assessment",
    "AssessmentStatus",
    "AuditEntry",
    "Entity",
    "HistoryEvent",
    "Operation",
    "OperationStatus",
    "OperationType",
    "Question",
    "QuestionSet",
    "QuestionType",
    "Response",
    "Role",
    "Score",
    "Stage",
    "StageRun",
    "StageStatus",
    "User",
]
