"""The result page: the final report in words, with the rubric and recommendations."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, url_for
from flask_login import current_user, login_required

from webapp.services.assessments import get_assessment
from webapp.services.outcomes import outcome as outcome_of
from webapp.services.progress import latest_operation

bp = Blueprint("results", __name__, url_prefix="/assessments")


@bp.get("/<int:assessment_id>/result")
@login_required
def page(assessment_id: int):
    """The report of a finished assessment; before that, its progress page."""
    assessment = get_assessment(assessment_id, current_user)
    operation = latest_operation(assessment.id) if assessment.is_finished else None
    if operation is None or operation.result is None:
        if assessment.is_finished:
            flash("Scoring failed, so there is no report for this assessment.", "error")
        else:
            flash("The result is not ready yet; it appears here when scoring finishes.", "info")
        return redirect(url_for("progress.page", assessment_id=assessment.id))
    questions = {q.id: q for q in assessment.question_set.questions}
    return render_template(
        "results/page.html",
        assessment=assessment,
        report=operation.result,
        outcome=outcome_of(assessment.id),
        questions=questions,
        answers=assessment.answers(),
    )
