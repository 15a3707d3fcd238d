"""What an account owns: API tokens (list, issue, shown once, revoke; capped per account) and
its webhook signing secret (rotated by the owner, the old one signing for a grace)."""

from __future__ import annotations

from datetime import datetime

from flask import current_app
from sqlalchemy import func, select, update

from webapp.auth import forget_token
from webapp.errors import ScorelineError, ValidationFailed
from webapp.extensions import db
from webapp.models import ApiToken, Scope, User
from webapp.models.base import utcnow
from webapp.services.webhooks import signing_secrets

MAX_TOKEN_NAME = 100
# Revoked tokens listed on the account page (the newest): the page stays small however many.
REVOKED_SHOWN = 10


class TokenNotFound(ScorelineError):
    """No token with that id belongs to this account."""

    status, code, title = 404, "TOKEN_NOT_FOUND", "Token not found"


class TokenLimitReached(ScorelineError):
    """The account already holds MAX_API_TOKENS active tokens."""

    status, code, title = 409, "TOKEN_LIMIT_REACHED", "Too many API tokens"


def list_tokens(user: User) -> list[ApiToken]:
    """The account's active tokens, then its REVOKED_SHOWN newest revoked ones; newest first."""
    newest_first = select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id.desc())
    active = db.session.scalars(newest_first.where(ApiToken.revoked_at.is_(None)))
    revoked = db.session.scalars(
        newest_first.where(ApiToken.revoked_at.is_not(None)).limit(REVOKED_SHOWN)
    )
    return [*active, *revoked]


def active_token_count(user: User) -> int:
    """How many of the account's tokens work (not revoked)."""
    return db.session.scalar(
        select(func.count())
        .select_from(ApiToken)
        .where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
    )


def issue_token(
    user: User,
    name: str = "",
    *,
    scopes: tuple[Scope, ...] = tuple(Scope),
    expires_at: datetime | None = None,
) -> tuple[ApiToken, str]:
    """Create a token for `user` (every scope and no expiry unless given); returns the row and
    the plain token, which is never stored."""
    name = (name or "").strip()
    if len(name) > MAX_TOKEN_NAME:
        raise ValidationFailed(
            "The token name is too long.",
            errors=[{"field": "name", "message": f"at most {MAX_TOKEN_NAME} characters"}],
        )
    cap = current_app.config["MAX_API_TOKENS"]
    # A no-op UPDATE of the account row: PostgreSQL locks the row, SQLite the database, until
    # commit, so concurrent requests count and insert one at a time and the cap holds.
    db.session.execute(
        update(User)
        .where(User.id == user.id)
        .values(id=User.id)
        .execution_options(synchronize_session=False)
    )
    if active_token_count(user) >= cap:
        db.session.rollback()
        raise TokenLimitReached(
            f"An account can hold at most {cap} active API tokens. "
            "Revoke one you no longer use, then create the new one."
        )
    row, plain = ApiToken.issue(user, name=name, scopes=scopes, expires_at=expires_at)
    db.session.add(row)
    db.session.commit()
    return row, plain


def revoke_token(user: User, token_id: int) -> ApiToken:
    """Revoke one of the account's tokens (idempotent); TokenNotFound for anyone else's."""
    row = db.session.get(ApiToken, token_id)
    if row is None or row.user_id != user.id:
        raise TokenNotFound(f"You have no token with id {token_id}.")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        db.session.commit()
    forget_token(row.token_hash)
    return row


def rotate_signing_secret(user: User) -> User:
    """A new account signing secret signs from now on; the old one keeps signing for the grace."""
    signing_secrets.rotate(user, actor=user)
    return user
