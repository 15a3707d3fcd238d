"""Idempotency keys: one row per (account, key), holding the lock and then the stored response."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from webapp.extensions import db
from webapp.models.base import UTCDateTime, utcnow
from webapp.secret_box import Sealed


class IdempotencyKey(db.Model):
    """A client's `Idempotency-Key`: reserved by the first request, then its stored answer.

    While `status_code` is NULL the request that reserved the key is still running (or crashed:
    `locked_at` says since when). Once set, the row is the response to replay until `expires_at`.
    """

    __tablename__ = "idempotency_keys"
    __table_args__ = (
        # The database decides which of N concurrent requests with one key runs.
        UniqueConstraint("user_id", "key", name="uq_idempotency_keys_user_id_key"),
        Index("ix_idempotency_keys_expires_at", "expires_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(Text)
    # Whoever holds this token may store the response; a takeover after a crash changes it.
    lock_token: Mapped[str] = mapped_column(String(32))
    locked_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    status_code: Mapped[int | None] = mapped_column(Integer)
    # Sealed like signing secrets (webapp.secret_box): the answer to a new endpoint, a secret
    # rotation or a callback registration shows a signing secret, and is kept to replay.
    sealed_response_body: Mapped[str | None] = mapped_column("response_body", Text)
    response_headers: Mapped[dict | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)

    response_body = Sealed("sealed_response_body")

    @property
    def finished(self) -> bool:
        """True once the first request's response is stored."""
        return self.status_code is not None
