"""Writing the audit log without ever blocking or failing the action it records."""

from __future__ import annotations

import enum
import logging

from flask import has_request_context, request
from sqlalchemy import insert, select

from webapp.extensions import db
from webapp.models.audit import AuditEntry
from webapp.models.base import utcnow

log = logging.getLogger(__name__)
IP_LENGTH = AuditEntry.__table__.c.ip.type.length


class Action(enum.StrEnum):
    """Every audited action, named once."""

    LOGIN = "login"
    LOGIN_FAILED = "login_failed"
    LOGOUT = "logout"
    PASSWORD_CHANGED = "password_changed"
    ASSESSMENT_SUBMITTED = "assessment.submitted"
    ASSESSMENT_RESCORED = "assessment.rescored"
    OPERATION_CREATED = "operation.created"
    TOKEN_CREATED = "token.created"
    TOKEN_REVOKED = "token.revoked"
    ACCOUNT_SECRET_ROTATED = "account.secret_rotated"
    WEBHOOK_ENDPOINT_CREATED = "webhook_endpoint.created"
    WEBHOOK_ENDPOINT_UPDATED = "webhook_endpoint.updated"
    WEBHOOK_ENDPOINT_DELETED = "webhook_endpoint.deleted"
    WEBHOOK_SECRET_ROTATED = "webhook_endpoint.secret_rotated"
    WEBHOOK_REDELIVERED = "webhook_delivery.redelivered"
    WEBHOOK_RECOVERED = "webhook_endpoint.recovered"
    ASSESSMENT_CALLBACK_REGISTERED = "assessment.callback_registered"
    JOB_REQUEUED = "job.requeued"
    JOBS_CLEARED = "job.cleared"
    QUESTION_ADDED = "question_set.question_added"
    INTEGRATION_CREATED = "integration.created"
    STUDENT_CREATED = "integration.student_created"
    SIGN_IN_LINK_ISSUED = "sign_in_link.issued"
    SIGN_IN_LINK_USED = "sign_in_link.used"
    SIGN_IN_LINK_REFUSED = "sign_in_link.refused"


def record(
    action: Action,
    *,
    actor=None,
    entity_type: str = "",
    entity_id: object = "",
    details: dict | None = None,
) -> None:
    """Append an entry in its own short transaction; a failure is logged, never raised.

    Its own connection means the entry neither waits for nor rolls back with the caller's
    transaction: call it after the action has committed.
    """
    values = {
        "actor_id": getattr(actor, "id", None),
        "actor_email": getattr(actor, "email", "") or "",
        "action": str(action),
        "entity_type": entity_type,
        "entity_id": "" if entity_id is None else str(entity_id),
        "details": details or {},
        # With more proxies trusted than there are, a client writes this (X-Forwarded-For): cut
        # to the column, so the entry is kept whatever it says (PostgreSQL refuses longer).
        "ip": ((request.remote_addr or "") if has_request_context() else "")[:IP_LENGTH],
        "created_at": utcnow(),
    }
    try:
        with db.engine.begin() as connection:
            connection.execute(insert(AuditEntry).values(**values))
    except Exception:
        log.exception("audit entry not written: %s", values)


def search(
    *, actor: str | None = None, action: str | None = None, entity_type: str | None = None,
    entity_id: str | None = None, limit: int = 200, before_id: int | None = None,
) -> list[AuditEntry]:  # fmt: skip
    """Entries newest first, filtered by actor email (a literal substring), action and entity;
    with `before_id`, the page of entries older than that one."""
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if before_id is not None:
        query = query.where(AuditEntry.id < before_id)
    if actor:
        # autoescape: "%" and "_" in the filter are letters of an email, not wildcards.
        query = query.where(AuditEntry.actor_email.contains(actor, autoescape=True))
    if action:
        query = query.where(AuditEntry.action == action)
    if entity_type:
        query = query.where(AuditEntry.entity_type == entity_type)
    if entity_id:
        query = query.where(AuditEntry.entity_id == str(entity_id))
    return list(db.session.scalars(query))
