"""The student's dashboard: their assessments with live status, and starting a new one."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, url_for
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from htmx_flask import make_response
from wtforms import HiddenField
from wtforms.validators import DataRequired, Length

from webapp.errors import QuestionSetNotFound, ValidationFailed
from webapp.fast_polls import STOP_POLLING
from webapp.services.assessments import create_assessment, list_assessments
from webapp.services.outcomes import outcomes
from webapp.services.progress import status_view
from webapp.services.question_sets import list_question_sets
from webapp.views.presentation import IN_FLIGHT

bp = Blueprint("student", __name__)


class StartForm(FlaskForm):
    """Start an assessment of one question set."""

    question_set = HiddenField(validators=[DataRequired(), Length(max=100)])


def _rows() -> tuple[list[dict], bool]:
    """Each assessment with its live progress if it is being scored; and whether any is."""
    rows = []
    assessments = list_assessments(current_user)
    finished = outcomes([a.id for a in assessments if a.is_finished])
    for assessment in assessments:
        in_flight = assessment.status in IN_FLIGHT
        progress = status_view(assessment)["overall_progress"] if in_flight else None
        rows.append(
            {
                "assessment": assessment,
                "in_flight": in_flight,
                "progress": progress,
                "outcome": finished.get(assessment.id),
            }
        )
    return rows, any(row["in_flight"] for row in rows)


@bp.get("/")
@login_required
def dashboard():
    """The student's assessments and the question sets they can start."""
    rows, polling = _rows()
    return render_template(
        "student/dashboard.html",
        rows=rows,
        polling=polling,
        question_sets=list_question_sets(),
        form=StartForm(),
    )


@bp.get("/assessments/list")
@login_required
def assessment_list():
    """The assessment list partial, polled while any assessment is being scored."""
    rows, polling = _rows()
    body = render_template("student/_assessment_list.html", rows=rows, polling=polling)
    return make_response(body, 200 if polling else STOP_POLLING)


@bp.post("/assessments")
@login_required
def start():
    """Start a draft of the chosen question set and open it."""
    form = StartForm()
    if not form.validate_on_submit():
        flash("Choose a question set to start.", "error")
        return redirect(url_for("student.dashboard"))
    try:
        assessment = create_assessment(current_user, form.question_set.data)
    except (QuestionSetNotFound, ValidationFailed):
        flash("That question set does not exist (any more).", "error")
        return redirect(url_for("student.dashboard"))
    flash(f"Started “{assessment.question_set.title}”. Your answers are saved as a draft.", "info")
    return redirect(url_for("take.show", assessment_id=assessment.id))
