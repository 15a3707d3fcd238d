"""History: every status change of an assessment, its stages, its operation and deliveries."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from webapp.extensions import db
from webapp.models.base import UTCDateTime, utcnow


class Entity(enum.StrEnum):
    """What changed status."""

    ASSESSMENT = "assessment"
    STAGE = "stage"
    OPERATION = "operation"
    DELIVERY = "delivery"


class HistoryEvent(db.Model):
    """One status change, written in the same transaction as the change itself."""

    __tablename__ = "history_events"
    __table_args__ = (
        Index("ix_history_events_assessment_id_id", "assessment_id", "id"),
        Index("ix_history_events_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    assessment_id: Mapped[int | None] = mapped_column(
        ForeignKey("assessments.id", ondelete="CASCADE")
    )
    operation_id: Mapped[int | None] = mapped_column(
        ForeignKey("operations.id", ondelete="CASCADE")
    )
    entity: Mapped[Entity] = mapped_column(String(16))
    entity_id: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(32))
    progress: Mapped[int] = mapped_column(Integer, default=0)
    message: Mapped[str] = mapped_column(Text, default="")
    meta: Mapped[dict] = mapped_column("metadata", JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
