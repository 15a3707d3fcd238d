"""The result page: the final report in words, with the rubric and recommendations."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, url_for
from flask_login import current_user, login_required

from webapp.scoring.vocabulary import Stage
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
    gpt = next((run for run in operation.stage_runs if run.name == Stage.GPT), None)
    essays = (gpt.result or {}).get("essays", []) if gpt else []
    return render_template(
        "results/page.html",
        assessment=assessment,
        report=operation.result,
        outcome=outcome_of(assessment.id),
        questions=questions,
        answers=assessment.answers(),
        # Essays the offline scorer had to score instead of the model, and why (in the report's
        # degraded_reasons too): students read plain words, admins the provider's answer.
        fallbacks={
            e["question_id"]: e["fallback_reason"] for e in essays if "fallback_reason" in e
        },
    )
