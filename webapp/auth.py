"""Who is asking: a browser session (Flask-Login) or an `Authorization: Bearer` API token."""

from __future__ import annotations

from datetime import timedelta

from flask import Flask, g, request
from sqlalchemy import select
from sqlalchemy.orm import joinedload

from webapp.extensions import db, login_manager
from webapp.models import ApiToken, User
from webapp.models.accounts import hash_token
from webapp.models.base import utcnow

# Writing last_used_at on every poll would turn reads into writes; once a minute is enough.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def init_app(app: Flask) -> None:
    """Wire the user loaders into Flask-Login."""
    login_manager.login_view = "auth.login"
    login_manager.login_message = "Please log in to continue."
    login_manager.login_message_category = "info"


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    """The user of a browser session."""
    try:
        return db.session.get(User, int(user_id))
    except ValueError:
        return None


@login_manager.request_loader
def load_user_from_bearer(req) -> User | None:
    """The user behind an `Authorization: Bearer <token>` header, if the token is valid."""
    header = req.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    row = db.session.scalar(
        select(ApiToken)
        .options(joinedload(ApiToken.user))
        .where(ApiToken.token_hash == hash_token(token.strip()), ApiToken.revoked_at.is_(None))
    )
    if row is None:
        return None
    g.auth_via_token = True
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:
        row.last_used_at = now
        db.session.commit()
    return row.user


def authenticated_by_token() -> bool:
    """True when this request authenticated with a bearer token rather than a session cookie."""
    return bool(g.get("auth_via_token")) or request.headers.get(
        "Authorization", ""
    ).lower().startswith("bearer ")
