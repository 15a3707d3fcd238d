"""The data model, one module per aggregate; imported here so Alembic sees every table."""

from webapp.models.accounts import ApiToken, Role, Scope, User
from webapp.models.assessments import Assessment, AssessmentStatus, Response
from webapp.models.audit import AuditEntry
from webapp.models.history import Entity, HistoryEvent
from webapp.models.idempotency import IdempotencyKey
from webapp.models.llm import LlmCall
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
from webapp.models.sign_in_links import SignInLink
from webapp.models.webhooks import (
    EVENT_TYPE_DESCRIPTIONS,
    PROGRESS_MILESTONES,
    AssessmentCallback,
    Attempt,
    AttemptTrigger,
    Delivery,
    DeliveryStatus,
    ErrorClass,
    EventType,
    WebhookEndpoint,
    WebhookEvent,
)

__all__ = [
    "EVENT_TYPE_DESCRIPTIONS",
    "PROGRESS_MILESTONES",
    "STAGE_LABELS",
    "STAGE_WEIGHTS",
    "WORKER_STAGES",
    "ApiToken",
    "Assessment",
    "AssessmentCallback",
    "AssessmentStatus",
    "Attempt",
    "AttemptTrigger",
    "AuditEntry",
    "Delivery",
    "DeliveryStatus",
    "Entity",
    "ErrorClass",
    "EventType",
    "HistoryEvent",
    "IdempotencyKey",
    "LlmCall",
    "Operation",
    "OperationStatus",
    "OperationType",
    "Question",
    "QuestionSet",
    "QuestionType",
    "Response",
    "Role",
    "Scope",
    "Score",
    "SignInLink",
    "Stage",
    "StageRun",
    "StageStatus",
    "User",
    "WebhookEndpoint",
    "WebhookEvent",
]
