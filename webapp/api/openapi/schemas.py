"""JSON Schemas of the API's bodies (OpenAPI 3.1 is JSON Schema 2020-12), named once.

Enumerations come from the models, so a new status or type shows up here by itself.
"""

from __future__ import annotations

from webapp.models import AssessmentStatus, OperationStatus, OperationType, Stage, StageStatus
from webapp.models.questions import QuestionType


def ref(name: str) -> dict:
    """A reference to a schema in components."""
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: dict) -> dict:
    """`schema` or null (OpenAPI 3.1 is JSON Schema 2020-12)."""
    return {"anyOf": [schema, {"type": "null"}]}


def obj(required: dict, optional: dict | None = None) -> dict:
    """An object with these required (and optional) properties; extra properties are allowed."""
    return {
        "type": "object",
        "required": list(required),
        "properties": {**required, **(optional or {})},
    }


STRING = {"type": "string"}
INTEGER = {"type": "integer"}
NUMBER = {"type": "number"}
BOOLEAN = {"type": "boolean"}
TIMESTAMP = {"type": "string", "format": "date-time"}
PERCENT = {"type": "integer", "minimum": 0, "maximum": 100}
ANY_OBJECT = {"type": "object"}


def enum(values) -> dict:
    return {"type": "string", "enum": [str(v) for v in values]}


def list_of(schema: dict) -> dict:
    return {"type": "array", "items": schema}


SCORE = obj({"score": NUMBER, "max_score": NUMBER}, {"percentage": NUMBER})

SCHEMAS: dict[str, dict] = {
    "ExternalId": {
        "type": "string",
        "minLength": 1,
        "maxLength": 128,
        "pattern": "^[^\\x00-\\x1f\\x7f\\s](?:[^\\x00-\\x1f\\x7f]*[^\\x00-\\x1f\\x7f\\s])?$",
        "description": "An integration's own id for one of its students (unique within the "
        "integration). Present on assessments, status answers and webhook events of an "
        "integration's students only.",
        "examples": ["s-1001"],
    },
    "Student": obj(
        {
            "external_id": {"$ref": "#/components/schemas/ExternalId"},
            "name": nullable(STRING),
            "email": nullable(STRING),
            "created_at": TIMESTAMP,
        }
    ),
    "Problem": obj(
        {"type": STRING, "title": STRING, "status": INTEGER, "detail": STRING, "code": STRING},
        {"errors": list_of(obj({"field": STRING, "message": STRING}))},
    ),
    "QuestionSet": obj(
        {
            "slug": STRING,
            "title": STRING,
            "description": STRING,
            "version": INTEGER,
            "question_count": INTEGER,
        }
    ),
    "Question": obj(
        {
            "id": INTEGER,
            "type": enum(QuestionType),
            "prompt": STRING,
            "options": list_of(obj({"id": STRING, "text": STRING})),
            "weight": NUMBER,
        },
        {"topic": STRING},
    ),
    "Answer": obj({"question_id": INTEGER, "answer": nullable(STRING)}),
    "Assessment": obj(
        {
            "id": INTEGER,
            "question_set": STRING,
            "status": enum(AssessmentStatus),
            "degraded": BOOLEAN,
            "missing_question_ids": list_of(INTEGER),
            "created_at": TIMESTAMP,
            "submitted_at": nullable(TIMESTAMP),
            "completed_at": nullable(TIMESTAMP),
            "responses": list_of(ref("Answer")),
        },
        {"questions": list_of(ref("Question")), "external_id": ref("ExternalId")},
    ),
    "RuleScore": obj(
        {"score": NUMBER, "max_score": NUMBER, "percentage": NUMBER, "items": list_of(ANY_OBJECT)}
    ),
    "Submission": obj(
        {
            "assessment_id": INTEGER,
            "status": enum(AssessmentStatus),
            "rule_score": nullable(ref("RuleScore")),
            "degraded": BOOLEAN,
            "missing_question_ids": list_of(INTEGER),
            "operation": obj({"id": INTEGER, "status": enum(OperationStatus)}),
        },
        {"message": {"type": "string", "const": "already submitted"}},
    ),
    "Status": obj(
        {
            "assessment_id": INTEGER,
            "status": enum(AssessmentStatus),
            "overall_progress": PERCENT,
            "stages": list_of(
                obj(
                    {
                        "name": enum(Stage),
                        "status": enum(StageStatus),
                        "percentage": PERCENT,
                        "started_at": nullable(TIMESTAMP),
                        "completed_at": nullable(TIMESTAMP),
                        "error": nullable(STRING),
                    }
                )
            ),
            "jobs": list_of(
                obj(
                    {
                        "job_type": STRING,
                        "status": STRING,
                        "created_at": nullable(TIMESTAMP),
                        "completed_at": nullable(TIMESTAMP),
                    }
                )
            ),
            "operation_id": nullable(INTEGER),
            "degraded": BOOLEAN,
            "updated_at": TIMESTAMP,
        },
        {"external_id": ref("ExternalId")},
    ),
    "Report": obj(
        {
            "assessment_id": INTEGER,
            "total": NUMBER,
            "max_total": NUMBER,
            "percentage": NUMBER,
            "degraded": BOOLEAN,
            "degraded_reasons": list_of(STRING),
            "sections": obj({"theoretical": SCORE, "profile": SCORE, "essay": SCORE}),
            "essays": list_of(
                obj(
                    {
                        "question_id": INTEGER,
                        "scorer": STRING,
                        "rubric": {
                            "type": "object",
                            "additionalProperties": obj(
                                {"score": {"type": "integer", "minimum": 0, "maximum": 10}},
                                {"rationale": STRING},
                            ),
                        },
                    }
                )
            ),
            "recommendations": list_of(
                obj(
                    {
                        "title": STRING,
                        "provider": STRING,
                        "url": STRING,
                        "source_id": STRING,
                        "passage": STRING,
                        "score": NUMBER,
                    }
                )
            ),
        }
    ),
    "HistoryEvent": obj(
        {
            "timestamp": TIMESTAMP,
            "status": STRING,
            "progress": PERCENT,
            "message": STRING,
            "metadata": ANY_OBJECT,
        }
    ),
    "History": obj(
        {
            "assessment_id": INTEGER,
            "history": list_of(ref("HistoryEvent")),
            "event_count": {"type": "integer", "minimum": 0, "maximum": 100},
        }
    ),
    "RecentEvents": obj(
        {"events": list_of(ref("HistoryEvent")), "count": INTEGER, "hours": INTEGER}
    ),
    "Operation": obj(
        {
            "id": INTEGER,
            "operation_type": enum(OperationType),
            "status": enum(OperationStatus),
            "progress": PERCENT,
            "done": BOOLEAN,
            "result": nullable(ANY_OBJECT),
            "error_message": nullable(STRING),
            "assessment_id": nullable(INTEGER),
            "created_at": TIMESTAMP,
            "updated_at": TIMESTAMP,
        }
    ),
    "AuditEntry": obj(
        {
            "id": INTEGER,
            "timestamp": TIMESTAMP,
            "actor": obj({"id": nullable(INTEGER), "email": STRING}),
            "action": STRING,
            "entity_type": STRING,
            "entity_id": STRING,
            "details": ANY_OBJECT,
            "ip": STRING,
        }
    ),
    "WebhookEndpoint": obj(
        {
            "id": INTEGER,
            "url": STRING,
            "description": STRING,
            "event_types": list_of(STRING),
            "enabled": BOOLEAN,
            "secret": STRING,
            "disabled_reason": nullable(STRING),
        }
    ),
    "WebhookDelivery": obj(
        {
            "id": INTEGER,
            "event_type": STRING,
            "webhook_id": STRING,
            "status": enum(["pending", "retrying", "succeeded", "failed", "skipped"]),
            "payload": ANY_OBJECT,
        },
        {
            "attempts": list_of(
                obj(
                    {
                        "number": INTEGER,
                        "trigger": STRING,
                        "started_at": nullable(TIMESTAMP),
                        "duration_ms": nullable(INTEGER),
                        "response_status": nullable(INTEGER),
                        "response_body": nullable(STRING),
                        "error": nullable(STRING),
                        "next_attempt_at": nullable(TIMESTAMP),
                    }
                )
            )
        },
    ),
}
