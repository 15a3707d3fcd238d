"""Admin: the audit log, filterable by actor, action and entity."""

from __future__ import annotations

from flask import flash, render_template, request
from sqlalchemy import select

from webapp.errors import ValidationFailed
from webapp.extensions import db
from webapp.models import AuditEntry
from webapp.request_values import parse_text
from webapp.services import audit
from webapp.views.admin import bp

# The newest this many entries are shown; filters narrow them down.
PAGE_SIZE = 200
FILTERS = ("actor", "action", "entity_type", "entity_id")


@bp.get("/audit")
def audit_log():
    """Who did what, newest first; `?actor=` matches part of an email (literally: "%" and "_"
    are no wildcards), the rest exactly. A filter that cannot be searched is explained, ignored."""
    filters = {}
    for name in FILTERS:
        try:
            filters[name] = parse_text(request.args.get(name), name) or ""
        except ValidationFailed as exc:
            flash(
                f"The {name.replace('_', ' ')} filter {exc.errors[0]['message']}; ignored.", "error"
            )
            filters[name] = ""
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
