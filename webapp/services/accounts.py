"""API tokens an account owns: list, issue (the plain token is shown once) and revoke."""

from __future__ import annotations

from sqlalchemy import select

from webapp.auth import forget_token
from webapp.errors import ScorelineError, ValidationFailed
from webapp.extensions import db
from webapp.models import ApiToken, User
from webapp.models.base import utcnow

MAX_TOKEN_NAME = 100


class TokenNotFound(ScorelineError):
    """No token with that id belongs to this account."""

    status, code, title = 404, "TOKEN_NOT_FOUND", "Token not found"


def list_tokens(user: User) -> list[ApiToken]:
    """The account's tokens, active first, newest first within each group."""
    rows = db.session.scalars(
        select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id.desc())
    )
    return sorted(rows, key=lambda row: row.revoked_at is not None)


def issue_token(user: User, name: str = "") -> tuple[ApiToken, str]:
    """Create a token for `user`; returns the row and the plain token, which is never stored."""
    name = (name or "").strip()
    if len(name) > MAX_TOKEN_NAME:
        raise ValidationFailed(
            "The token name is too long.",
            errors=[{"field": "name", "message": f"at most {MAX_TOKEN_NAME} characters"}],
        )
    row, plain = ApiToken.issue(user, name=name)
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
