"""Sign-in links: an integration hands one of its students to the browser.

A link is a row (who, which assessment, until when, used when) and a URL carrying the row's id
signed with the app's SECRET_KEY (itsdangerous, the serializer Flask signs sessions with). It
opens once: the first redeem wins a conditional UPDATE of `used_at`, so two clicks racing get
one session. Issued, used and refused links are audited.
"""

from __future__ import annotations

from datetime import timedelta

from flask import current_app
from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import delete, update

from webapp.errors import Forbidden, ScorelineError, ValidationFailed
from webapp.extensions import db
from webapp.models import Assessment, SignInLink, User
from webapp.models.base import utcnow
from webapp.services import audit
from webapp.services.audit import Action

SALT = "scoreline.sign-in-link"
MIN_TTL, MAX_TTL = 30, 3600
# How long a link's row outlives its expiry: until then its page says "expired" (or "used");
# after, the prune deletes it and its URL is an unknown link. The audit log keeps the record.
KEPT_AFTER_EXPIRY = timedelta(days=1)


class LinkRefused(ScorelineError):
    """A link that opens nothing: tampered, unknown, used or expired (the detail says which)."""

    status, code, title = 410, "SIGN_IN_LINK_REFUSED", "This sign-in link does not work"


def _serializer() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.secret_key, salt=SALT)


def parse_ttl(value: object) -> int:
    """`expires_in` seconds (MIN_TTL to MAX_TTL), or the SIGN_IN_LINK_TTL default when None."""
    if value is None:
        return current_app.config["SIGN_IN_LINK_TTL"]
    if not isinstance(value, int) or isinstance(value, bool) or not MIN_TTL <= value <= MAX_TTL:
        raise ValidationFailed(
            "expires_in is out of range.",
            errors=[{"field": "expires_in", "message": f"whole seconds, {MIN_TTL} to {MAX_TTL}"}],
        )
    return value


def issue(assessment: Assessment, integration: User, ttl: int) -> tuple[SignInLink, str]:
    """A link into `assessment` for its student, by the integration that created the student;
    returns the row and the signed token for the URL."""
    student = assessment.user
    if not integration.is_integration or student.integration_id != integration.id:
        raise Forbidden("Only the integration that created this student issues its sign-in links.")
    link = SignInLink(
        student_id=student.id,
        assessment_id=assessment.id,
        issued_by_id=integration.id,
        expires_at=utcnow() + timedelta(seconds=ttl),
    )
    db.session.add(link)
    db.session.commit()
    audit.record(
        Action.SIGN_IN_LINK_ISSUED,
        actor=integration,
        entity_type="assessment",
        entity_id=assessment.id,
        details={"link": link.id, "external_id": student.external_id, "expires_in": ttl},
    )
    return link, _serializer().dumps(link.id)


def peek(token: str) -> SignInLink:
    """The link a token names if it would still open (nothing is used up); LinkRefused if not."""
    link = _load(token)
    _refuse_if_spent(link)
    return link


def redeem(token: str) -> SignInLink:
    """Use the link up: exactly one caller gets it, everyone after gets LinkRefused."""
    link = _load(token)
    now = utcnow()
    db.session.commit()  # the UPDATE is the first statement of its own transaction
    won = db.session.execute(
        update(SignInLink)
        .where(SignInLink.id == link.id, SignInLink.used_at.is_(None), SignInLink.expires_at > now)
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    if won.rowcount != 1:
        db.session.refresh(link)
        _refuse_if_spent(link)
    db.session.refresh(link)
    audit.record(
        Action.SIGN_IN_LINK_USED,
        actor=link.student,
        entity_type="assessment",
        entity_id=link.assessment_id,
        details={"link": link.id, "external_id": link.student.external_id},
    )
    return link


def _load(token: str) -> SignInLink:
    """The row a token names; LinkRefused for a bad signature or an unknown link."""
    try:
        link_id = _serializer().loads(token)
    except BadSignature:
        link_id = None
    link = db.session.get(SignInLink, link_id) if isinstance(link_id, int) else None
    if link is None:
        _refused("tampered or unknown")
        raise LinkRefused(
            "This link is not one we issued, or it was changed on its way. "
            "Ask the platform that sent it for a new one."
        )
    return link


def _refuse_if_spent(link: SignInLink) -> None:
    if link.used_at is not None:
        _refused("used", link)
        raise LinkRefused(
            "This link was used already: each link opens once. "
            "Ask the platform that sent it for a new one."
        )
    if link.expires_at <= utcnow():
        _refused("expired", link)
        raise LinkRefused(
            "This link has expired: links work for a few minutes only. "
            "Ask the platform that sent it for a new one."
        )


def _refused(reason: str, link: SignInLink | None = None) -> None:
    audit.record(
        Action.SIGN_IN_LINK_REFUSED,
        entity_type="assessment" if link else "",
        entity_id=link.assessment_id if link else "",
        details={"reason": reason, **({"link": link.id} if link else {})},
    )


def prune_expired(now) -> int:
    """Delete the rows of links expired more than KEPT_AFTER_EXPIRY ago; returns how many."""
    result = db.session.execute(
        delete(SignInLink).where(SignInLink.expires_at < now - KEPT_AFTER_EXPIRY)
    )
    db.session.commit()
    return result.rowcount or 0
