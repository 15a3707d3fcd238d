"""Question sets."""

from sqlalchemy import select

from webapp.api.blueprint import api_bp
from webapp.api.schemas import QuestionSetOut, QuestionSets
from webapp.extensions import db
from webapp.models import QuestionSet


@api_bp.get("/question-sets", responses={200: QuestionSets})
def list_question_sets():
    """Every question set, by slug."""
    sets = db.session.scalars(select(QuestionSet).order_by(QuestionSet.slug))
    return QuestionSets(question_sets=[QuestionSetOut.of(s) for s in sets]).model_dump(mode="json")
