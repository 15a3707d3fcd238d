"""Integrations: service accounts that act for the students they create.

An integration is a user with role `integration`. It creates (or finds) its students by its own
id for them, `external_id`, unique within the integration (a unique constraint, so two requests
racing to create one student end with one row). It sees its own students and their assessments
only; its students are ordinary student accounts without a password (they come in by sign-in
link) and see only their own work, like every student.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from webapp.errors import ScorelineError, ValidationFailed
from webapp.extensions import db
from webapp.models import ApiToken, AuditEntry, Role, Scope, User
from webapp.models.accounts import NO_PASSWORD
from webapp.models.base import isoformat, utcnow
from webapp.services import audit
from webapp.services.accounts import issue_token
from webapp.services.audit import Action

MAX_EXTERNAL_ID = 128
MAX_NAME = 100
MAX_EMAIL = 255
# Tokens an admin makes for an integration live at most this long when given an expiry.
MAX_TOKEN_DAYS = 3650


class StudentNotFound(ScorelineError):
    """The integration has no student with that external_id."""

    status, code, title = 404, "STUDENT_NOT_FOUND", "Student not found"


class IntegrationNotFound(ScorelineError):
    """No integration account has that id."""

    status, code, title = 404, "INTEGRATION_NOT_FOUND", "Integration not found"


class IntegrationExists(ScorelineError):
    """An account already uses that email."""

    status, code, title = 409, "ACCOUNT_EXISTS", "Account exists"


# --- input -------------------------------------------------------------------------------------


def parse_external_id(value: object, errors: list[dict], field: str = "external_id") -> str | None:
    """An integration's id for a student: 1-128 characters, no control characters, no spaces
    at either end. Problems are appended to `errors`."""
    if not isinstance(value, str) or not value:
        errors.append({"field": field, "message": "must be a non-empty string"})
        return None
    if len(value) > MAX_EXTERNAL_ID:
        errors.append({"field": field, "message": f"at most {MAX_EXTERNAL_ID} characters"})
        return None
    if value != value.strip() or any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        errors.append({"field": field, "message": "no control characters or spaces at either end"})
        return None
    return value


def _optional_text(body: dict, field: str, limit: int, errors: list[dict]) -> str | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, str) or len(value.strip()) > limit:
        errors.append(
            {"field": field, "message": f"must be a string of at most {limit} characters"}
        )
        return None
    return value.strip() or None


def _optional_email(body: dict, errors: list[dict]) -> str | None:
    value = _optional_text(body, "email", MAX_EMAIL, errors)
    if value is None:
        return None
    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        errors.append({"field": "email", "message": str(exc)})
        return None


@dataclass(frozen=True)
class StudentFields:
    """A validated student body: its external_id, and optional name and contact email."""

    external_id: str
    name: str | None
    email: str | None


def parse_student(body: dict) -> StudentFields:
    """`{"external_id", "name"?, "email"?}`; ValidationFailed listing every problem."""
    errors: list[dict] = []
    unknown = set(body) - {"external_id", "name", "email"}
    errors += [
        {"field": name, "message": "is not a field of a student"} for name in sorted(unknown)
    ]
    external_id = parse_external_id(body.get("external_id"), errors)
    name = _optional_text(body, "name", MAX_NAME, errors)
    email = _optional_email(body, errors)
    if errors:
        raise ValidationFailed("The student is invalid.", errors=errors)
    return StudentFields(external_id, name, email)


# --- students ----------------------------------------------------------------------------------


def find_student(integration: User, external_id: str) -> User | None:
    """The integration's student with this external_id, if any."""
    return db.session.scalar(
        select(User).where(User.integration_id == integration.id, User.external_id == external_id)
    )


def get_student(integration: User, external_id: object) -> User:
    """The integration's student; ValidationFailed (422) for a bad id, StudentNotFound (404)."""
    errors: list[dict] = []
    checked = parse_external_id(external_id, errors)
    if errors:
        raise ValidationFailed("external_id is invalid.", errors=errors)
    student = find_student(integration, checked)
    if student is None:
        raise StudentNotFound(f"You have no student with external_id {checked!r}.")
    return student


def get_or_create_student(integration: User, fields: StudentFields) -> tuple[User, bool]:
    """The integration's student with this external_id, created if missing; (student, created).

    A name or email given for an existing student replaces the stored one. Safe under
    concurrency: the insert that loses the unique (integration_id, external_id) race reads the
    winner's row instead.
    """
    student = find_student(integration, fields.external_id)
    if student is None:
        db.session.commit()  # the insert below is the first statement of its own transaction
        student = User(
            email=None,
            password_hash=NO_PASSWORD,
            role=Role.STUDENT,
            integration_id=integration.id,
            external_id=fields.external_id,
            name=fields.name,
            contact_email=fields.email,
        )
        db.session.add(student)
        try:
            db.session.commit()
        except IntegrityError:
            db.session.rollback()
            student = find_student(integration, fields.external_id)
            if student is None:  # the unique constraint refused something else: not a race
                raise
        else:
            audit.record(
                Action.STUDENT_CREATED,
                actor=integration,
                entity_type="user",
                entity_id=student.id,
                details={"external_id": student.external_id},
            )
            return student, True
    changed = False
    if fields.name is not None and student.name != fields.name:
        student.name, changed = fields.name, True
    if fields.email is not None and student.contact_email != fields.email:
        student.contact_email, changed = fields.email, True
    if changed:
        db.session.commit()
    return student, False


def list_students(integration: User, limit: int = 100, after_id: int = 0) -> list[User]:
    """The integration's students in the order they were created, `limit` after `after_id`."""
    return list(
        db.session.scalars(
            select(User)
            .where(User.integration_id == integration.id, User.id > after_id)
            .order_by(User.id)
            .limit(limit)
        )
    )


def student_to_dict(student: User) -> dict:
    """The API's view of an integration's student."""
    return {
        "external_id": student.external_id,
        "name": student.name,
        "email": student.contact_email,
        "created_at": isoformat(student.created_at),
    }


def may_view(viewer: User, owner: User) -> bool:
    """Whether `viewer` may see work owned by `owner`: their own, an admin anything, an
    integration its own students'."""
    return (
        viewer.id == owner.id
        or viewer.is_admin
        or (viewer.is_integration and owner.integration_id == viewer.id)
    )


# --- integrations (admins) ---------------------------------------------------------------------


def create_integration(name: str, email: str, actor: User | None) -> User:
    """A new integration account (no password: it uses API tokens)."""
    errors: list[dict] = []
    name = _optional_text({"name": name}, "name", MAX_NAME, errors)
    if not name and not errors:
        errors.append({"field": "name", "message": "is required"})
    checked_email = _optional_email({"email": email}, errors)
    if checked_email is None and not errors:
        errors.append({"field": "email", "message": "is required"})
    if errors:
        raise ValidationFailed("The integration is invalid.", errors=errors)
    if db.session.scalar(select(User.id).where(User.email == checked_email)) is not None:
        raise IntegrationExists(f"An account with email {checked_email} exists already.")
    integration = User(
        email=checked_email, name=name, role=Role.INTEGRATION, password_hash=NO_PASSWORD
    )
    db.session.add(integration)
    try:
        db.session.commit()
    except IntegrityError as exc:
        db.session.rollback()
        raise IntegrationExists(f"An account with email {checked_email} exists already.") from exc
    audit.record(
        Action.INTEGRATION_CREATED,
        actor=actor,
        entity_type="user",
        entity_id=integration.id,
        details={"name": name, "email": checked_email},
    )
    return integration


def get_integration(integration_id: int) -> User:
    """The integration account with this id; IntegrationNotFound otherwise."""
    user = db.session.get(User, integration_id)
    if user is None or not user.is_integration:
        raise IntegrationNotFound(f"No integration has id {integration_id}.")
    return user


def parse_scopes(values: list[str]) -> tuple[Scope, ...]:
    """Scope names -> scopes; ValidationFailed for an unknown one or none at all."""
    unknown = [v for v in values if v not in set(Scope)]
    if unknown or not values:
        raise ValidationFailed(
            "Choose at least one scope.",
            errors=[{"field": "scopes", "message": f"choose from {[s.value for s in Scope]}"}],
        )
    return tuple(Scope(v) for v in values)


def issue_scoped_token(
    integration: User,
    name: str,
    scopes: tuple[Scope, ...],
    expires_in_days: int | None,
    actor: User | None,
) -> tuple[ApiToken, str]:
    """A token (an integration's, or from the CLI any account's) with these scopes and an
    optional expiry, audited."""
    if expires_in_days is not None and not 1 <= expires_in_days <= MAX_TOKEN_DAYS:
        raise ValidationFailed(
            "The expiry is out of range.",
            errors=[{"field": "expires_in_days", "message": f"1 to {MAX_TOKEN_DAYS} days"}],
        )
    expires_at = utcnow() + timedelta(days=expires_in_days) if expires_in_days else None
    row, plain = issue_token(integration, name, scopes=scopes, expires_at=expires_at)
    audit.record(
        Action.TOKEN_CREATED,
        actor=actor,
        entity_type="user",
        entity_id=integration.id,
        details={
            "token": row.hint,
            "name": row.name,
            "scopes": row.scopes,
            "expires_at": isoformat(expires_at),
        },
    )
    return row, plain


@dataclass(frozen=True)
class IntegrationSummary:
    """What the admin page shows of one integration."""

    integration: User
    students: int
    tokens: list[ApiToken]
    activity: list[AuditEntry]
    last_used_at: datetime | None


def overview(activity_per_integration: int = 8) -> list[IntegrationSummary]:
    """Every integration with its student count, tokens (active first) and recent activity."""
    integrations = list(
        db.session.scalars(select(User).where(User.role == Role.INTEGRATION).order_by(User.id))
    )
    if not integrations:
        return []
    ids = [i.id for i in integrations]
    counts = dict(
        db.session.execute(
            select(User.integration_id, func.count())
            .where(User.integration_id.in_(ids))
            .group_by(User.integration_id)
        ).all()
    )
    tokens: dict[int, list[ApiToken]] = {i: [] for i in ids}
    for token in db.session.scalars(
        select(ApiToken).where(ApiToken.user_id.in_(ids)).order_by(ApiToken.id.desc())
    ):
        tokens[token.user_id].append(token)
    summaries = []
    for integration in integrations:
        own = tokens[integration.id]
        own.sort(key=lambda t: t.revoked_at is not None)  # active first, newest first within
        activity = list(
            db.session.scalars(
                select(AuditEntry)
                .where(AuditEntry.actor_id == integration.id)
                .order_by(AuditEntry.id.desc())
                .limit(activity_per_integration)
            )
        )
        used = [t.last_used_at for t in own if t.last_used_at is not None]
        summaries.append(
            IntegrationSummary(
                integration, counts.get(integration.id, 0), own, activity, max(used, default=None)
            )
        )
    return summaries
