"""Taking an assessment: answer, save the draft, review what is unanswered, submit."""

from __future__ import annotations

import re

from flask import Blueprint, flash, make_response, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from flask_wtf import FlaskForm

from webapp.errors import AssessmentLocked, ValidationFailed
from webapp.models import Assessment
from webapp.models.base import utcnow
from webapp.scoring.vocabulary import AssessmentStatus, QuestionType
from webapp.services.assessments import get_assessment, save_responses
from webapp.services.submission import submit_assessment
from webapp.views.text_guard import checks_own_text

bp = Blueprint("take", __name__, url_prefix="/assessments")

_INDEX = re.compile(r"responses\[(\d+)\]")


class AnswersForm(FlaskForm):
    """The take form; its fields are the questions, read from the request by name."""


def field_name(question_id: int) -> str:
    """The form field that carries one question's answer."""
    return f"q-{question_id}"


def _take_page(assessment: Assessment, answers: dict[int, str], form: AnswersForm) -> str:
    """The take form filled with `answers`."""
    return render_template(
        "take/take.html", assessment=assessment, answers=answers, form=form, field_name=field_name
    )


def _to_progress(assessment: Assessment):
    """Where a submitted assessment lives: its progress page."""
    return redirect(url_for("progress.page", assessment_id=assessment.id))


def _posted_answers(assessment: Assessment) -> list[dict]:
    """The answers in the posted form, one per question the form sent (radios may be absent)."""
    answers = []
    for question in assessment.question_set.questions:
        value = request.form.get(field_name(question.id))
        if value is not None:
            answers.append({"question_id": question.id, "answer": value.replace("\r\n", "\n")})
    return answers


def _explain(assessment: Assessment, posted: list[dict], exc: ValidationFailed) -> list[str]:
    """The service's field errors as sentences naming the question by its number."""
    numbers = {q.id: q.position for q in assessment.question_set.questions}
    types = {q.id: q.type for q in assessment.question_set.questions}
    messages = []
    for error in exc.errors or []:
        match = _INDEX.match(error.get("field", ""))
        if not match or int(match.group(1)) >= len(posted):
            messages.append(exc.detail)
            continue
        qid = posted[int(match.group(1))]["question_id"]
        if error["message"].startswith("contains"):  # NUL: no browser sends it, a script may
            messages.append(f"Question {numbers[qid]}: the answer {error['message']}; remove it.")
        elif types[qid] == QuestionType.THEORETICAL:
            messages.append(f"Question {numbers[qid]}: choose one of the listed options.")
        else:
            messages.append(f"Question {numbers[qid]}: the answer is {error['message']}.")
    return messages or [exc.detail]


@bp.get("/<int:assessment_id>")
@login_required
def show(assessment_id: int):
    """The take page for a draft; a submitted assessment goes to its progress page."""
    assessment = get_assessment(assessment_id, current_user)
    if assessment.status != AssessmentStatus.DRAFT:
        return _to_progress(assessment)
    return _take_page(assessment, assessment.answers(), AnswersForm())


@bp.post("/<int:assessment_id>")
@login_required
@checks_own_text
def save(assessment_id: int):
    """Save the draft; with `action=review`, go on to the submit confirmation."""
    assessment = get_assessment(assessment_id, current_user)
    if assessment.status != AssessmentStatus.DRAFT:
        flash("This assessment was already submitted; its answers are locked.", "error")
        return _to_progress(assessment)
    form = AnswersForm()
    posted = _posted_answers(assessment)
    if not form.validate_on_submit():
        flash("The form expired. Your answers were not saved; please try again.", "error")
        return redirect(url_for("take.show", assessment_id=assessment.id))
    try:
        save_responses(assessment, posted)
    except ValidationFailed as exc:
        for message in _explain(assessment, posted, exc):
            flash(message, "error")
        answers = {**assessment.answers(), **{p["question_id"]: p["answer"] for p in posted}}
        return _take_page(assessment, answers, form), 422
    except AssessmentLocked:
        flash("This assessment was already submitted; its answers are locked.", "error")
        return _to_progress(assessment)
    if request.form.get("action") == "review":
        return redirect(url_for("take.confirm", assessment_id=assessment.id))
    flash("Draft saved.", "success")
    return redirect(url_for("take.show", assessment_id=assessment.id))


@bp.post("/<int:assessment_id>/draft")
@login_required
def autosave(assessment_id: int):
    """Save the draft as the student types (htmx, a second after the last keystroke).

    Answers with a line saying whether they were saved: htmx swaps only 2xx answers, and a
    student must read "not saved" when it was not.
    """
    assessment = get_assessment(assessment_id, current_user)
    saved, message = False, None
    if assessment.status != AssessmentStatus.DRAFT:
        message = "Not saved: this assessment was already submitted, so its answers are locked."
    elif not AnswersForm().validate_on_submit():
        message = "Not saved: the page expired. Reload it; answers saved before are kept."
    else:
        posted = _posted_answers(assessment)
        try:
            save_responses(assessment, posted)
            saved = True
        except ValidationFailed as exc:
            message = "Not saved: " + " ".join(_explain(assessment, posted, exc))
        except AssessmentLocked:
            message = "Not saved: this assessment was already submitted."
    body = render_template("take/_autosave.html", saved=saved, message=message, now=utcnow())
    response = make_response(body)
    # The page's script clears its "unsaved" mark only when this says the answers were stored.
    response.headers["X-Answers-Saved"] = "1" if saved else "0"
    return response


@bp.get("/<int:assessment_id>/submit")
@login_required
def confirm(assessment_id: int):
    """Confirm the submission, naming every question still unanswered."""
    assessment = get_assessment(assessment_id, current_user)
    if assessment.status != AssessmentStatus.DRAFT:
        return _to_progress(assessment)
    answers = assessment.answers()
    unanswered = [
        q for q in assessment.question_set.questions if not (answers.get(q.id) or "").strip()
    ]
    return render_template(
        "take/confirm.html", assessment=assessment, unanswered=unanswered, form=AnswersForm()
    )


@bp.post("/<int:assessment_id>/submit")
@login_required
def submit(assessment_id: int):
    """Submit for scoring and watch the progress; submitting twice is harmless."""
    assessment = get_assessment(assessment_id, current_user)
    form = AnswersForm()
    if not form.validate_on_submit():
        flash("The form expired; please confirm again.", "error")
        return redirect(url_for("take.confirm", assessment_id=assessment.id))
    outcome = submit_assessment(assessment, current_user)
    # A fresh submit needs no flash: the progress page's own status says it is being scored, and
    # unlike a flash it stays true when scoring ends.
    if not outcome.created:
        flash("This assessment was already submitted.", "info")
    return redirect(url_for("progress.page", assessment_id=assessment.id))
