"""Assessments: create, list, answer, submit, and read status and result."""

from __future__ import annotations

from flask import current_app, make_response, request, url_for
from flask_login import current_user

from webapp import fast_polls
from webapp.api import api_bp, json_body, require_admin
from webapp.api.operations import operation_to_dict
from webapp.errors import ResultNotReady, ValidationFailed
from webapp.request_values import parse_whole_number
from webapp.services import history, progress
from webapp.services.assessments import (
    assessment_to_dict,
    create_assessment,
    get_assessment,
    list_assessments,
    save_responses,
)
from webapp.services.rescore import rescore_assessment
from webapp.services.submission import submit_assessment


@api_bp.post("/assessments")
def create():
    """Start a draft assessment of a question set -> 201 with its questions."""
    body = json_body()
    assessment = create_assessment(current_user, body.get("question_set"))
    response = make_response(assessment_to_dict(assessment), 201)
    response.headers["Location"] = url_for("api.show", assessment_id=assessment.id)
    return response


@api_bp.get("/assessments")
def index():
    """The caller's assessments (admins: everyone's), optionally filtered by status."""
    items = list_assessments(current_user, request.args.get("status"))
    return {"assessments": [assessment_to_dict(a, with_questions=False) for a in items]}


@api_bp.get("/assessments/<int:assessment_id>")
def show(assessment_id: int):
    """One assessment with its questions and saved responses."""
    return assessment_to_dict(get_assessment(assessment_id, current_user))


@api_bp.put("/assessments/<int:assessment_id>/responses")
def put_responses(assessment_id: int):
    """Save draft answers; 409 ASSESSMENT_LOCKED once submitted."""
    assessment = get_assessment(assessment_id, current_user)
    body = json_body()
    if "responses" not in body:
        raise ValidationFailed(
            "responses is required.", errors=[{"field": "responses", "message": "is required"}]
        )
    save_responses(assessment, body["responses"])
    return assessment_to_dict(assessment)


@api_bp.post("/assessments/<int:assessment_id>/submit")
def submit(assessment_id: int):
    """Submit, merging optional final responses: 202 first, then 200 "already submitted"."""
    assessment = get_assessment(assessment_id, current_user)
    body = json_body(required=False) or {}
    outcome = submit_assessment(assessment, current_user, body.get("responses"))
    response = make_response(outcome.to_dict(), 202 if outcome.created else 200)
    response.headers["Location"] = url_for("api.show_operation", operation_id=outcome.operation.id)
    return response


@api_bp.get("/assessments/<int:assessment_id>/status")
def status(assessment_id: int):
    """Progress of the pipeline; ETag / If-None-Match, and Retry-After while running.

    Most polls are answered from memory before this runs (webapp/fast_polls.py); this builds
    the answer from the database and keeps it for the owner's next polls.
    """
    assessment = get_assessment(assessment_id, current_user)
    body = progress.status_view(assessment)
    return fast_polls.answer(
        fast_polls.STATUS, assessment, current_app.json.dumps(body),
        etag=progress.etag_for(body), finished=assessment.is_finished,
    )  # fmt: skip


@api_bp.get("/assessments/<int:assessment_id>/result")
def result(assessment_id: int):
    """The final report; 409 RESULT_NOT_READY until scoring has finished."""
    assessment = get_assessment(assessment_id, current_user)
    if not assessment.is_finished:
        raise ResultNotReady(f"Assessment {assessment_id} is {assessment.status}; poll its status.")
    operation = progress.latest_operation(assessment_id)
    if operation is None or operation.result is None:
        detail = operation.error_message if operation else "No report was produced."
        raise ResultNotReady(f"Scoring failed and produced no report: {detail}")
    return operation.result


@api_bp.get("/assessments/<int:assessment_id>/history")
def assessment_history(assessment_id: int):
    """Every status change of the assessment, its stages and operation, newest first (max 100)."""
    assessment = get_assessment(assessment_id, current_user)
    events = history.for_assessment(assessment.id, current_user)
    return {
        "assessment_id": assessment.id,
        "history": [e.to_dict() for e in events],
        "event_count": len(events),
    }


@api_bp.get("/events/recent")
def recent_events():
    """Events of the last `hours` (default 24, 1-720) on the caller's assessments; admins: all."""
    hours = parse_whole_number(request.args.get("hours"), "hours", minimum=1, maximum=720) or 24
    events = history.recent(current_user, hours)
    return {"events": [e.to_dict() for e in events], "count": len(events), "hours": hours}


@api_bp.post("/assessments/<int:assessment_id>/rescore")
def rescore(assessment_id: int):
    """Admins: score a finished assessment again as a new operation -> 202 with its Location.

    403 FORBIDDEN for students; 409 ASSESSMENT_NOT_SUBMITTED for a draft and 409 ASSESSMENT_BUSY
    while it is still being scored.
    """
    assessment = get_assessment(assessment_id, current_user)
    require_admin()
    operation = rescore_assessment(assessment, current_user)
    response = make_response(operation_to_dict(operation), 202)
    response.headers["Location"] = url_for("api.show_operation", operation_id=operation.id)
    return response
