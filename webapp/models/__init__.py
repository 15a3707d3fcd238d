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

__all__ = [
    "ApiToken",
    "Assessment",
    "AssessmentCallback",
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
    "Response",
    "Role",
    "Scope",
    "Score",
    "SignInLink",
    "StageRun",
    "User",
    "WebhookEndpoint",
    "WebhookEvent",
]
