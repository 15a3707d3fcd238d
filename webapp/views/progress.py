"""The progress page: live bars per stage, polled by htmx until scoring has finished."""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from htmx_flask import make_response

from webapp import fast_polls
from webapp.errors import AssessmentNotFound, Forbidden
from webapp.models import Assessment, Entity, HistoryEvent
from webapp.models.base import utcnow
from webapp.scoring.vocabulary import AssessmentStatus, StageStatus
from webapp.services import history
from webapp.services.assessments import get_assessment
from webapp.services.outcomes import outcome_of_operation
from webapp.services.progress import scoring_operation, status_view

bp = Blueprint("progress", __name__, url_prefix="/assessments")

TIMELINE_LENGTH = 10


def _worth_showing(event: HistoryEvent) -> bool:
    """Assessment and stage changes, minus the batch of "queued" notes made at submit time.

    The operation's own events repeat the assessment's, in operator words.
    """
    if event.entity == Entity.STAGE:
        return event.status != StageStatus.QUEUED
    return event.entity == Entity.ASSESSMENT


def timeline(assessment: Assessment, technical: bool = False) -> list[dict]:
    """The latest status changes of the assessment and its stages, oldest first; failures
    carry their technical error only when `technical` (admins)."""
    events = [
        event
        for event in history.for_assessment(assessment.id, limit=TIMELINE_LENGTH * 4)
        if _worth_showing(event)
    ][:TIMELINE_LENGTH]
    return [
        {"at": event.created_at, "message": _message(event, technical), "tone": _tone(event)}
        for event in reversed(events)
    ]


def _message(event: HistoryEvent, technical: bool) -> str:
    """An event in words; a failure's internal error (`X failed: <error>`) is for admins."""
    if event.status == StageStatus.FAILED and not technical:
        return event.message.split(": ", 1)[0].rstrip(".") + "."
    return event.message


def _tone(event: HistoryEvent) -> str:
    """How an event is marked: failures stand out, a clean finish is good news, a partial
    report is a warning."""
    if event.status == StageStatus.FAILED:
        return "error"
    if event.entity == Entity.ASSESSMENT and event.status == AssessmentStatus.COMPLETED:
        return "warning" if "partial report" in event.message else "success"
    return "info"


def _context(assessment: Assessment) -> dict:
    """Everything `_progress.html` shows."""
    latest = scoring_operation(assessment)
    operation = latest if assessment.is_finished else None
    return {
        "assessment": assessment,
        "view": status_view(assessment, latest),
        "outcome": outcome_of_operation(latest),
        "elapsed": elapsed_seconds(assessment),
        "finished": assessment.is_finished,
        "has_result": bool(operation and operation.result),
        "failure": operation.error_message if operation else None,
        "timeline": timeline(assessment, technical=current_user.is_admin),
    }


def elapsed_seconds(assessment: Assessment) -> float | None:
    """Seconds from submission to the end of scoring (or to now, while it runs)."""
    if assessment.submitted_at is None:
        return None
    end = assessment.completed_at if assessment.is_finished else None
    return max(0.0, ((end or utcnow()) - assessment.submitted_at).total_seconds())


@bp.get("/<int:assessment_id>/progress")
@login_required
def page(assessment_id: int):
    """The progress page; a draft goes back to its take page."""
    assessment = get_assessment(assessment_id, current_user)
    if assessment.status == AssessmentStatus.DRAFT:
        return redirect(url_for("take.show", assessment_id=assessment.id))
    return render_template("progress/page.html", **_context(assessment))


@bp.get("/<int:assessment_id>/progress/live")
@login_required
def live(assessment_id: int):
    """The polled partial: 200 while scoring runs, 286 (stop polling) once it has finished."""
    try:
        assessment = get_assessment(assessment_id, current_user)
    except (AssessmentNotFound, Forbidden) as exc:
        if not request.htmx:
            raise
        # htmx keeps polling through error answers; this one ends the poll and says why.
        body = render_template("progress/_gone.html", detail=exc.detail)
        return make_response(body, fast_polls.STOP_POLLING)
    context = _context(assessment)
    body = render_template("progress/_progress.html", announce=True, **context)
    return fast_polls.answer(fast_polls.PARTIAL, assessment, body, finished=context["finished"])
