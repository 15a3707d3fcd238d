"""Passwords: a login check that takes as long for unknown emails, and password changes."""

from __future__ import annotations

import secrets
from functools import cache

from sqlalchemy import select
from werkzeug.security import check_password_hash, generate_password_hash

from webapp.extensions import db
from webapp.models import User

MIN_PASSWORD_LENGTH = 8  # as `flask create-user` asks
MAX_PASSWORD_LENGTH = 200


class PasswordRejected(ValueError):
    """A password change that cannot be made; the message says why, in the user's words."""


def normalise_email(email: str) -> str:
    """Emails are stored and compared trimmed and lower-cased."""
    return (email or "").strip().lower()


@cache
def _dummy_hash() -> str:
    """A hash of nothing anyone knows, made like real ones, for emails with no account."""
    return generate_password_hash(secrets.token_urlsafe(32))


def authenticate(email: str, password: str) -> User | None:
    """The account for these credentials, or None.

    An unknown email still costs one password hash check (against a dummy hash made by the same
    method as real ones), so the answer time does not tell which emails have accounts.
    """
    user = db.session.scalar(select(User).where(User.email == normalise_email(email)))
    if user is None:
        check_password_hash(_dummy_hash(), password)
        return None
    return user if user.check_password(password) else None


def change_password(user: User, current: str, new: str, confirm: str) -> None:
    """Set a new password after checking the current one; PasswordRejected says what is wrong.

    Ending the account's other sessions is the caller's (webapp.auth.end_sessions).
    """
    if not user.check_password(current or ""):
        raise PasswordRejected("The current password is not right.")
    if new != confirm:
        raise PasswordRejected("The new password and its repetition differ.")
    if not MIN_PASSWORD_LENGTH <= len(new) <= MAX_PASSWORD_LENGTH:
        raise PasswordRejected(
            f"A password needs {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters."
        )
    if new == current:
        raise PasswordRejected("The new password is the same as the current one.")
    user.set_password(new)
    db.session.commit()
