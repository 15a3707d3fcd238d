"""Webhooks: endpoints admins register, per-assessment callbacks, events, deliveries, attempts.

An event (a message, in Standard Webhooks words) is serialised once and keeps those bytes; each
target it goes to gets a delivery, and each try of a delivery is an attempt.
"""

from __future__ import annotations

import enum
import json
from datetime import datetime

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from webapp.extensions import db
from webapp.models.accounts import in_grace, new_sealed_secret
from webapp.models.base import UTCDateTime, utcnow
from webapp.secret_box import Sealed


class EventType(enum.StrEnum):
    """Every event a receiver can get (SPEC 5), named once."""

    ASSESSMENT_SUBMITTED = "assessment.submitted"
    ASSESSMENT_STARTED = "assessment.started"
    ASSESSMENT_PROGRESS = "assessment.progress"
    ASSESSMENT_COMPLETED = "assessment.completed"
    ASSESSMENT_FAILED = "assessment.failed"
    OPERATION_COMPLETED = "operation.completed"
    OPERATION_FAILED = "operation.failed"
    WEBHOOK_TEST = "webhook.test"


EVENT_TYPE_DESCRIPTIONS: dict[EventType, str] = {
    EventType.ASSESSMENT_SUBMITTED: "An assessment was submitted; its scoring operation exists.",
    EventType.ASSESSMENT_STARTED: "A worker started scoring an assessment.",
    EventType.ASSESSMENT_PROGRESS: "Scoring passed 25, 50 or 75 percent (each at most once).",
    EventType.ASSESSMENT_COMPLETED: "Scoring finished; the data carries a result summary.",
    EventType.ASSESSMENT_FAILED: "Scoring failed; the data carries the error.",
    EventType.OPERATION_COMPLETED: "An operation (scoring or question generation) completed.",
    EventType.OPERATION_FAILED: "An operation failed.",
    EventType.WEBHOOK_TEST: "A test event an admin sent from the settings page or the API.",
}
# Percentages of overall progress that send `assessment.progress`, each at most once.
PROGRESS_MILESTONES: tuple[int, ...] = (25, 50, 75)


class DeliveryStatus(enum.StrEnum):
    """Lifecycle of one delivery."""

    PENDING = "pending"  # waiting for its first (or a manual) attempt
    RETRYING = "retrying"  # failed at least once; the next attempt is scheduled
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # the retry schedule ran out, or the target is gone
    SKIPPED = "skipped"  # the endpoint was disabled; recover sends it later

    @property
    def finished(self) -> bool:
        """True when no attempt is scheduled."""
        return self in (DeliveryStatus.SUCCEEDED, DeliveryStatus.FAILED, DeliveryStatus.SKIPPED)


class AttemptTrigger(enum.StrEnum):
    """What made an attempt happen."""

    SCHEDULED = "scheduled"  # the first try of a new event, or a retry on the schedule
    MANUAL = "manual"  # an admin: redeliver, recover or send test


class ErrorClass(enum.StrEnum):
    """Why an attempt got no usable answer (an HTTP error status is not one of these)."""

    TIMEOUT = "timeout"
    DNS = "dns"
    CONNECTION = "connection"
    TLS = "tls"
    BLOCKED = "blocked"  # the address is private or reserved (SSRF guard)
    REDIRECT = "redirect"  # a 3xx answer: redirects are not followed


class WebhookEndpoint(db.Model):
    """A URL an admin registered to receive events, with its signing secret(s)."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[int] = mapped_column(primary_key=True)
    url: Mapped[str] = mapped_column(String(2048))
    description: Mapped[str] = mapped_column(String(500), default="")
    # Event types this endpoint wants; empty means every type.
    event_types: Mapped[list] = mapped_column(JSON, default=list)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Both secrets are stored sealed (webapp.secret_box) and opened only when read.
    sealed_secret: Mapped[str] = mapped_column("secret", String(255), default=new_sealed_secret)
    # After a rotation the old secret keeps signing (a second signature) until it expires.
    sealed_previous_secret: Mapped[str | None] = mapped_column("previous_secret", String(255))
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Start of the current run of failed attempts; None after any success.
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    secret = Sealed("sealed_secret")
    previous_secret = Sealed("sealed_previous_secret")

    def wants(self, event_type: str) -> bool:
        """True when the filter lets this event type through (an empty filter lets all)."""
        return not self.event_types or event_type in self.event_types

    def active_secrets(self, now: datetime | None = None) -> list[str]:
        """The secrets that sign right now: the current one, and the previous during its grace."""
        if self.sealed_previous_secret and in_grace(self.previous_secret_expires_at, now):
            return [self.secret, self.previous_secret]
        return [self.secret]


class AssessmentCallback(db.Model):
    """A URL registered for one assessment's events, signed with the owning account's secret."""

    __tablename__ = "assessment_callbacks"

    id: Mapped[int] = mapped_column(primary_key=True)
    assessment_id: Mapped[int] = mapped_column(
        ForeignKey("assessments.id", ondelete="CASCADE"), unique=True
    )
    url: Mapped[str] = mapped_column(String(2048))
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    registered_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    # Set when the receiver answered 410 Gone; registering again clears it.
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    disabled_reason: Mapped[str | None] = mapped_column(Text)

    @property
    def enabled(self) -> bool:
        """True until the receiver said it is gone."""
        return self.disabled_at is None


class WebhookEvent(db.Model):
    """One event: its type, and the exact body bytes every attempt signs and sends."""

    __tablename__ = "webhook_events"
    __table_args__ = (
        Index("ix_webhook_events_assessment_id_sequence", "assessment_id", "sequence"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # The Standard Webhooks `webhook-id`: the same on every attempt and redelivery.
    webhook_id: Mapped[str] = mapped_column(String(40), unique=True)
    type: Mapped[EventType] = mapped_column(String(40))
    assessment_id: Mapped[int | None] = mapped_column(
        ForeignKey("assessments.id", ondelete="CASCADE")
    )
    operation_id: Mapped[int | None] = mapped_column(
        ForeignKey("operations.id", ondelete="CASCADE")
    )
    sequence: Mapped[int | None] = mapped_column(Integer)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def payload(self) -> dict:
        """The body, parsed."""
        return json.loads(self.body)


class Delivery(db.Model):
    """One event on its way to one target: an endpoint or an assessment's callback."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        CheckConstraint(
            "(endpoint_id IS NULL) <> (callback_id IS NULL)", name="exactly_one_target"
        ),
        Index("ix_webhook_deliveries_endpoint_id_id", "endpoint_id", "id"),
        Index("ix_webhook_deliveries_callback_id", "callback_id"),
        Index("ix_webhook_deliveries_event_id", "event_id"),
        Index("ix_webhook_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("webhook_events.id", ondelete="CASCADE"))
    endpoint_id: Mapped[int | None] = mapped_column(
        ForeignKey("webhook_endpoints.id", ondelete="CASCADE")
    )
    callback_id: Mapped[int | None] = mapped_column(
        ForeignKey("assessment_callbacks.id", ondelete="CASCADE")
    )
    status: Mapped[DeliveryStatus] = mapped_column(String(16), default=DeliveryStatus.PENDING)
    attempt_count: Mapped[int] = mapped_column(Integer, default=0)
    # Retries of the schedule used so far; the next delay is WEBHOOK_RETRY_SCHEDULE[this].
    retries_used: Mapped[int] = mapped_column(Integer, default=0)
    # False for manual sends: one attempt, no automatic retries.
    auto_retry: Mapped[bool] = mapped_column(Boolean, default=True)
    next_trigger: Mapped[AttemptTrigger] = mapped_column(
        String(16), default=AttemptTrigger.SCHEDULED
    )
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The RQ job that may make the next attempt; any other job for this delivery does nothing.
    job_id: Mapped[str | None] = mapped_column(String(64))
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_response_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    event: Mapped[WebhookEvent] = relationship(lazy="joined", innerjoin=True)
    endpoint: Mapped[WebhookEndpoint | None] = relationship()
    callback: Mapped[AssessmentCallback | None] = relationship()
    attempts: Mapped[list[Attempt]] = relationship(
        back_populates="delivery", order_by="Attempt.number", cascade="all, delete-orphan"
    )


class Attempt(db.Model):
    """One HTTP request of a delivery and what came back."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (UniqueConstraint("delivery_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE")
    )
    number: Mapped[int] = mapped_column(Integer)
    trigger: Mapped[AttemptTrigger] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    duration_ms: Mapped[int] = mapped_column(Integer)
    url: Mapped[str] = mapped_column(String(2048))
    request_headers: Mapped[dict] = mapped_column(JSON, default=dict)  # signatures redacted
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_headers: Mapped[dict] = mapped_column(JSON, default=dict)
    response_body: Mapped[str | None] = mapped_column(Text)  # the first 4 KB
    error: Mapped[ErrorClass | None] = mapped_column(String(16))
    error_detail: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    delivery: Mapped[Delivery] = relationship(back_populates="attempts")

    @property
    def succeeded(self) -> bool:
        """2xx, and nothing else, is success."""
        return (
            self.error is None
            and self.response_status is not None
            and 200 <= self.response_status < 300
        )
