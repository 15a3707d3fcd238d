"""Who is asking: a browser session (Flask-Login) or an `Authorization: Bearer` API token.

One way in per request: a request with a Bearer `Authorization` header is judged by that token
alone (an invalid one is 401 even beside a valid session cookie, so a junk header can never
turn a cookie into a CSRF-free credential). Other schemes (a proxy's Basic auth) are not ours
and change nothing.

A browser session is valid while it carries its user's current session generation: logging out
or changing the password moves the generation on, ending every earlier session server-side.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import redis
from flask import Flask, g, request, session
from flask_login import login_user, logout_user
from sqlalchemy import or_, select, update
from sqlalchemy.orm import joinedload

from webapp.errors import ScorelineError
from webapp.extensions import db, login_manager
from webapp.models import ApiToken, Scope, User
from webapp.models.accounts import hash_token
from webapp.models.base import utcnow
from webapp.near_cache import announce

log = logging.getLogger(__name__)

# Writing last_used_at on every poll would turn reads into writes; once a minute is enough.
LAST_USED_RESOLUTION = timedelta(minutes=1)
# The session key holding the generation the session was made in (see User.session_generation).
SESSION_GENERATION = "_gen"


def init_app(app: Flask) -> None:
    """Wire the user loaders into Flask-Login."""
    login_manager.login_view = "auth.login"
    login_manager.login_message = "Please log in to continue."
    login_manager.login_message_category = "info"


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    """The user of a browser session still in its user's current generation."""
    if sends_bearer(request.headers.get("Authorization", "")):
        return None  # the header alone decides (load_user_from_bearer)
    try:
        user = db.session.get(User, int(user_id))
    except ValueError:
        return None
    if user is None or session.get(SESSION_GENERATION) != user.session_generation:
        return None
    return user


def sends_bearer(header: str) -> bool:
    """True when an `Authorization` header uses the Bearer scheme, valid or not."""
    return header.partition(" ")[0].lower() == "bearer"


def start_session(user: User) -> None:
    """Log `user` in on a new session: nothing from before login (CSRF secret included) stays."""
    session.clear()
    login_user(user)
    session[SESSION_GENERATION] = user.session_generation


def end_sessions(user: User) -> None:
    """End every browser session of `user` (this one included), in every process, at once."""
    db.session.execute(
        update(User)
        .where(User.id == user.id)
        .values(session_generation=User.session_generation + 1)
    )
    db.session.commit()
    db.session.refresh(user)
    _announce_sessions_ended(user.id)
    logout_user()
    session.clear()


def _announce_sessions_ended(user_id: int) -> None:
    """Tell every web process's poll shortcut to stop trusting this user's session cookies."""
    try:
        announce("s", user_id)
    except redis.RedisError:
        # Near caches forget everything when they lose Redis, and serve nothing until they
        # have it back, so none can keep trusting an ended session.
        log.warning("sessions of user %s ended; Redis unreachable for the announcement", user_id)


@login_manager.request_loader
def load_user_from_bearer(req) -> User | None:
    """The user behind an `Authorization: Bearer <token>` header, if the token is valid."""
    token_hash = bearer_token_hash(req.headers.get("Authorization", ""))
    if token_hash is None:
        return None
    now = utcnow()
    row = db.session.scalar(
        select(ApiToken)
        .options(joinedload(ApiToken.user))
        .where(
            ApiToken.token_hash == token_hash,
            ApiToken.revoked_at.is_(None),
            or_(ApiToken.expires_at.is_(None), ApiToken.expires_at > now),
        )
    )
    if row is None:
        return None
    # The poll fast path (which keeps tokens in memory) serves only tokens that may read and
    # never expire; the others are checked here on every request.
    if Scope.READ in row.scope_set and row.expires_at is None:
        remember_token(row.token_hash, row.user_id)
    g.auth_via_token = True
    g.token_scopes = row.scope_set
    if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:
        row.last_used_at = now
        db.session.commit()
    return row.user


def authenticated_by_token() -> bool:
    """True when this request authenticated with a valid bearer token, not a session cookie."""
    return bool(g.get("auth_via_token"))


class InsufficientScope(ScorelineError):
    """The token is valid but was not given the scope this call needs."""

    status, code, title = 403, "INSUFFICIENT_SCOPE", "Insufficient scope"


def require_scope(scope: Scope) -> None:
    """403 INSUFFICIENT_SCOPE unless this request's token holds `scope` (sessions hold all)."""
    if not authenticated_by_token() or scope in g.get("token_scopes", frozenset()):
        return
    raise InsufficientScope(
        f"This call needs a token with the {scope!s} scope; this token has "
        f"{' '.join(sorted(g.token_scopes)) or 'no scopes'}."
    )


def bearer_token_hash(header: str) -> str | None:
    """The hash of the token in an `Authorization: Bearer` header, or None for anything else."""
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return hash_token(token)


def remember_token(token_hash: str, user_id: int) -> None:
    """Let this request's poll answer vouch for the token (webapp.fast_polls learns it)."""
    g.poll_token = token_hash


def forget_token(token_hash: str) -> None:
    """A revoked token stops working at once on the poll shortcut too (call after the commit):
    every process's near cache is told, this one at once."""
    try:
        announce("t", token_hash)
    except redis.RedisError:
        # Near caches forget everything when they lose Redis and serve nothing until they have
        # it back, so none can keep serving the token.
        log.warning("token %s revoked; Redis unreachable for the announcement", token_hash[:8])
