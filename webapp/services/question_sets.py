"""The question sets a student can start an assessment from."""

from __future__ import annotations

from sqlalchemy import select

from webapp.extensions import db
from webapp.models import QuestionSet


def list_question_sets() -> list[QuestionSet]:
    """Every question set, by title."""
    return list(db.session.scalars(select(QuestionSet).order_by(QuestionSet.title)))
