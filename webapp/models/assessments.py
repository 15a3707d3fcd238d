"""Assessments: one student's attempt at a question set, and its responses."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from webapp.extensions import db
from webapp.models.accounts import User
from webapp.models.base import UTCDateTime, utcnow
from webapp.models.questions import QuestionSet
from webapp.scoring.vocabulary import AssessmentStatus


class Assessment(db.Model):
    """One student's attempt at a question set."""

    __tablename__ = "assessments"
    __table_args__ = (Index("ix_assessments_user_status", "user_id", "status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    question_set_id: Mapped[int] = mapped_column(ForeignKey("question_sets.id"))
    status: Mapped[AssessmentStatus] = mapped_column(String(16), default=AssessmentStatus.DRAFT)
    degraded: Mapped[bool] = mapped_column(Boolean, default=False)
    missing_question_ids: Mapped[list] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The `sequence` of this assessment's latest webhook event; bumped atomically per event.
    event_sequence: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    user: Mapped[User] = relationship()
    question_set: Mapped[QuestionSet] = relationship()
    responses: Mapped[list[Response]] = relationship(
        back_populates="assessment", cascade="all, delete-orphan"
    )

    @property
    def is_finished(self) -> bool:
        """True once scoring has ended."""
        return AssessmentStatus(self.status).finished

    def answers(self) -> dict[int, str]:
        """Question id -> answer text, for the answers given so far."""
        return {r.question_id: r.answer for r in self.responses}


class Response(db.Model):
    """The answer to one question of an assessment (an option id or free text)."""

    __tablename__ = "responses"
    __table_args__ = (UniqueConstraint("assessment_id", "question_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    assessment_id: Mapped[int] = mapped_column(ForeignKey("assessments.id", ondelete="CASCADE"))
    question_id: Mapped[int] = mapped_column(ForeignKey("questions.id"))
    answer: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    assessment: Mapped[Assessment] = relationship(back_populates="responses")
