"""The points a stage awarded each question of an operation (the `scores` rows)."""

from __future__ import annotations

from webapp.extensions import db
from webapp.models import Score
from webapp.scoring.vocabulary import Stage


def replace_stage_scores(operation_id: int, stage: Stage, results: list[dict]) -> None:
    """Replace this stage's score rows with one per result (`question_id`, `points`,
    `max_points`); the caller commits, with the stage's completion."""
    db.session.query(Score).filter_by(operation_id=operation_id, stage=stage).delete()
    for result in results:
        db.session.add(
            Score(
                operation_id=operation_id,
                question_id=result["question_id"],
                stage=stage,
                points=result["points"],
                max_points=result["max_points"],
                detail=result,
            )
        )
