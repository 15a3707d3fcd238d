"""Admin: actions on one assessment from its pages (score it again)."""

from __future__ import annotations

from flask import flash, redirect, url_for
from flask_login import current_user
from flask_wtf import FlaskForm

from webapp.errors import AssessmentBusy, AssessmentNotSubmitted
from webapp.services.assessments import get_assessment
from webapp.services.rescore import rescore_assessment
from webapp.views.admin import bp


@bp.post("/assessments/<int:assessment_id>/rescore")
def rescore_assessment_page(assessment_id: int):
    """Score a finished assessment again as a new operation, then watch it on its progress page."""
    assessment = get_assessment(assessment_id, current_user)
    if not FlaskForm().validate_on_submit():
        flash("The form expired; nothing was rescored. Please try again.", "error")
    else:
        try:
            rescore_assessment(assessment, current_user)
        except (AssessmentBusy, AssessmentNotSubmitted) as exc:
            flash(exc.detail, "error")
        else:
            flash("Scoring again: every stage runs anew and writes a fresh report.", "success")
    return redirect(url_for("progress.page", assessment_id=assessment_id))
