"""Question generation operations: requested by an admin, written on a worker, added to a set."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass

import redis
from flask import current_app
from rq import Queue
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from webapp import correlation
from webapp.errors import DraftNotReady, QuestionAlreadyInSet
from webapp.extensions import db
from webapp.models import Operation, OperationStatus, OperationType, Question, QuestionSet, User
from webapp.queues import DEFAULT_QUEUE, get_redis
from webapp.scoring import generation
from webapp.scoring.base import StageError
from webapp.scoring.retrieval import default_knowledge_base
from webapp.services import audit, history
from webapp.services.audit import Action

log = logging.getLogger(__name__)

GENERATION_JOB = "worker.jobs.run_generation"
# Enough for OpenAICaller's bounded retries (max_total_seconds) plus one slow last call.
JOB_TIMEOUT = 600
PARAM_NAMES = ("topic", "question_type")
QUESTION_TYPES = generation.QUESTION_TYPES
# Adding a draft can race another admin for the next position; this many tries settle it.
ADD_ATTEMPTS = 3


@dataclass(frozen=True)
class GenerationParams:
    """What to generate: a question type on a knowledge-base topic."""

    topic: str
    question_type: str

    def to_dict(self) -> dict:
        """As stored in Operation.params."""
        return {"topic": self.topic, "question_type": self.question_type}


def topics() -> list[str]:
    """The topics questions can be generated on: those of the shipped knowledge base."""
    return generation.topics(default_knowledge_base())


def topic_label(topic: str) -> str:
    """A topic slug in words."""
    return generation.topic_label(topic)


def describe_sources(source_ids: list[str]) -> list[dict]:
    """Title and URL of each knowledge-base resource a draft was built from."""
    return generation.describe_sources(default_knowledge_base(), source_ids)


def start_generation(user: User, params: GenerationParams) -> Operation:
    """Create a pending question_generation operation and enqueue its job on the default queue.

    When Redis is unreachable the operation stays pending (the database is the source of truth).
    """
    operation = Operation(
        operation_type=OperationType.QUESTION_GENERATION,
        user_id=user.id,
        params=params.to_dict(),
    )
    db.session.add(operation)
    db.session.flush()
    history.operation_changed(operation, f"Requested {_what(params)}.")
    db.session.commit()
    enqueue_generation(operation)
    audit.record(
        Action.OPERATION_CREATED,
        actor=user,
        entity_type="operation",
        entity_id=operation.id,
        details={"operation_type": operation.operation_type, "params": params.to_dict()},
    )
    return operation


def enqueue_generation(operation: Operation) -> bool:
    """Put the operation's job on the default queue; False when Redis is unreachable."""
    queue = Queue(DEFAULT_QUEUE, connection=get_redis())
    try:
        queue.enqueue(
            GENERATION_JOB,
            operation.id,
            job_id=f"generation-{operation.id}-{secrets.token_hex(4)}",
            job_timeout=JOB_TIMEOUT,
            description=f"question generation for operation {operation.id}",
            meta=correlation.job_meta(operation_id=operation.id),
        )
    except redis.RedisError:
        log.warning("Redis unreachable; operation %s stays pending", operation.id)
        return False
    return True


def run_generation(operation_id: int) -> None:
    """Write the draft question of one operation (the worker job); a finished one is left alone.

    A generator that gives up (StageError) fails the operation with its reason; anything else
    fails it too, and is re-raised so RQ records the job as failed.
    """
    operation = db.session.get(Operation, operation_id)
    if operation is None or operation.operation_type != OperationType.QUESTION_GENERATION:
        log.warning("operation %s is not a question generation; nothing to do", operation_id)
        return
    if operation.done:
        log.info("operation %s already %s; not running it again", operation.id, operation.status)
        return
    params = GenerationParams(**{name: operation.params[name] for name in PARAM_NAMES})
    operation.status = OperationStatus.PROCESSING
    operation.progress = 10
    operation.error_message = None
    history.operation_changed(operation, f"Writing {_what(params)} on a worker.")
    db.session.commit()
    try:
        draft = _generate(params, lambda pct: _record_progress(operation, pct))
    except StageError as exc:
        db.session.rollback()
        _finish(operation_id, draft=None, error=str(exc))
        return
    except Exception as exc:
        db.session.rollback()
        _finish(operation_id, draft=None, error=f"Unexpected error: {type(exc).__name__}: {exc}")
        raise
    _finish(operation_id, draft=draft, error=None)


def _generate(params: GenerationParams, on_progress) -> generation.DraftQuestion:
    """The OpenAI writer when a key is configured, else the offline generator."""
    kb = default_knowledge_base()
    config = current_app.config
    if not config.get("OPENAI_API_KEY"):
        return generation.generate_offline(kb, params.topic, params.question_type, on_progress)
    import openai

    client = openai.OpenAI(
        api_key=config["OPENAI_API_KEY"], base_url=config.get("OPENAI_BASE_URL"), max_retries=0
    )
    writer = generation.OpenAIQuestionWriter(
        client,
        config["OPENAI_MODEL"],
        max_retries=config["OPENAI_MAX_RETRIES"],
        timeout=config["OPENAI_TIMEOUT"],
    )
    return writer.write(kb, params.topic, params.question_type, on_progress)


def give_up(operation: Operation, error: str) -> None:
    """Fail a generation that keeps losing its job (the watchdog's last resort)."""
    _finish(operation.id, draft=None, error=error)


def _record_progress(operation: Operation, percentage: int) -> None:
    """Store partial progress; it never goes down and stays below 100 until done."""
    value = max(operation.progress, min(int(percentage), 99))
    if value != operation.progress:
        operation.progress = value
        db.session.commit()


def _finish(
    operation_id: int, *, draft: generation.DraftQuestion | None, error: str | None
) -> None:
    """End the operation with exactly one of a draft (result) or an error message."""
    operation = db.session.get(Operation, operation_id, populate_existing=True)
    operation.progress = 100
    if draft is not None:
        operation.status = OperationStatus.COMPLETED
        operation.result = draft.to_dict()
        operation.error_message = None
        message = f"Draft {draft.type} question on {draft.topic} written by {draft.generator}."
    else:
        operation.status = OperationStatus.FAILED
        operation.result = None
        operation.error_message = error
        message = f"Question generation failed: {error}"
    history.operation_changed(operation, message)
    db.session.commit()


def _what(params: GenerationParams) -> str:
    """`a theoretical question on recursion`, `an essay question on caching`."""
    article = "an" if params.question_type[0] in "aeiou" else "a"
    return f"{article} {params.question_type} question on {params.topic}"


def recent_generations(limit: int = 5) -> list[Operation]:
    """The newest question generation operations, newest first."""
    return list(
        db.session.scalars(
            select(Operation)
            .where(Operation.operation_type == OperationType.QUESTION_GENERATION)
            .order_by(Operation.id.desc())
            .limit(limit)
        )
    )


def get_generation(operation_id: int) -> Operation | None:
    """One question generation operation, or None."""
    operation = db.session.get(Operation, operation_id)
    if operation is None or operation.operation_type != OperationType.QUESTION_GENERATION:
        return None
    return operation


def add_draft_to_set(operation: Operation, question_set: QuestionSet) -> Question:
    """Append an operation's draft to a set as its last question and bump the set's version.

    Raises DraftNotReady (409) unless the operation completed with a draft, and
    QuestionAlreadyInSet (409) when the set already asks that exact prompt.
    """
    if operation.status != OperationStatus.COMPLETED or not operation.result:
        raise DraftNotReady(f"Operation {operation.id} has no finished draft question to add.")
    try:
        draft = generation.DraftQuestion.from_dict(operation.result)
    except ValueError as exc:
        raise DraftNotReady(f"Operation {operation.id} did not produce a usable draft.") from exc
    for _ in range(ADD_ATTEMPTS - 1):
        try:
            return _append(draft, question_set)
        except IntegrityError:  # another admin took that position first: look again
            db.session.rollback()
    return _append(draft, question_set)


def _append(draft: generation.DraftQuestion, question_set: QuestionSet) -> Question:
    """One try at adding the draft at the next position, with the version bump, committed."""
    set_id = question_set.id
    asked = db.session.scalar(
        select(func.count())
        .select_from(Question)
        .where(Question.question_set_id == set_id, Question.prompt == draft.prompt)
    )
    if asked:
        raise QuestionAlreadyInSet(f"{question_set.title} already asks this question.")
    last = db.session.scalar(
        select(func.max(Question.position)).where(Question.question_set_id == set_id)
    )
    question = Question(
        question_set_id=set_id,
        position=(last or 0) + 1,
        type=draft.type,
        prompt=draft.prompt,
        options=[{"id": i, "text": t} for i, t in draft.options] or None,
        correct_option=draft.correct_option,
        weight=draft.weight,
        topic=draft.topic,
        key_concepts=list(draft.key_concepts),
    )
    db.session.add(question)
    db.session.execute(
        update(QuestionSet)
        .where(QuestionSet.id == set_id)
        .values(version=QuestionSet.version + 1)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    db.session.refresh(question_set)
    return question
