"""Operations a client can poll, the pipeline stages they run, and the scores they write."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from webapp.extensions import db
from webapp.models.base import UTCDateTime, utcnow
from webapp.scoring.vocabulary import OperationStatus, OperationType, Stage, StageStatus


class Operation(db.Model):
    """A long-running unit of work a client can poll."""

    __tablename__ = "operations"
    __table_args__ = (Index("ix_operations_assessment_id_id", "assessment_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    operation_type: Mapped[OperationType] = mapped_column(String(32))
    status: Mapped[OperationStatus] = mapped_column(String(16), default=OperationStatus.PENDING)
    progress: Mapped[int] = mapped_column(Integer, default=0)
    assessment_id: Mapped[int | None] = mapped_column(
        ForeignKey("assessments.id", ondelete="CASCADE")
    )
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    # Makes "one scoring operation per submission" a database fact: concurrent submits collide here.
    dedupe_key: Mapped[str | None] = mapped_column(String(100), unique=True)
    params: Mapped[dict] = mapped_column(JSON, default=dict)
    result: Mapped[dict | None] = mapped_column(JSON)
    error_message: Mapped[str | None] = mapped_column(Text)
    # The highest `assessment.progress` milestone already announced (each is sent at most once).
    progress_milestone: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # How often the watchdog has enqueued this operation again (question generations; a scoring
    # operation's repairs are counted per stage run).
    repairs: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    stage_runs: Mapped[list[StageRun]] = relationship(
        back_populates="operation", order_by="StageRun.id", lazy="selectin"
    )

    @property
    def done(self) -> bool:
        """True once the operation has finished."""
        return OperationStatus(self.status).done

    def stage(self, name: Stage) -> StageRun | None:
        """This operation's run of one stage."""
        return next((s for s in self.stage_runs if s.name == name), None)


class StageRun(db.Model):
    """One stage of one operation: its status, progress, timings, error and output."""

    __tablename__ = "stage_runs"
    __table_args__ = (UniqueConstraint("operation_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    operation_id: Mapped[int] = mapped_column(ForeignKey("operations.id", ondelete="CASCADE"))
    name: Mapped[Stage] = mapped_column(String(16))
    status: Mapped[StageStatus] = mapped_column(String(16), default=StageStatus.PENDING)
    percentage: Mapped[int] = mapped_column(Integer, default=0)
    job_id: Mapped[str | None] = mapped_column(String(64))
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict | None] = mapped_column(JSON)
    # How often the watchdog has enqueued this stage again; at MAX_REPAIRS it gives up instead.
    repairs: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    operation: Mapped[Operation] = relationship(back_populates="stage_runs")


class Score(db.Model):
    """Points one stage awarded one question in one operation."""

    __tablename__ = "scores"
    __table_args__ = (UniqueConstraint("operation_id", "question_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    operation_id: Mapped[int] = mapped_column(ForeignKey("operations.id", ondelete="CASCADE"))
    question_id: Mapped[int] = mapped_column(ForeignKey("questions.id"))
    stage: Mapped[Stage] = mapped_column(String(16))
    points: Mapped[float] = mapped_column(Float)
    max_points: Mapped[float] = mapped_column(Float)
    detail: Mapped[dict] = mapped_column(JSON, default=dict)
