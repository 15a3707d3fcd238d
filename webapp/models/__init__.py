"""The data model, one module per aggregate; imported here so Alembic sees every table."""

from webapp.models.accounts import ApiToken, Role, Scope, User
from webapp.models.assessments import Assessment, Response
from webapp.models.audit import AuditEntry
from webapp.models.history import Entity, HistoryEvent
from webapp.models.idempotency import IdempotencyKey
from webapp.models.llm import LlmCall
from webapp.models.operations import Operation, Score, StageRun
from webapp.models.questions import Question, QuestionSet
from webapp.models.sign_in_links import SignInLink
from webapp.models.webhooks import (
    AssessmentCallback,
    Attempt,
    AttemptTrigger,
    Delivery,
    DeliveryStatus,
    ErrorClass,
    WebhookEndpoint,
    WebhookEvent,
)

# Transitional: views/presentation.py and views/progress.py (being rewritten elsewhere) still
# import these words from here. They are defined in webapp.scoring.vocabulary; import them
# from there, and drop this re-export once no module imports them from webapp.models.
from webapp.scoring.vocabulary import (
    STAGE_LABELS,
    STAGE_WEIGHTS,
    AssessmentStatus,
    QuestionType,
    Stage,
    StageStatus,
)

__all__ = [
    "STAGE_LABELS",
    "STAGE_WEIGHTS",
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
    "HistoryEvent",
    "IdempotencyKey",
    "LlmCall",
    "Operation",
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
