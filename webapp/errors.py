"""Exceptions named for what went wrong; the API renders each as problem+json."""

from __future__ import annotations


class ScorelineError(Exception):
    """A request the product refuses, with the HTTP status and code clients rely on."""

    status = 400
    code = "BAD_REQUEST"
    title = "Bad request"

    def __init__(self, detail: str | None = None, *, errors: list[dict] | None = None) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.errors = errors


class Unauthorized(ScorelineError):
    status, code, title = 401, "UNAUTHORIZED", "Authentication required"


class Forbidden(ScorelineError):
    status, code, title = 403, "FORBIDDEN", "Not allowed"


class AssessmentNotFound(ScorelineError):
    status, code, title = 404, "ASSESSMENT_NOT_FOUND", "Assessment not found"


class OperationNotFound(ScorelineError):
    status, code, title = 404, "OPERATION_NOT_FOUND", "Operation not found"


class QuestionSetNotFound(ScorelineError):
    status, code, title = 404, "QUESTION_SET_NOT_FOUND", "Question set not found"


class AssessmentLocked(ScorelineError):
    status, code, title = 409, "ASSESSMENT_LOCKED", "Assessment is locked"


class ResultNotReady(ScorelineError):
    status, code, title = 409, "RESULT_NOT_READY", "Result not ready"


class ValidationFailed(ScorelineError):
    status, code, title = 422, "VALIDATION_ERROR", "Validation failed"


class MalformedJSON(ScorelineError):
    status, code, title = 400, "MALFORMED_JSON", "Malformed JSON"


class AssessmentNotSubmitted(ScorelineError):
    status, code, title = 409, "ASSESSMENT_NOT_SUBMITTED", "Assessment not submitted yet"


class AssessmentBusy(ScorelineError):
    status, code, title = 409, "ASSESSMENT_BUSY", "Assessment is being scored"


class DraftNotReady(ScorelineError):
    status, code, title = 409, "DRAFT_NOT_READY", "No draft question to add"


class QuestionAlreadyInSet(ScorelineError):
    status, code, title = 409, "QUESTION_ALREADY_IN_SET", "Question already in the set"
