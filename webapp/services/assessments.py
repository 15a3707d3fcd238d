"""Loading, creating and answering assessments."""

from __future__ import annotations

from sqlalchemy import select, update

from webapp.errors import (
    AssessmentLocked,
    AssessmentNotFound,
    Forbidden,
    QuestionSetNotFound,
    ValidationFailed,
)
from webapp.extensions import db
from webapp.models import Assessment, QuestionSet, Response, User
from webapp.models.base import utcnow
from webapp.request_values import unstorable_text
from webapp.scoring.base import QuestionInput
from webapp.scoring.vocabulary import AssessmentStatus, QuestionType
from webapp.services.integrations import (
    StudentFields,
    find_student,
    get_or_create_student,
    may_view,
    parse_external_id,
)

MAX_ANSWER_LENGTH = 20_000


def get_assessment(assessment_id: int, user: User) -> Assessment:
    """The assessment with this id if `user` may see it.

    Raises AssessmentNotFound (404) when it does not exist and Forbidden (403) when it
    belongs to another student; admins see every assessment, an integration its students'.
    """
    assessment = db.session.get(Assessment, assessment_id)
    if assessment is None:
        raise AssessmentNotFound(f"No assessment has id {assessment_id}.")
    if assessment.user_id != user.id and not may_view(user, assessment.user):
        raise Forbidden("This assessment belongs to another account.")
    return assessment


def list_assessments(
    user: User,
    status: AssessmentStatus | None = None,
    limit: int = 100,
    *,
    external_id: str | None = None,
) -> list[Assessment]:
    """The user's assessments, newest first; admins see everyone's, an integration its
    students' (one student's with `external_id`)."""
    query = select(Assessment).order_by(Assessment.id.desc()).limit(limit)
    if external_id is not None:
        if not user.is_integration:  # a role mismatch (SPEC 3), like an admin-only route
            raise Forbidden("Only integration accounts have students by external_id.")
        errors: list[dict] = []
        external_id = parse_external_id(external_id, errors)
        if errors:
            raise ValidationFailed("external_id is invalid.", errors=errors)
        student = find_student(user, external_id)
        if student is None:  # a filter: no such student, no assessments
            return []
        query = query.where(Assessment.user_id == student.id)
    elif user.is_integration:
        query = query.join(User, User.id == Assessment.user_id).where(
            User.integration_id == user.id
        )
    elif not user.is_admin:
        query = query.where(Assessment.user_id == user.id)
    if status:
        query = query.where(Assessment.status == status)
    return list(db.session.scalars(query))


def create_assessment(user: User, slug: object, external_id: object = None) -> Assessment:
    """Start a draft assessment of the question set named by `slug`.

    An integration names the student it is for by `external_id` (required for it, refused for
    anyone else); the student is created if the integration has none with that id yet.
    """
    errors: list[dict] = []
    if not isinstance(slug, str) or not slug.strip():
        errors.append({"field": "question_set", "message": "must be a non-empty string"})
    if not user.is_integration and external_id is not None:  # a role mismatch (SPEC 3)
        raise Forbidden("Only integration accounts create assessments for students.")
    if user.is_integration:
        external_id = parse_external_id(external_id, errors)
    if errors:
        raise ValidationFailed("The assessment request is invalid.", errors=errors)
    question_set = db.session.scalar(select(QuestionSet).where(QuestionSet.slug == slug.strip()))
    if question_set is None:
        raise QuestionSetNotFound(f"No question set is called {slug!r}.")
    owner = user
    if user.is_integration:
        owner, _ = get_or_create_student(user, StudentFields(external_id, None, None))
    assessment = Assessment(user_id=owner.id, question_set_id=question_set.id)
    db.session.add(assessment)
    db.session.commit()
    return assessment


def parse_responses(assessment: Assessment, payload: object) -> dict[int, str]:
    """Validate `[{"question_id", "answer"}]` against the assessment's questions.

    Raises ValidationFailed listing every field problem at once, so a client fixes them in one go.
    """
    if not isinstance(payload, list):
        raise ValidationFailed(
            "responses must be a list.",
            errors=[{"field": "responses", "message": "must be a list of {question_id, answer}"}],
        )
    questions = {q.id: q for q in assessment.question_set.questions}
    errors: list[dict] = []
    answers: dict[int, str] = {}
    for index, item in enumerate(payload):
        where = f"responses[{index}]"
        if not isinstance(item, dict):
            errors.append({"field": where, "message": "must be an object"})
            continue
        qid, answer = item.get("question_id"), item.get("answer")
        if not isinstance(qid, int) or isinstance(qid, bool) or qid not in questions:
            errors.append({"field": f"{where}.question_id", "message": "unknown question id"})
            continue
        if answer is None:
            answer = ""
        if not isinstance(answer, str):
            errors.append({"field": f"{where}.answer", "message": "must be a string or null"})
            continue
        if unstorable := unstorable_text(answer, f"{where}.answer"):
            errors += unstorable  # the take form's only check (the API refuses it earlier)
            continue
        if len(answer) > MAX_ANSWER_LENGTH:
            errors.append(
                {
                    "field": f"{where}.answer",
                    "message": f"longer than {MAX_ANSWER_LENGTH} characters",
                }
            )
            continue
        question = questions[qid]
        if (
            question.type == QuestionType.THEORETICAL
            and answer
            and answer not in question.option_ids()
        ):
            errors.append(
                {
                    "field": f"{where}.answer",
                    "message": f"must be one of the option ids {sorted(question.option_ids())}",
                }
            )
            continue
        answers[qid] = answer
    if errors:
        raise ValidationFailed("Some responses are invalid.", errors=errors)
    return answers


def save_responses(assessment: Assessment, payload: object) -> Assessment:
    """Merge answers into a draft; raises AssessmentLocked once it was submitted.

    Concurrent saves and submits of one assessment take turns on its row (`lock_draft`), so
    none of them fails on the one-answer-per-question constraint, and none writes after a submit.
    """
    if assessment.status != AssessmentStatus.DRAFT:
        raise AssessmentLocked("Responses cannot change after the assessment was submitted.")
    answers = parse_responses(assessment, payload)
    if not lock_draft(assessment.id):
        db.session.rollback()
        raise AssessmentLocked("Responses cannot change after the assessment was submitted.")
    write_answers(assessment.id, answers)
    db.session.commit()
    return assessment


def lock_draft(assessment_id: int, **changes: object) -> bool:
    """Start a transaction holding the assessment's row lock, if it is still a draft.

    One conditional UPDATE (making `changes` too): saves and submits wait for each other
    here (a row lock on PostgreSQL, the write lock on SQLite), and whoever comes second reads
    what the first committed. False (nothing locked) once the assessment was submitted.
    """
    # End any read transaction so the UPDATE is the first statement of a new one (SQLite can
    # then wait on its busy timeout instead of failing a read-to-write upgrade).
    db.session.commit()
    locked = db.session.execute(
        update(Assessment)
        .where(Assessment.id == assessment_id, Assessment.status == AssessmentStatus.DRAFT)
        .values(updated_at=utcnow(), **changes)
        .execution_options(synchronize_session=False)
    )
    return locked.rowcount == 1


def write_answers(assessment_id: int, answers: dict[int, str]) -> None:
    """Insert or update answers; call with the assessment's row lock held (`lock_draft`)."""
    existing = {
        r.question_id: r
        for r in db.session.scalars(
            select(Response)
            .where(Response.assessment_id == assessment_id)
            .execution_options(populate_existing=True)
        )
    }
    for qid, answer in answers.items():
        if qid in existing:
            existing[qid].answer = answer
        else:
            db.session.add(Response(assessment_id=assessment_id, question_id=qid, answer=answer))


def question_inputs(assessment: Assessment) -> list[QuestionInput]:
    """The questions of an assessment with the answers given, as the stages take them."""
    answers = assessment.answers()
    return [
        QuestionInput(
            id=q.id,
            type=q.type,
            weight=q.weight,
            prompt=q.prompt,
            answer=answers.get(q.id, ""),
            correct_option=q.correct_option,
            topic=q.topic,
            key_concepts=tuple(q.key_concepts or ()),
        )
        for q in assessment.question_set.questions
    ]
