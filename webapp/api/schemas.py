"""The API's request and response models: each validates, serializes and documents itself.

Requests: pydantic validates path, query and body before the view runs (422 VALIDATION_ERROR
listing every field problem: `blueprint.validation_problem`). Answers: the views build these
models from database rows, so what is served is what /api/v1/openapi.json says.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, EmailStr, Field
from pydantic_core import PydanticCustomError

from webapp.api.fields import (
    NO_NUL_KEYS,
    Body,
    ClosedBody,
    Id,
    NulFreeJson,
    Out,
    Params,
    PastMoment,
    StrictBool,
    StrictInt,
    Timestamp,
    text,
    whole_number,
)
from webapp.models import AttemptTrigger, DeliveryStatus, ErrorClass
from webapp.models.accounts import in_grace
from webapp.scoring import generation
from webapp.scoring.retrieval import default_knowledge_base
from webapp.scoring.vocabulary import (
    AssessmentStatus,
    EventType,
    OperationStatus,
    OperationType,
    QuestionType,
    Stage,
    StageStatus,
)
from webapp.services.assessments import MAX_ANSWER_LENGTH
from webapp.services.webhooks.endpoints import MAX_DESCRIPTION
from webapp.services.webhooks.health import HEALTH_WINDOW
from webapp.services.webhooks.url_guard import MAX_URL_LENGTH

Percent = Field(ge=0, le=100)
Headers = Annotated[dict[str, str], BeforeValidator(lambda value: value or {})]


def links(**parameters: tuple[str, list[str]]) -> dict:
    """OpenAPI links from an answer to the operations its ids lead to (clients and schemathesis
    follow them): `assessment_id=("$response.body#/id", ["show", ...])`."""
    found = {}
    for parameter, (pointer, operation_ids) in parameters.items():
        for operation_id in operation_ids:
            found[operation_id] = {"operationId": operation_id, "parameters": {parameter: pointer}}
    return found


ASSESSMENT_ROUTES = [
    "show",
    "put_responses",
    "submit",
    "status",
    "result",
    "assessment_history",
    "rescore",
    "register_assessment_webhook",
]

# An integration's own id for one of its students (the service checks the same rule).
ExternalId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=128,
        pattern=r"^[^\x00-\x20\x7f](?:[^\x00-\x1f\x7f]*[^\x00-\x20\x7f])?$",
        description="An integration's own id for one of its students, unique within the "
        "integration: no control characters, no spaces at either end.",
        examples=["s-1001"],
    ),
]
WebhookUrl = text(MAX_URL_LENGTH, min_length=1, description="An http(s) URL on a public address.")


# --- errors ---------------------------------------------------------------------------------------


class FieldProblem(Out):
    field: str = Field(description="Where: `name`, `items[0].name`; query and path by name.")
    message: str


class Problem(Out):
    """RFC 9457 problem details; `errors` lists every field problem of a 422."""

    type: str
    title: str
    status: int
    detail: str
    code: str = Field(examples=["VALIDATION_ERROR"])
    errors: list[FieldProblem] | None = None


# --- path and query -------------------------------------------------------------------------------


class AssessmentPath(Params):
    assessment_id: Id


class OperationPath(Params):
    operation_id: Id


class EndpointPath(Params):
    endpoint_id: Id


class DeliveryPath(Params):
    delivery_id: Id


class AssessmentFilter(Params):
    status: AssessmentStatus | None = None
    external_id: ExternalId | None = Field(
        None, description="Integrations: one student's assessments (none for an unknown id)."
    )


class RecentEventsQuery(Params):
    hours: whole_number(1, 720) = 24  # type: ignore[valid-type]


class DeliveryFilter(Params):
    status: DeliveryStatus | None = None
    event_type: EventType | None = None
    before: Id | None = Field(None, description="Older deliveries: the `next_before` of a page.")


class AuditFilter(Params):
    actor: text(254) | None = Field(  # type: ignore[valid-type]
        None, description="Part of the actor's email, matched literally (`%` and `_` too)."
    )
    action: text(64) | None = Field(None, description="e.g. `assessment.submitted`.")  # type: ignore[valid-type]
    entity_type: text(32) | None = Field(None, description="e.g. `assessment`.")  # type: ignore[valid-type]
    entity_id: text(64) | None = None  # type: ignore[valid-type]


# --- request bodies -------------------------------------------------------------------------------


class NewAssessment(Body):
    question_set: str = Field(
        max_length=100,
        pattern=r"^[a-z0-9]+(?:-[a-z0-9]+)*$",
        description="A question set's slug (404 QUESTION_SET_NOT_FOUND for an unknown one).",
        examples=["python-basics"],
    )
    external_id: ExternalId | None = Field(
        None,
        description="Integrations: the student it is for (required for them, 403 for "
        "others); created if the integration has no student with this id yet.",
    )


class Answer(Body):
    question_id: StrictInt = Field(ge=1, le=2**31 - 1)
    answer: text(MAX_ANSWER_LENGTH) | None = Field(  # type: ignore[valid-type]
        description="A theoretical answer is an option id; essays and profiles are text."
    )


class Answers(Body):
    responses: list[Answer]


class GenerationParams(ClosedBody):
    topic: Literal[tuple(generation.topics(default_knowledge_base()))]  # type: ignore[valid-type]
    question_type: Literal[generation.QUESTION_TYPES]  # type: ignore[valid-type]


class NewOperation(Body):
    operation_type: Literal[OperationType.QUESTION_GENERATION.value] = Field(
        description="Scoring operations start by submitting or rescoring an assessment."
    )
    params: GenerationParams


def _known_event_types(value: Any) -> Any:
    """One problem for the whole list, naming every unknown event type and the valid ones."""
    if isinstance(value, list):
        valid = sorted(EventType)
        if unknown := [item for item in value if item not in valid]:
            raise PydanticCustomError("event_types", f"unknown {unknown}; valid: {valid}")
    return value


class EndpointChange(ClosedBody):
    url: WebhookUrl | None = None  # type: ignore[valid-type]
    description: text(MAX_DESCRIPTION) | None = None  # type: ignore[valid-type]
    event_types: Annotated[list[EventType] | None, BeforeValidator(_known_event_types)] = Field(
        None, description="Empty or null: every event."
    )
    enabled: StrictBool | None = None


class NewEndpoint(EndpointChange):
    url: WebhookUrl  # type: ignore[valid-type]


class Recovery(Body):
    since: PastMoment = Field(description="ISO 8601, not in the future (422 otherwise).")


class CallbackRegistration(Body):
    webhook_url: WebhookUrl  # type: ignore[valid-type]


# --- answers --------------------------------------------------------------------------------------


class QuestionSetOut(Out):
    slug: str
    title: str
    description: str
    version: int
    question_count: int

    @classmethod
    def of(cls, question_set) -> QuestionSetOut:
        return cls(
            slug=question_set.slug,
            title=question_set.title,
            description=question_set.description,
            version=question_set.version,
            question_count=len(question_set.questions),
        )


class QuestionSets(Out):
    question_sets: list[QuestionSetOut]


class Option(Out):
    id: str
    text: str


class QuestionOut(Out):
    """A question: never its correct answer."""

    id: int
    type: QuestionType
    prompt: str
    options: Annotated[list[Option], BeforeValidator(lambda value: value or [])]
    weight: float
    topic: str


class SavedAnswer(Out):
    question_id: int
    answer: str | None


class AssessmentOut(Out):
    model_config = {
        "openapi_extra": {"links": links(assessment_id=("$response.body#/id", ASSESSMENT_ROUTES))}
    }

    id: int
    question_set: str
    status: AssessmentStatus
    degraded: bool
    missing_question_ids: list[int]
    created_at: Timestamp
    submitted_at: Timestamp | None
    completed_at: Timestamp | None
    responses: list[SavedAnswer]
    questions: list[QuestionOut] | None = Field(None, description="Not in lists.")
    external_id: ExternalId | None = Field(None, description="An integration's student's id.")

    @classmethod
    def of(cls, assessment, *, with_questions: bool = True) -> AssessmentOut:
        questions = assessment.question_set.questions if with_questions else None
        return cls(
            id=assessment.id,
            question_set=assessment.question_set.slug,
            status=assessment.status,
            degraded=assessment.degraded,
            missing_question_ids=assessment.missing_question_ids or [],
            created_at=assessment.created_at,
            submitted_at=assessment.submitted_at,
            completed_at=assessment.completed_at,
            responses=sorted(assessment.responses, key=lambda r: r.question_id),
            questions=questions,
            external_id=assessment.user.external_id,
        )


class Assessments(Out):
    assessments: list[AssessmentOut]


class RuleScore(Out):
    score: float
    max_score: float
    percentage: float
    items: list[dict[str, Any]]


class OperationRef(Out):
    id: int
    status: OperationStatus


class Submission(Out):
    """202 on the first submit (`rule_score` ran inline), 200 on a repeat; poll `Location`."""

    model_config = {
        "openapi_extra": {
            "headers": {"Location": {"schema": {"type": "string"}}},
            "links": links(
                operation_id=("$response.body#/operation/id", ["show_operation"]),
                assessment_id=("$response.body#/assessment_id", ["status", "result"]),
            ),
        }
    }
    assessment_id: int
    status: AssessmentStatus
    rule_score: RuleScore | None
    degraded: bool
    missing_question_ids: list[int]
    operation: OperationRef
    message: Literal["already submitted"] | None = Field(None, description="On a repeat submit.")


class StageOut(Out):
    name: Stage
    status: StageStatus
    percentage: int = Percent
    started_at: Timestamp | None
    completed_at: Timestamp | None
    error: str | None


class JobOut(Out):
    job_type: str
    status: str
    created_at: Timestamp | None
    completed_at: Timestamp | None


class StatusOut(Out):
    """`Retry-After: 2` while not finished; an `ETag` for `If-None-Match`."""

    model_config = {
        "openapi_extra": {
            "headers": {
                "ETag": {"schema": {"type": "string"}},
                "Retry-After": {"schema": {"type": "integer"}},
            }
        }
    }
    assessment_id: int
    status: AssessmentStatus
    overall_progress: int = Percent
    stages: list[StageOut]
    jobs: list[JobOut]
    operation_id: int | None
    degraded: bool
    updated_at: Timestamp
    external_id: ExternalId | None = Field(
        None, description="Only on an integration's student's assessment."
    )


class SectionScore(Out):
    score: float
    max_score: float
    percentage: float | None = None


class Sections(Out):
    theoretical: SectionScore
    profile: SectionScore
    essay: SectionScore


class RubricScore(Out):
    score: int = Field(ge=0, le=10)
    rationale: str


class EssayOut(Out):
    question_id: int
    scorer: str
    rubric: dict[str, RubricScore]


class Recommendation(Out):
    title: str
    provider: str
    url: str
    source_id: str
    passage: str
    score: float


class Report(Out):
    assessment_id: int
    total: float
    max_total: float
    percentage: float
    degraded: bool
    degraded_reasons: list[str]
    sections: Sections
    essays: list[EssayOut]
    recommendations: list[Recommendation]


class HistoryEventOut(Out):
    timestamp: Timestamp
    status: str
    progress: int = Percent
    message: str
    metadata: dict[str, Any]

    @classmethod
    def of(cls, event) -> HistoryEventOut:
        return cls(
            timestamp=event.created_at,
            status=event.status,
            progress=event.progress,
            message=event.message,
            metadata={
                "entity": event.entity,
                "entity_id": event.entity_id,
                "assessment_id": event.assessment_id,
                "operation_id": event.operation_id,
                **(event.meta or {}),
            },
        )


class History(Out):
    assessment_id: int
    history: list[HistoryEventOut]
    event_count: int = Field(ge=0, le=100)


class RecentEvents(Out):
    events: list[HistoryEventOut]
    count: int
    hours: int


class OperationOut(Out):
    """Exactly one of `result` / `error_message` is set once `done`."""

    model_config = {
        "openapi_extra": {"links": links(operation_id=("$response.body#/id", ["show_operation"]))}
    }

    id: int
    operation_type: OperationType
    status: OperationStatus
    progress: int = Percent
    done: bool
    result: dict[str, Any] | None
    error_message: str | None
    assessment_id: int | None
    created_at: Timestamp
    updated_at: Timestamp

    @classmethod
    def of(cls, operation) -> OperationOut:
        done = operation.done
        return cls(
            id=operation.id,
            operation_type=operation.operation_type,
            status=operation.status,
            progress=100 if done else operation.progress,
            done=done,
            result=operation.result if done and operation.error_message is None else None,
            error_message=operation.error_message if done else None,
            assessment_id=operation.assessment_id,
            created_at=operation.created_at,
            updated_at=operation.updated_at,
        )


class Actor(Out):
    id: int | None
    email: str


class AuditEntryOut(Out):
    id: int
    timestamp: Timestamp
    actor: Actor
    action: str
    entity_type: str
    entity_id: str
    details: dict[str, Any]
    ip: str

    @classmethod
    def of(cls, entry) -> AuditEntryOut:
        return cls(
            id=entry.id,
            timestamp=entry.created_at,
            actor=Actor(id=entry.actor_id, email=entry.actor_email),
            action=entry.action,
            entity_type=entry.entity_type,
            entity_id=entry.entity_id,
            details=entry.details or {},
            ip=entry.ip,
        )


class AuditLog(Out):
    entries: list[AuditEntryOut]
    count: int


class EndpointHealth(Out):
    last_attempt_at: Timestamp | None
    last_response_status: int | None
    last_error: str | None
    success_rate: float | None
    window_hours: int
    succeeded: int
    failed: int
    waiting: int
    next_retry_at: Timestamp | None

    @classmethod
    def of(cls, health) -> EndpointHealth:
        return cls(
            last_attempt_at=health.last_attempt_at,
            last_response_status=health.last_response_status,
            last_error=health.last_error,
            success_rate=health.success_rate,
            window_hours=int(HEALTH_WINDOW.total_seconds() // 3600),
            succeeded=health.succeeded,
            failed=health.failed,
            waiting=health.waiting,
            next_retry_at=health.next_retry_at,
        )


class EndpointOut(Out):
    """An endpoint with its signing secret (admins only) and its health at a glance."""

    model_config = {
        "openapi_extra": {
            "links": links(
                endpoint_id=(
                    "$response.body#/id",
                    [
                        "show_webhook_endpoint",
                        "update_webhook_endpoint",
                        "rotate_webhook_secret",
                        "test_webhook_endpoint",
                        "recover_webhook_endpoint",
                        "list_webhook_deliveries",
                        "delete_webhook_endpoint",
                    ],
                )
            )
        }
    }

    id: int
    url: str
    description: str
    event_types: list[EventType] = Field(description="Empty: every event.")
    enabled: bool
    disabled_reason: str | None
    disabled_at: Timestamp | None
    secret: str = Field(pattern="^whsec_")
    previous_secret_expires_at: Timestamp | None
    failing_since: Timestamp | None
    created_at: Timestamp
    updated_at: Timestamp
    health: EndpointHealth

    @classmethod
    def of(cls, endpoint, health) -> EndpointOut:
        grace_ends = endpoint.previous_secret_expires_at
        return cls(
            id=endpoint.id,
            url=endpoint.url,
            description=endpoint.description,
            event_types=list(endpoint.event_types or []),
            enabled=endpoint.enabled,
            disabled_reason=endpoint.disabled_reason,
            disabled_at=endpoint.disabled_at,
            secret=endpoint.secret,
            previous_secret_expires_at=grace_ends if in_grace(grace_ends) else None,
            failing_since=endpoint.failing_since,
            created_at=endpoint.created_at,
            updated_at=endpoint.updated_at,
            health=EndpointHealth.of(health),
        )


class Endpoints(Out):
    endpoints: list[EndpointOut]


class AttemptOut(Out):
    number: int
    trigger: AttemptTrigger
    started_at: Timestamp
    duration_ms: int
    url: str
    request_headers: Headers = Field(description="Signatures redacted.")
    response_status: int | None
    response_headers: Headers
    response_body: str | None = Field(description="The first 4 KB.")
    error: ErrorClass | None
    error_detail: str | None
    next_attempt_at: Timestamp | None


class DeliveryOut(Out):
    model_config = {
        "openapi_extra": {
            "links": links(
                delivery_id=(
                    "$response.body#/id",
                    ["show_webhook_delivery", "redeliver_webhook_delivery"],
                )
            )
        }
    }

    id: int
    event_type: EventType
    webhook_id: str
    status: DeliveryStatus
    endpoint_id: int | None
    callback_id: int | None
    assessment_id: int | None
    sequence: int | None
    attempt_count: int
    last_attempt_at: Timestamp | None
    last_response_status: int | None
    last_error: str | None
    next_attempt_at: Timestamp | None
    created_at: Timestamp
    payload: dict[str, Any]
    attempts: list[AttemptOut] | None = Field(None, description="On one delivery, not in lists.")

    @classmethod
    def of(cls, delivery, *, with_attempts: bool) -> DeliveryOut:
        event = delivery.event
        return cls(
            id=delivery.id,
            event_type=event.type,
            webhook_id=event.webhook_id,
            status=delivery.status,
            endpoint_id=delivery.endpoint_id,
            callback_id=delivery.callback_id,
            assessment_id=event.assessment_id,
            sequence=event.sequence,
            attempt_count=delivery.attempt_count,
            last_attempt_at=delivery.last_attempt_at,
            last_response_status=delivery.last_response_status,
            last_error=delivery.last_error,
            next_attempt_at=delivery.next_attempt_at,
            created_at=delivery.created_at,
            payload=event.payload(),
            attempts=delivery.attempts if with_attempts else None,
        )


class Deliveries(Out):
    endpoint_id: int
    deliveries: list[DeliveryOut]
    count: int
    next_before: int | None = Field(description="Pass as `before` for the next page.")


class Recovered(Out):
    endpoint_id: int
    since: Timestamp
    recovered: int
    delivery_ids: list[int]


class CallbackOut(Out):
    assessment_id: int
    webhook_url: str
    registered_at: Timestamp
    signing_secret: str


# --- integrations -------------------------------------------------------------------------------


class NewStudent(ClosedBody):
    external_id: ExternalId
    name: text(100) | None = None  # type: ignore[valid-type]
    email: EmailStr | None = Field(None, description="Contact only: never a login, not unique.")


class StudentOut(Out):
    external_id: ExternalId
    name: str | None
    email: str | None
    created_at: Timestamp

    @classmethod
    def of(cls, student) -> StudentOut:
        return cls(
            external_id=student.external_id,
            name=student.name,
            email=student.contact_email,
            created_at=student.created_at,
        )


class StudentFilter(Params):
    external_id: ExternalId | None = None
    after: whole_number(0, 2**31 - 1) | None = Field(  # type: ignore[valid-type]
        None, description="The next page: the `next_after` of the last one."
    )


class Students(Out):
    students: list[StudentOut]
    next_after: int | None = Field(description="Set when there may be more: pass it as `after`.")


class NewSignInLink(ClosedBody):
    expires_in: StrictInt | None = Field(
        None, ge=30, le=3600, description="Seconds (default SIGN_IN_LINK_TTL, 300)."
    )


class SignInLinkOut(Out):
    url: str = Field(json_schema_extra={"format": "uri"})
    expires_at: Timestamp
    assessment_id: int
    external_id: ExternalId


class BatchItem(ClosedBody):
    """One item of a batch submit; an item that does not fit fails alone, with its own 422."""

    assessment_id: Id
    responses: list[Answer] | None = None
    idempotency_key: str | None = Field(
        None, description="This item's own key: the `Idempotency-Key` its single submit takes."
    )


class BatchSubmit(ClosedBody):
    items: list[Annotated[dict[str, NulFreeJson], Field(json_schema_extra=NO_NUL_KEYS)]] = Field(
        min_length=1,
        max_length=100,
        description="Each a BatchItem `{assessment_id, responses?, idempotency_key?}`.",
    )


class BatchResult(Out):
    index: int
    assessment_id: int | None
    status: int = Field(description="What `POST /assessments/{id}/submit` would answer.")
    body: dict[str, Any] = Field(description="Its body: a Submission or a Problem.")


class BatchOut(Out):
    results: list[BatchResult]
    accepted: int
    already_submitted: int
    failed: int
