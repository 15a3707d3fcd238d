"""Accounts: users with a role, and the API tokens they own."""

from __future__ import annotations

import base64
import enum
import hashlib
import secrets
from datetime import datetime, timedelta

from flask_login import UserMixin
from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship
from werkzeug.security import check_password_hash, generate_password_hash

from webapp.extensions import db
from webapp.models.base import UTCDateTime, utcnow
from webapp.secret_box import Sealed, seal

TOKEN_PREFIX = "sl_"
# A rotated-out signing secret (an endpoint's or an account's) keeps signing this long.
ROTATION_GRACE = timedelta(hours=24)


class Role(enum.StrEnum):
    """What an account may do: students see their own work, admins see everything, and an
    integration (a course platform, an LMS) acts for the students it created."""

    STUDENT = "student"
    ADMIN = "admin"
    INTEGRATION = "integration"


class Scope(enum.StrEnum):
    """What an API token may do: read (GET), write (every other method), manage webhooks."""

    READ = "read"
    WRITE = "write"
    WEBHOOKS = "webhooks"


ALL_SCOPES = " ".join(Scope)
# A password hash no password matches: integrations and their students never log in by form.
NO_PASSWORD = "!"


def new_signing_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def new_sealed_secret() -> str:
    """A new signing secret, sealed for its column (a column default)."""
    return seal(new_signing_secret())


def in_grace(expires_at: datetime | None, now: datetime | None = None) -> bool:
    """True while a rotated-out secret still signs (its grace has not ended)."""
    return expires_at is not None and expires_at > (now or utcnow())


class User(UserMixin, db.Model):
    """A person who logs in: a student taking assessments or an admin running the service."""

    __tablename__ = "users"
    # An integration's students are told apart by the integration's own id for them.
    __table_args__ = (UniqueConstraint("integration_id", "external_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    # The login; None for an integration's students (they sign in by link only).
    email: Mapped[str | None] = mapped_column(String(255), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[Role] = mapped_column(String(16), default=Role.STUDENT)
    # Signs callbacks registered on this account's assessments (shown on the account page);
    # stored sealed (webapp.secret_box), opened only when read.
    sealed_signing_secret: Mapped[str] = mapped_column(
        "signing_secret", String(255), default=new_sealed_secret
    )
    # After a rotation the old secret keeps signing (a second signature) until it expires.
    sealed_previous_signing_secret: Mapped[str | None] = mapped_column(
        "previous_signing_secret", String(255)
    )
    previous_signing_secret_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Every browser session carries the generation it was made in; logging out or changing the
    # password moves it on, and sessions of an older generation open nothing (webapp.auth).
    session_generation: Mapped[int] = mapped_column(default=0, server_default="0")
    # An integration's name, or a student's name as their integration gave it.
    name: Mapped[str | None] = mapped_column(String(100))
    # Set for a student an integration created: that integration and its id for the student.
    integration_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    external_id: Mapped[str | None] = mapped_column(String(128))
    # The email an integration gave for its student: contact only, never a login, not unique.
    contact_email: Mapped[str | None] = mapped_column(String(255))

    integration: Mapped[User | None] = relationship(remote_side="User.id")
    tokens: Mapped[list[ApiToken]] = relationship(back_populates="user", lazy="raise_on_sql")

    signing_secret = Sealed("sealed_signing_secret")
    previous_signing_secret = Sealed("sealed_previous_signing_secret")

    def set_password(self, password: str) -> None:
        """Store a salted hash of the password, never the password."""
        self.password_hash = generate_password_hash(password)

    def check_password(self, password: str) -> bool:
        """True when the password matches the stored hash."""
        return check_password_hash(self.password_hash, password)

    def active_signing_secrets(self, now: datetime | None = None) -> list[str]:
        """The secrets that sign this account's callbacks now: the current one, and the previous
        during its grace."""
        if self.sealed_previous_signing_secret and in_grace(
            self.previous_signing_secret_expires_at, now
        ):
            return [self.signing_secret, self.previous_signing_secret]
        return [self.signing_secret]

    @property
    def is_admin(self) -> bool:
        """Admins see and manage everything."""
        return self.role == Role.ADMIN

    @property
    def is_integration(self) -> bool:
        """A service account acting for the students it created."""
        return self.role == Role.INTEGRATION

    @property
    def signer(self) -> User:
        """The account whose secret signs callbacks of this account's assessments: an
        integration's student's are signed with the integration's secret."""
        return self.integration if self.integration_id is not None else self

    @property
    def display_name(self) -> str:
        """How pages name the account: its email, else its name, else its external id."""
        return self.email or self.name or self.external_id or f"account {self.id}"


def hash_token(token: str) -> str:
    """Tokens are high-entropy, so a plain SHA-256 is the right (fast, constant-cost) hash."""
    return hashlib.sha256(token.encode()).hexdigest()


class ApiToken(db.Model):
    """A bearer token for the JSON API, stored hashed; the plain token is shown once."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100), default="")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hint: Mapped[str] = mapped_column(String(16))  # the first characters, to tell tokens apart
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Space-separated Scope values; tokens made before scopes existed hold them all.
    scopes: Mapped[str] = mapped_column(String(64), default=ALL_SCOPES, server_default=ALL_SCOPES)
    # None: valid until revoked.
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship(back_populates="tokens")

    @classmethod
    def issue(
        cls,
        user: User,
        name: str = "",
        scopes: tuple[Scope, ...] = tuple(Scope),
        expires_at: datetime | None = None,
    ) -> tuple[ApiToken, str]:
        """Create a token row for `user`; returns the row and the plain token (shown once)."""
        plain = TOKEN_PREFIX + secrets.token_urlsafe(32)
        row = cls(
            user_id=user.id,
            name=name,
            token_hash=hash_token(plain),
            hint=plain[:10],
            scopes=" ".join(s for s in Scope if s in scopes),
            expires_at=expires_at,
        )
        return row, plain

    @property
    def scope_set(self) -> frozenset[str]:
        """The token's scopes."""
        return frozenset(self.scopes.split())

    def expired(self, now: datetime | None = None) -> bool:
        """True once the token's optional expiry has passed."""
        return self.expires_at is not None and self.expires_at <= (now or utcnow())
