"""Assessment callbacks: the one URL per assessment its owner registers for its events."""

from __future__ import annotations

from sqlalchemy import select

from webapp.extensions import db
from webapp.models import Assessment, AssessmentCallback, User
from webapp.models.base import utcnow
from webapp.services import audit
from webapp.services.audit import Action
from webapp.services.webhooks import bulkhead
from webapp.services.webhooks.url_guard import configured_guard, validate_url


def register_callback(assessment: Assessment, url: object, actor: User) -> AssessmentCallback:
    """Register (or replace) the callback URL of an assessment; audited."""
    checked = validate_url(url, configured_guard(), field="webhook_url")
    callback = db.session.scalar(
        select(AssessmentCallback).where(AssessmentCallback.assessment_id == assessment.id)
    )
    if callback is None:
        callback = AssessmentCallback(assessment_id=assessment.id)
        db.session.add(callback)
    callback.url = checked
    callback.registered_at = utcnow()
    callback.registered_by_id = actor.id
    callback.disabled_at = None
    callback.disabled_reason = None
    db.session.commit()
    bulkhead.forget(bulkhead.target_key(None, callback.id))  # maybe another receiver now
    audit.record(
        Action.ASSESSMENT_CALLBACK_REGISTERED,
        actor=actor,
        entity_type="assessment",
        entity_id=assessment.id,
        details={"webhook_url": checked},
    )
    return callback
