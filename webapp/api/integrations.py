"""Integrations: students by external_id, batch submit, and sign-in links into the browser.

Creating, answering, reading and listing an integration's students' assessments use the
assessment endpoints themselves (`external_id` in the create body and the list filter).
"""

from __future__ import annotations

import json
import logging

from flask import url_for
from flask_login import current_user
from pydantic import ValidationError

from webapp.api.blueprint import api_bp, body_data, problem_response, validation_problem
from webapp.api.problems import problem
from webapp.api.schemas import (
    AssessmentPath,
    BatchItem,
    BatchOut,
    BatchResult,
    BatchSubmit,
    NewSignInLink,
    NewStudent,
    SignInLinkOut,
    StudentFilter,
    StudentOut,
    Students,
)
from webapp.errors import Forbidden, ScorelineError
from webapp.extensions import db
from webapp.models.base import isoformat
from webapp.services import idempotency, sign_in_links
from webapp.services.assessments import get_assessment
from webapp.services.integrations import (
    find_student,
    get_or_create_student,
    list_students,
    parse_student,
)
from webapp.services.submission import submit_assessment

log = logging.getLogger(__name__)

STUDENTS_PAGE = 100
NOT_INTEGRATION = problem_response(
    "FORBIDDEN: not an integration account (or INSUFFICIENT_SCOPE: the token lacks the scope)."
)
NOT_FOUND = problem_response("ASSESSMENT_NOT_FOUND, or FORBIDDEN for another account's.")


def require_integration() -> None:
    """403 unless the caller is an integration account."""
    if not current_user.is_integration:
        raise Forbidden("This needs an integration account.")


@api_bp.post("/students", responses={201: StudentOut, 200: StudentOut, 403: NOT_INTEGRATION})
def create_student(body: NewStudent):
    """Create (or find) one of your students by external_id (integrations).

    201 when created, 200 when the integration already had a student with this `external_id`
    (a `name` or `email` given replaces the stored one). The email is contact information only:
    never a login, not unique.
    """
    require_integration()
    fields = parse_student(body.model_dump(exclude_none=True))
    student, created = get_or_create_student(current_user, fields)
    return StudentOut.of(student).model_dump(mode="json"), 201 if created else 200


@api_bp.get("/students", responses={200: Students, 403: NOT_INTEGRATION})
def index_students(query: StudentFilter):
    """Your students (integrations), in the order they were created, 100 a page.

    `?external_id=` finds one (an empty list when there is none).
    """
    require_integration()
    if query.external_id is not None:
        student = find_student(current_user, query.external_id)
        found = [StudentOut.of(student)] if student else []
        return Students(students=found, next_after=None).model_dump(mode="json")
    students = list_students(current_user, limit=STUDENTS_PAGE, after_id=query.after or 0)
    return Students(
        students=[StudentOut.of(s) for s in students],
        next_after=students[-1].id if len(students) == STUDENTS_PAGE else None,
    ).model_dump(mode="json")


@api_bp.post(
    "/assessments/<int:assessment_id>/sign-in-link",
    responses={201: SignInLinkOut, 403: NOT_INTEGRATION, 404: NOT_FOUND},
    openapi_extensions={
        "requestBody": {
            "required": False,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/NewSignInLink"}}
            },
        }
    },
)
def create_sign_in_link(path: AssessmentPath):
    """A single-use link that signs the assessment's student in (integrations).

    Opening the link (a page with one button, so mail scanners and link previews cannot use it
    up) starts a browser session limited to the student's own pages, landing on the assessment's
    live progress page (its answer form while it is a draft). A used, expired or tampered link
    shows a page saying so and grants nothing. `expires_in` defaults to SIGN_IN_LINK_TTL.
    """
    require_integration()
    assessment = get_assessment(path.assessment_id, current_user)
    data = body_data()
    try:
        body = NewSignInLink.model_validate(data or {})
    except ValidationError as exc:
        validation_problem(exc)
    link, token = sign_in_links.issue(
        assessment, current_user, sign_in_links.parse_ttl(body.expires_in)
    )
    return SignInLinkOut(
        url=url_for("sign_in.show", token=token, _external=True),
        expires_at=isoformat(link.expires_at),
        assessment_id=assessment.id,
        external_id=assessment.user.external_id,
    ).model_dump(mode="json"), 201


@api_bp.post("/assessments/batch-submit", responses={200: BatchOut})
def batch_submit(body: BatchSubmit):
    """Submit up to 100 assessments, each item on its own.

    Each item runs as `POST /assessments/{id}/submit` would, in its own transaction: its
    `status` and `body` are that endpoint's (202, 200 already submitted, or a problem such as
    403, 404, 409, 422), and one item's failure changes nothing of another's nor applies half
    of itself. An item's `idempotency_key` is that endpoint's `Idempotency-Key`: a repeated item
    replays (its body then carries `"replayed": true`). A batch counts one write per item
    against the rate limit.
    """
    results = [_submit_item(index, item) for index, item in enumerate(body.items)]
    counts = {"accepted": 0, "already_submitted": 0, "failed": 0}
    for result in results:
        kind = {202: "accepted", 200: "already_submitted"}.get(result.status, "failed")
        counts[kind] += 1
    return BatchOut(results=results, **counts).model_dump(mode="json")


def _submit_item(index: int, raw: dict) -> BatchResult:
    """Run one item as its own submit and say what happened to it."""
    assessment_id = raw.get("assessment_id") if isinstance(raw.get("assessment_id"), int) else None
    try:
        try:
            item = BatchItem.model_validate(raw)
        except ValidationError as exc:
            validation_problem(exc)
        assessment_id = item.assessment_id
        responses = None if item.responses is None else [a.model_dump() for a in item.responses]
        status, answer = _submit_once(item.assessment_id, responses, item.idempotency_key)
    except ScorelineError as exc:
        status, answer = exc.status, _problem_body(exc)
    except Exception:  # one broken item must not cost the others their answers
        log.exception("batch submit: item %d failed", index)
        db.session.rollback()
        status = 500
        answer = json.loads(
            problem(500, "INTERNAL_ERROR", "Internal server error", "It was logged.").get_data()
        )
    return BatchResult(index=index, assessment_id=assessment_id, status=status, body=answer)


def _submit_once(assessment_id: int, responses: list | None, raw_key: str | None):
    """Submit one assessment, under its idempotency key when it has one: (status, body)."""
    key = idempotency.parse_key(raw_key)
    if key is None:
        return _submit(assessment_id, responses)
    path = url_for("api.submit", assessment_id=assessment_id)
    request_body = b"" if responses is None else json.dumps({"responses": responses}).encode()
    fingerprint = idempotency.fingerprint("POST", path, request_body)
    reserved = idempotency.reserve(current_user.id, key, fingerprint, method="POST", path=path)
    if isinstance(reserved, idempotency.StoredResponse):
        return reserved.status, {**json.loads(reserved.body), "replayed": True}
    try:
        status, answer = _submit(assessment_id, responses)
    except ScorelineError as exc:
        status, answer = exc.status, _problem_body(exc)
    except Exception:
        idempotency.release(reserved)
        raise
    idempotency.finish(reserved, status, json.dumps(answer), {"Content-Type": "application/json"})
    return status, answer


def _submit(assessment_id: int, responses: list | None) -> tuple[int, dict]:
    assessment = get_assessment(assessment_id, current_user)
    outcome = submit_assessment(assessment, current_user, responses)
    body = outcome.to_dict()
    return (202 if outcome.created else 200), body


def _problem_body(exc: ScorelineError) -> dict:
    """The problem+json body the single endpoint would have answered."""
    response = problem(exc.status, exc.code, exc.title, exc.detail, errors=exc.errors)
    return json.loads(response.get_data())
