"""What scoring came to, per assessment: its score, the stages that failed, who scored the essays.

The pages tell a finished assessment by this, not by its status alone: a report written after a
failed stage is `completed` too, and must not look like a clean success.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select

from webapp.extensions import db
from webapp.models import Operation, StageRun
from webapp.scoring.vocabulary import OperationType, Stage, StageStatus


@dataclass
class StageOutcome:
    """One stage of the latest scoring run, as the pages show it."""

    name: str
    status: str
    # Progress when it ended: a failed stage stops where it was, it does not "finish" at 100.
    percentage: int
    started_at: datetime | None
    completed_at: datetime | None
    error: str | None
    scorer: str | None = None

    @property
    def seconds(self) -> float | None:
        """How long the stage ran, once it has ended."""
        if self.started_at and self.completed_at:
            return max(0.0, (self.completed_at - self.started_at).total_seconds())
        return None


@dataclass
class Outcome:
    """The latest scoring run of one assessment."""

    operation_id: int | None = None
    percentage: float | None = None
    total: float | None = None
    max_total: float | None = None
    stages: dict[str, StageOutcome] = field(default_factory=dict)

    @property
    def failed_stages(self) -> list[str]:
        """Names of the stages that failed, in pipeline order."""
        return [s.name for s in self.stages.values() if s.status == StageStatus.FAILED]

    @property
    def scorer(self) -> str | None:
        """Which scorer rated the essays (None until the essay stage has finished)."""
        essays = self.stages.get(Stage.GPT.value)
        return essays.scorer if essays else None


def outcomes(assessment_ids: list[int]) -> dict[int, Outcome]:
    """The latest scoring run of each assessment, in two queries whatever their number."""
    if not assessment_ids:
        return {}
    latest = (
        select(func.max(Operation.id))
        .where(
            Operation.assessment_id.in_(assessment_ids),
            Operation.operation_type == OperationType.ASSESSMENT_SCORING,
        )
        .group_by(Operation.assessment_id)
    )
    operations = db.session.scalars(select(Operation).where(Operation.id.in_(latest))).all()
    runs: dict[int, list[StageRun]] = {op.id: [] for op in operations}
    for run in db.session.scalars(select(StageRun).where(StageRun.operation_id.in_(list(runs)))):
        runs[run.operation_id].append(run)
    return {op.assessment_id: _outcome(op, runs[op.id]) for op in operations}


def outcome(assessment_id: int) -> Outcome:
    """The latest scoring run of one assessment (empty for a draft)."""
    return outcomes([assessment_id]).get(assessment_id, Outcome())


def outcome_of_operation(operation: Operation | None) -> Outcome:
    """The outcome of a scoring run already loaded, from its stage runs (empty for none)."""
    return Outcome() if operation is None else _outcome(operation, operation.stage_runs)


def _outcome(operation: Operation, runs: list[StageRun]) -> Outcome:
    report = operation.result or {}
    found = Outcome(
        operation_id=operation.id,
        percentage=report.get("percentage"),
        total=report.get("total"),
        max_total=report.get("max_total"),
    )
    order = {stage.value: index for index, stage in enumerate(Stage)}
    for run in sorted(runs, key=lambda r: order.get(r.name, 99)):
        status = StageStatus(run.status)
        found.stages[run.name] = StageOutcome(
            name=run.name,
            status=status.value,
            percentage=run.percentage if status != StageStatus.COMPLETED else 100,
            started_at=run.started_at,
            completed_at=run.completed_at,
            error=run.error,
            scorer=(run.result or {}).get("scorer") if run.name == Stage.GPT else None,
        )
    return found
