"""Admin: the audit log, filterable by actor, action and entity."""

from __future__ import annotations

from flask import render_template, request
from sqlalchemy import select

from webapp.extensions import db
from webapp.models import AuditEntry
from webapp.services import audit
from webapp.views.admin import bp

# The newest this many entries are shown; filters narrow them down.
PAGE_SIZE = 200
FILTERS = ("actor", "action", "entity_type", "entity_id")


@bp.get("/audit")
def audit_log():
    """Who did what, newest first; `?actor=` matches part of an email, the rest exactly."""
    filters = {name: request.args.get(name, "").strip() for name in FILTERS}
    entries = audit.search(
        **{name: value or None for name, value in filters.items()}, limit=PAGE_SIZE
    )
    entity_types = db.session.scalars(
        select(AuditEntry.entity_type).where(AuditEntry.entity_type != "").distinct()
    )
    return render_template(
        "admin/audit.html",
        entries=entries,
        filters=filters,
        filtered=any(filters.values()),
        actions=[str(action) for action in audit.Action],
        entity_types=sorted(set(entity_types) | {filters["entity_type"]} - {""}),
        page_size=PAGE_SIZE,
    )
