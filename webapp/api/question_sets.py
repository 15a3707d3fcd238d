"""Question sets."""

from sqlalchemy import select

from webapp.api import api_bp
from webapp.extensions import db
from webapp.models import QuestionSet


@api_bp.get("/question-sets")
def list_question_sets():
    """Every question set, by slug."""
    sets = db.session.scalars(select(QuestionSet).order_by(QuestionSet.slug))
    return {"question_sets": [s.to_dict() for s in sets]}
