"""Admin: question sets with their questions, and AI question generation with polled progress."""

from __future__ import annotations

from flask import (
    abort,
    current_app,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import IntegerField, SelectField
from wtforms.validators import InputRequired

from webapp.errors import DraftNotReady, QuestionAlreadyInSet
from webapp.extensions import db
from webapp.fast_polls import STOP_POLLING
from webapp.models import QuestionSet
from webapp.scoring.vocabulary import OperationStatus, QuestionType
from webapp.services import audit, generation
from webapp.services.audit import Action
from webapp.services.question_sets import list_question_sets
from webapp.views.admin import bp
from webapp.views.presentation import QUESTION_TYPE_WORDS

OPERATION_STATUS_WORDS: dict[OperationStatus, str] = {
    OperationStatus.PENDING: "Waiting for a worker",
    OperationStatus.PROCESSING: "Writing",
    OperationStatus.COMPLETED: "Draft ready",
    OperationStatus.FAILED: "Failed",
}


class GenerationForm(FlaskForm):
    """What to generate: a knowledge-base topic and a question type."""

    topic = SelectField("Topic", validators=[InputRequired()])
    question_type = SelectField("Question type", validators=[InputRequired()])

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.topic.choices = [(t, generation.topic_label(t)) for t in generation.topics()]
        self.question_type.choices = [
            (kind, QUESTION_TYPE_WORDS[QuestionType(kind)]) for kind in generation.QUESTION_TYPES
        ]


class AddDraftForm(FlaskForm):
    """Add one operation's draft question to a set."""

    operation_id = IntegerField(validators=[InputRequired()])


def _partial_context() -> dict:
    """What `_generation.html` needs besides the operation."""
    return {
        "question_sets": list_question_sets(),
        "OPERATION_STATUS_WORDS": OPERATION_STATUS_WORDS,
        "topic_label": generation.topic_label,
        "describe_sources": generation.describe_sources,
    }


def _render_page(form: GenerationForm, status: int = 200):
    """The question sets page."""
    body = render_template(
        "admin/question_sets.html",
        form=form,
        generations=generation.recent_generations(),
        openai_model=current_app.config["OPENAI_MODEL"]
        if current_app.config.get("OPENAI_API_KEY")
        else None,
        **_partial_context(),
    )
    return make_response(body, status)


@bp.get("/question-sets")
def question_sets():
    """Every set with its questions, the generation form and the recent generations."""
    # After "Generate", the form keeps the topic and type just used (the redirect carries them).
    chosen = {name: request.args.get(name) for name in ("topic", "question_type")}
    return _render_page(GenerationForm(formdata=None, **{k: v for k, v in chosen.items() if v}))


@bp.post("/question-sets/generations")
def start_generation():
    """Start a question_generation operation; its progress shows on the page."""
    form = GenerationForm()
    if not form.validate_on_submit():
        flash("Choose a topic and a question type from the lists.", "error")
        return _render_page(form, status=422)
    params = generation.GenerationParams(
        topic=form.topic.data, question_type=form.question_type.data
    )
    operation = generation.start_generation(current_user, params)
    flash(
        f"Generating a {QUESTION_TYPE_WORDS[QuestionType(params.question_type)].lower()} "
        f"question on {generation.topic_label(params.topic)}; its progress shows below.",
        "success",
    )
    return redirect(
        url_for(
            "admin.question_sets",
            topic=params.topic,
            question_type=params.question_type,
            _anchor=f"generation-{operation.id}",
        )
    )


@bp.get("/question-sets/generations/<int:operation_id>")
def generation_progress(operation_id: int):
    """The polled partial: 200 while the draft is being written, 286 (stop polling) once done."""
    operation = generation.get_generation(operation_id)
    if operation is None:
        abort(404, f"No question generation has id {operation_id}.")
    if not request.htmx:
        return redirect(url_for("admin.question_sets", _anchor=f"generation-{operation.id}"))
    body = render_template("admin/_generation.html", operation=operation, **_partial_context())
    response = make_response(body, STOP_POLLING if operation.done else 200)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/question-sets/<slug>/questions")
def add_draft(slug: str):
    """Append a generated draft to the set as its last question (the set's version goes up)."""
    question_set = db.session.scalar(select(QuestionSet).where(QuestionSet.slug == slug))
    if question_set is None:
        abort(404, f"No question set is called {slug!r}.")
    form = AddDraftForm()
    operation = (
        generation.get_generation(form.operation_id.data) if form.validate_on_submit() else None
    )
    if operation is None:
        flash("That draft question does not exist.", "error")
        return redirect(url_for("admin.question_sets"))
    try:
        question = generation.add_draft_to_set(operation, question_set)
    except (DraftNotReady, QuestionAlreadyInSet) as exc:
        flash(exc.detail, "error")
        return redirect(url_for("admin.question_sets", _anchor=f"generation-{operation.id}"))
    audit.record(
        Action.QUESTION_ADDED,
        actor=current_user,
        entity_type="question_set",
        entity_id=question_set.slug,
        details={
            "operation_id": operation.id,
            "question_id": question.id,
            "position": question.position,
            "version": question_set.version,
        },
    )
    flash(
        f"Added as question {question.position} of {question_set.title} "
        f"(now version {question_set.version}).",
        "success",
    )
    return redirect(url_for("admin.question_sets", _anchor=f"set-{question_set.slug}"))
