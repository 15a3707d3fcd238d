"""Question sets and their questions."""

from __future__ import annotations

import enum

from sqlalchemy import JSON, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from webapp.extensions import db


class QuestionType(enum.StrEnum):
    """How a question is answered and scored."""

    THEORETICAL = "theoretical"  # pick one option; rule-scored right or wrong
    PROFILE = "profile"  # free text about the student; full weight when answered
    ESSAY = "essay"  # free text scored on the rubric by the gpt stage


class QuestionSet(db.Model):
    """A named, versioned list of questions, addressed by slug."""

    __tablename__ = "question_sets"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(100), unique=True)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    version: Mapped[int] = mapped_column(Integer, default=1)

    questions: Mapped[list[Question]] = relationship(
        back_populates="question_set", order_by="Question.position"
    )


class Question(db.Model):
    """One question of a set; `correct_option` never leaves the server."""

    __tablename__ = "questions"
    __table_args__ = (UniqueConstraint("question_set_id", "position"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    question_set_id: Mapped[int] = mapped_column(ForeignKey("question_sets.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    type: Mapped[QuestionType] = mapped_column(String(16))
    prompt: Mapped[str] = mapped_column(Text)
    options: Mapped[list | None] = mapped_column(JSON)  # [{"id": "a", "text": ...}]
    correct_option: Mapped[str | None] = mapped_column(String(16))
    weight: Mapped[float] = mapped_column(Float, default=1.0)
    topic: Mapped[str] = mapped_column(String(100), default="")
    key_concepts: Mapped[list] = mapped_column(JSON, default=list)

    question_set: Mapped[QuestionSet] = relationship(back_populates="questions")

    def option_ids(self) -> set[str]:
        """The ids a theoretical answer may name."""
        return {str(o["id"]) for o in self.options or []}
