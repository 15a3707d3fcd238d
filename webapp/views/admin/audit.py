"""Admin: the audit log, filterable by actor, action and entity, paged back past the newest."""

from __future__ import annotations

from flask import flash, render_template, request, url_for
from sqlalchemy import select
from werkzeug.routing import BuildError

from webapp.errors import ValidationFailed
from webapp.extensions import db
from webapp.models import AuditEntry
from webapp.request_values import parse_id, parse_text
from webapp.services import audit
from webapp.views.admin import bp

# One page holds this many entries; "Older entries" pages back from the last one shown.
PAGE_SIZE = 200
FILTERS = ("actor", "action", "entity_type", "entity_id")
# Where an audited entity lives in the admin pages: endpoint and its id argument.
ENTITY_PAGES: dict[str, tuple[str, str]] = {
    "assessment": ("progress.page", "assessment_id"),
    "webhook_endpoint": ("admin.webhook", "endpoint_id"),
    "webhook_delivery": ("admin.webhook_delivery", "delivery_id"),
    "question_set": ("admin.question_sets", "_anchor"),
}


def entity_url(entity_type: str, entity_id: str) -> str | None:
    """A link to the audited thing's page, when it has one."""
    page = ENTITY_PAGES.get(entity_type)
    if page is None or not entity_id:
        return None
    endpoint, argument = page
    if argument == "_anchor":
        return url_for(endpoint, _anchor=f"set-{entity_id}")
    if not entity_id.isdigit():
        return None
    try:
        return url_for(endpoint, **{argument: int(entity_id)})
    except BuildError:
        return None


def detail_words(value: object) -> str:
    """One detail value in words: yes/no for booleans, lists joined, nested keys spelled out."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None or value == "" or value == []:
        return "none"
    if isinstance(value, list):
        return ", ".join(detail_words(item) for item in value)
    if isinstance(value, dict):
        return "; ".join(f"{key_words(k)} {detail_words(v)}" for k, v in sorted(value.items()))
    return str(value)


def key_words(key: str) -> str:
    """A detail's key in words: `event_types` -> `Event types`."""
    return key.replace("_", " ").capitalize()


@bp.get("/audit")
def audit_log():
    """Who did what, newest first; `?actor=` matches part of an email (literally: "%" and "_"
    are no wildcards), the rest exactly; `?before=<id>` shows the page older than that entry. A
    filter that cannot be searched is explained and ignored."""
    filters = {}
    for name in FILTERS:
        try:
            filters[name] = parse_text(request.args.get(name), name) or ""
        except ValidationFailed as exc:
            flash(
                f"The {name.replace('_', ' ')} filter {exc.errors[0]['message']}; ignored.", "error"
            )
            filters[name] = ""
    try:
        before = parse_id(request.args.get("before"), "before")
    except ValidationFailed:
        flash("Older entries start from an entry number; showing the newest.", "error")
        before = None
    entries = audit.search(
        **{name: value or None for name, value in filters.items()},
        limit=PAGE_SIZE,
        before_id=before,
    )
    entity_types = db.session.scalars(
        select(AuditEntry.entity_type).where(AuditEntry.entity_type != "").distinct()
    )
    chosen = {name: value for name, value in filters.items() if value}
    older = None
    if len(entries) == PAGE_SIZE:
        older = url_for("admin.audit_log", before=entries[-1].id, **chosen)
    return render_template(
        "admin/audit.html",
        entries=entries,
        filters=filters,
        filtered=any(filters.values()),
        actions=[str(action) for action in audit.Action],
        entity_types=sorted(set(entity_types) | {filters["entity_type"]} - {""}),
        page_size=PAGE_SIZE,
        paged=before is not None,
        older_url=older,
        newest_url=url_for("admin.audit_log", **chosen),
        entity_url=entity_url,
        detail_words=detail_words,
        key_words=key_words,
    )
