"""Sign-in links: single-use, short-lived ways into one student's own pages, issued by the
integration that created the student."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index
from sqlalchemy.orm import Mapped, mapped_column, relationship

from webapp.extensions import db
from webapp.models.accounts import User
from webapp.models.assessments import Assessment
from webapp.models.base import UTCDateTime, utcnow


class SignInLink(db.Model):
    """One issued link. The URL carries its id, signed; `used_at` makes it single-use."""

    __tablename__ = "sign_in_links"
    __table_args__ = (Index("ix_sign_in_links_issued_by_created", "issued_by_id", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    student_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    assessment_id: Mapped[int] = mapped_column(ForeignKey("assessments.id", ondelete="CASCADE"))
    issued_by_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    student: Mapped[User] = relationship(foreign_keys=[student_id])
    assessment: Mapped[Assessment] = relationship()
