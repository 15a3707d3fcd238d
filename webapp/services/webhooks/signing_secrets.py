"""Rotating a signing secret, an endpoint's or an account's: a new one signs from now on, and
the old one signs beside it (a second signature) for ROTATION_GRACE, so receivers can switch."""

from __future__ import annotations

from webapp.extensions import db
from webapp.models import User, WebhookEndpoint
from webapp.models.accounts import ROTATION_GRACE, new_signing_secret
from webapp.models.base import isoformat, utcnow
from webapp.secret_box import seal
from webapp.services import audit
from webapp.services.audit import Action

# Where each owner keeps its secrets: (current, previous, previous expires at) attributes, the
# secrets sealed (webapp.secret_box).
_ATTRIBUTES = {
    WebhookEndpoint: ("sealed_secret", "sealed_previous_secret", "previous_secret_expires_at"),
    User: (
        "sealed_signing_secret",
        "sealed_previous_signing_secret",
        "previous_signing_secret_expires_at",
    ),
}
_AUDIT = {
    WebhookEndpoint: (Action.WEBHOOK_SECRET_ROTATED, "webhook_endpoint"),
    User: (Action.ACCOUNT_SECRET_ROTATED, "user"),
}


def rotate(owner: WebhookEndpoint | User, actor: User) -> None:
    """Give `owner` a new signing secret, keep the current one signing for the grace (moved as
    sealed: nothing is opened), commit, and audit it."""
    kind = WebhookEndpoint if isinstance(owner, WebhookEndpoint) else User  # current_user too
    current, previous, expires_at = _ATTRIBUTES[kind]
    setattr(owner, previous, getattr(owner, current))
    setattr(owner, expires_at, utcnow() + ROTATION_GRACE)
    setattr(owner, current, seal(new_signing_secret()))
    db.session.commit()
    action, entity_type = _AUDIT[kind]
    audit.record(
        action,
        actor=actor,
        entity_type=entity_type,
        entity_id=owner.id,
        details={"previous_secret_expires_at": isoformat(getattr(owner, expires_at))},
    )
