"""Assessments: create, list, answer, submit, and read status and result."""

from __future__ import annotations

from flask import current_app, make_response, url_for
from flask_login import current_user
from pydantic import ValidationError

from webapp import fast_polls
from webapp.api.blueprint import (
    api_bp,
    body_data,
    problem_response,
    require_admin,
    validation_problem,
)
from webapp.api.schemas import (
    Answers,
    AssessmentFilter,
    AssessmentOut,
    AssessmentPath,
    Assessments,
    History,
    HistoryEventOut,
    NewAssessment,
    OperationOut,
    RecentEvents,
    RecentEventsQuery,
    Report,
    StatusOut,
    Submission,
)
from webapp.errors import ResultNotReady
from webapp.services import history, progress
from webapp.services.assessments import (
    create_assessment,
    get_assessment,
    list_assessments,
    save_responses,
)
from webapp.services.rescore import rescore_assessment
from webapp.services.submission import submit_assessment

NOT_FOUND = problem_response("ASSESSMENT_NOT_FOUND, or FORBIDDEN for another account's.")


@api_bp.post(
    "/assessments",
    responses={201: AssessmentOut, 404: problem_response("QUESTION_SET_NOT_FOUND")},
)
def create(body: NewAssessment):
    """Start a draft assessment of a question set: 201 with its questions (never the answers)."""
    assessment = create_assessment(current_user, body.question_set, body.external_id)
    response = make_response(AssessmentOut.of(assessment).model_dump(mode="json"), 201)
    response.headers["Location"] = url_for("api.show", assessment_id=assessment.id)
    return response


@api_bp.get("/assessments", responses={200: Assessments})
def index(query: AssessmentFilter):
    """The caller's assessments (admins: everyone's), newest first, optionally by status."""
    items = list_assessments(current_user, query.status, external_id=query.external_id)
    return Assessments(
        assessments=[AssessmentOut.of(a, with_questions=False) for a in items]
    ).model_dump(mode="json")


@api_bp.get("/assessments/<int:assessment_id>", responses={200: AssessmentOut, 404: NOT_FOUND})
def show(path: AssessmentPath):
    """One assessment with its questions and saved responses."""
    assessment = get_assessment(path.assessment_id, current_user)
    return AssessmentOut.of(assessment).model_dump(mode="json")


@api_bp.put(
    "/assessments/<int:assessment_id>/responses",
    responses={
        200: AssessmentOut,
        404: NOT_FOUND,
        409: problem_response("ASSESSMENT_LOCKED: it was submitted."),
    },
)
def put_responses(path: AssessmentPath, body: Answers):
    """Save draft answers, merged by question id; 409 ASSESSMENT_LOCKED once submitted.

    422 also for what the schema cannot know: a question id that is not one of this
    assessment's, or a theoretical answer that is not one of the question's option ids.
    """
    assessment = get_assessment(path.assessment_id, current_user)
    save_responses(assessment, [answer.model_dump() for answer in body.responses])
    return AssessmentOut.of(assessment).model_dump(mode="json")


@api_bp.post(
    "/assessments/<int:assessment_id>/submit",
    responses={
        202: Submission,
        200: Submission,
        404: NOT_FOUND,
    },
    openapi_extensions={
        "requestBody": {
            "required": False,
            "description": "Optional final responses, merged before submitting.",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Answers"}}},
        }
    },
)
def submit(path: AssessmentPath):
    """Submit, merging optional final responses: 202 first, then 200 "already submitted".

    Unanswered questions score 0 (`degraded`). Submitting again answers 200 with the same
    operation and `"message": "already submitted"`. Final responses are checked as in PUT
    .../responses: 422 for a question id not of this assessment or an unknown option id.
    """
    assessment = get_assessment(path.assessment_id, current_user)
    data = body_data()
    try:
        answers = Answers.model_validate(data).responses if data is not None else None
    except ValidationError as exc:
        validation_problem(exc)
    outcome = submit_assessment(
        assessment, current_user, None if answers is None else [a.model_dump() for a in answers]
    )
    body = Submission.model_validate(outcome.to_dict()).model_dump(mode="json", exclude_none=True)
    # rule_score may be null: exclude_none drops only the optional `message` otherwise
    body.setdefault("rule_score", None)
    response = make_response(body, 202 if outcome.created else 200)
    response.headers["Location"] = url_for("api.show_operation", operation_id=outcome.operation.id)
    return response


@api_bp.get(
    "/assessments/<int:assessment_id>/status",
    responses={
        200: StatusOut,
        304: {"description": "Unchanged since the `If-None-Match` ETag."},
        404: NOT_FOUND,
    },
)
def status(path: AssessmentPath):
    """Progress of the pipeline; ETag / If-None-Match, and Retry-After while running.

    Most polls are answered from memory before this runs (webapp/fast_polls.py); this builds
    the answer from the database and keeps it for the owner's next polls.
    """
    assessment_id = path.assessment_id
    assessment = get_assessment(assessment_id, current_user)
    body = progress.status_view(assessment)
    return fast_polls.answer(
        fast_polls.STATUS, assessment, current_app.json.dumps(body),
        etag=progress.etag_for(body), finished=assessment.is_finished,
    )  # fmt: skip


@api_bp.get(
    "/assessments/<int:assessment_id>/result",
    responses={
        200: Report,
        404: NOT_FOUND,
        409: problem_response("RESULT_NOT_READY: not finished, or scoring left no report."),
    },
)
def result(path: AssessmentPath):
    """The final report; 409 RESULT_NOT_READY until scoring has finished."""
    assessment = get_assessment(path.assessment_id, current_user)
    if not assessment.is_finished:
        raise ResultNotReady(f"Assessment {assessment.id} is {assessment.status}; poll its status.")
    operation = progress.latest_operation(assessment.id)
    if operation is None or operation.result is None:
        detail = operation.error_message if operation else "No report was produced."
        raise ResultNotReady(f"Scoring failed and produced no report: {detail}")
    return Report.model_validate(operation.result).model_dump(mode="json", exclude_unset=True)


@api_bp.get("/assessments/<int:assessment_id>/history", responses={200: History, 404: NOT_FOUND})
def assessment_history(path: AssessmentPath):
    """Every status change of the assessment, its stages and operation, newest first (max 100)."""
    assessment = get_assessment(path.assessment_id, current_user)
    events = history.for_assessment(assessment.id, current_user)
    return History(
        assessment_id=assessment.id,
        history=[HistoryEventOut.of(e) for e in events],
        event_count=len(events),
    ).model_dump(mode="json")


@api_bp.get("/events/recent", responses={200: RecentEvents})
def recent_events(query: RecentEventsQuery):
    """Events of the last `hours` (default 24, 1-720) on the caller's assessments; admins: all."""
    events = history.recent(current_user, query.hours)
    return RecentEvents(
        events=[HistoryEventOut.of(e) for e in events], count=len(events), hours=query.hours
    ).model_dump(mode="json")


@api_bp.post(
    "/assessments/<int:assessment_id>/rescore",
    responses={
        202: OperationOut,
        403: problem_response("FORBIDDEN: admins only."),
        404: NOT_FOUND,
        409: problem_response(
            "ASSESSMENT_NOT_SUBMITTED for a draft, ASSESSMENT_BUSY while scored."
        ),
    },
)
def rescore(path: AssessmentPath):
    """Admins: score a finished assessment again as a new operation: 202 with its Location.

    403 FORBIDDEN for students; 409 ASSESSMENT_NOT_SUBMITTED for a draft and 409 ASSESSMENT_BUSY
    while it is still being scored.
    """
    assessment = get_assessment(path.assessment_id, current_user)
    require_admin()
    operation = rescore_assessment(assessment, current_user)
    response = make_response(OperationOut.of(operation).model_dump(mode="json"), 202)
    response.headers["Location"] = url_for("api.show_operation", operation_id=operation.id)
    return response
