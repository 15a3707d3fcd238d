"""Integrations: students by external_id, batch submit, and sign-in links into the browser.

Creating, answering, reading and listing an integration's students' assessments use the
assessment endpoints themselves (`external_id` in the create body and the list filter).
"""

from __future__ import annotations

import json
import logging

from flask import request, url_for
from flask_login import current_user

from webapp.api import api_bp, json_body
from webapp.api.problems import problem
from webapp.errors import Forbidden, ScorelineError, ValidationFailed
from webapp.extensions import db
from webapp.models.base import isoformat
from webapp.request_values import parse_id, parse_whole_number
from webapp.services import idempotency, sign_in_links
from webapp.services.assessments import get_assessment
from webapp.services.integrations import (
    find_student,
    get_or_create_student,
    list_students,
    parse_external_id,
    parse_student,
    student_to_dict,
)
from webapp.services.submission import submit_assessment

log = logging.getLogger(__name__)

MAX_BATCH = 100
STUDENTS_PAGE = 100


def require_integration() -> None:
    """403 unless the caller is an integration account."""
    if not current_user.is_integration:
        raise Forbidden("This needs an integration account.")


@api_bp.post("/students")
def create_student():
    """Create (or find) the integration's student by external_id -> 201 created, 200 found."""
    require_integration()
    student, created = get_or_create_student(current_user, parse_student(json_body()))
    return student_to_dict(student), 201 if created else 200


@api_bp.get("/students")
def index_students():
    """The integration's students, 100 a page (`?after=` the last page's `next_after`), or the
    one with `?external_id=`."""
    require_integration()
    if "external_id" in request.args:  # a filter: no match is an empty list
        external_id = request.args["external_id"]
        errors: list[dict] = []
        parse_external_id(external_id, errors)
        if errors:
            raise ValidationFailed("external_id is invalid.", errors=errors)
        student = find_student(current_user, external_id)
        return {"students": [student_to_dict(student)] if student else [], "next_after": None}
    after = parse_whole_number(request.args.get("after"), "after", minimum=0, maximum=2**31 - 1)
    students = list_students(current_user, limit=STUDENTS_PAGE, after_id=after or 0)
    return {
        "students": [student_to_dict(s) for s in students],
        "next_after": students[-1].id if len(students) == STUDENTS_PAGE else None,
    }


@api_bp.post("/assessments/<int:assessment_id>/sign-in-link")
def create_sign_in_link(assessment_id: int):
    """A single-use link that signs the assessment's student in, landing on its progress."""
    require_integration()
    assessment = get_assessment(assessment_id, current_user)
    body = json_body(required=False) or {}
    unknown = sorted(set(body) - {"expires_in"})
    if unknown:
        raise ValidationFailed(
            "Unknown fields.",
            errors=[{"field": f, "message": "is not a field of a sign-in link"} for f in unknown],
        )
    ttl = sign_in_links.parse_ttl(body.get("expires_in"))
    link, token = sign_in_links.issue(assessment, current_user, ttl)
    return {
        "url": url_for("sign_in.show", token=token, _external=True),
        "expires_at": isoformat(link.expires_at),
        "assessment_id": assessment.id,
        "external_id": assessment.user.external_id,
    }, 201


@api_bp.post("/assessments/batch-submit")
def batch_submit():
    """Submit up to 100 assessments, each item on its own: its own outcome, its own
    `idempotency_key`, and never half applied (one transaction per item).

    Each item answers what `POST /assessments/{id}/submit` would (status and body), and an
    item's `idempotency_key` is the same key that endpoint takes in its header: a retried batch
    replays each item that ran.
    """
    items = _batch_items(json_body())
    results = [_submit_item(index, item) for index, item in enumerate(items)]
    counts = {"accepted": 0, "already_submitted": 0, "failed": 0}
    for result in results:
        if result["status"] == 202:
            counts["accepted"] += 1
        elif result["status"] == 200:
            counts["already_submitted"] += 1
        else:
            counts["failed"] += 1
    return {"results": results, **counts}


def _batch_items(body: dict) -> list[dict]:
    """The batch's items; ValidationFailed for the batch's own shape (not for each item's)."""
    unknown = sorted(set(body) - {"items"})
    errors = [{"field": f, "message": "is not a field of a batch"} for f in unknown]
    items = body.get("items")
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
        errors.append({"field": "items", "message": f"a list of 1 to {MAX_BATCH} items"})
    if errors:
        raise ValidationFailed("The batch is invalid.", errors=errors)
    return items


def _submit_item(index: int, item: object) -> dict:
    """Run one item as its own submit and say what happened to it."""
    outcome = {"index": index, "assessment_id": None}
    try:
        assessment_id, responses, key = _parse_item(item)
        outcome["assessment_id"] = assessment_id
        status, body = _submit_once(assessment_id, responses, key)
    except ScorelineError as exc:
        status, body = exc.status, _problem_body(exc)
    except Exception:  # one broken item must not cost the others their answers
        log.exception("batch submit: item %d failed", index)
        db.session.rollback()
        status = 500
        body = json.loads(
            problem(500, "INTERNAL_ERROR", "Internal server error", "It was logged.").get_data()
        )
    return {**outcome, "status": status, "body": body}


def _parse_item(item: object) -> tuple[int, object, str | None]:
    """`{"assessment_id", "responses"?, "idempotency_key"?}`; ValidationFailed listing all."""
    if not isinstance(item, dict):
        raise ValidationFailed(
            "An item must be an object.", errors=[{"field": "item", "message": "not an object"}]
        )
    errors = [
        {"field": f, "message": "is not a field of an item"}
        for f in sorted(set(item) - {"assessment_id", "responses", "idempotency_key"})
    ]
    raw_id = item.get("assessment_id")
    assessment_id = None
    if isinstance(raw_id, int) and not isinstance(raw_id, bool):
        try:
            assessment_id = parse_id(str(raw_id), "assessment_id")
        except ValidationFailed as exc:
            errors += exc.errors or []
    else:
        errors.append({"field": "assessment_id", "message": "must be an assessment id"})
    key = item.get("idempotency_key")
    if key is not None and not isinstance(key, str):
        errors.append({"field": "idempotency_key", "message": "must be a string"})
        key = None
    if errors:
        raise ValidationFailed("The item is invalid.", errors=errors)
    return assessment_id, item.get("responses"), idempotency.parse_key(key)


def _submit_once(assessment_id: int, responses: object, key: str | None) -> tuple[int, dict]:
    """Submit one assessment, under its idempotency key when it has one."""
    if key is None:
        return _submit(assessment_id, responses)
    path = url_for("api.submit", assessment_id=assessment_id)
    body = b"" if responses is None else json.dumps({"responses": responses}).encode()
    fingerprint = idempotency.fingerprint("POST", path, body)
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
    headers = {"Content-Type": "application/json"}
    idempotency.finish(reserved, status, json.dumps(answer), headers)
    return status, answer


def _submit(assessment_id: int, responses: object) -> tuple[int, dict]:
    assessment = get_assessment(assessment_id, current_user)
    outcome = submit_assessment(assessment, current_user, responses)
    return (202 if outcome.created else 200), outcome.to_dict()


def _problem_body(exc: ScorelineError) -> dict:
    """The problem+json body the single endpoint would have answered."""
    response = problem(exc.status, exc.code, exc.title, exc.detail, errors=exc.errors)
    return json.loads(response.get_data())
