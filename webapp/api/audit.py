"""The audit log (admins)."""

from flask import request

from webapp.api import api_bp, require_admin
from webapp.services import audit


@api_bp.get("/audit")
def audit_log():
    """Audit entries newest first; filter with ?actor=&action=&entity_type=&entity_id=."""
    require_admin()
    entries = audit.search(
        actor=request.args.get("actor"),
        action=request.args.get("action"),
        entity_type=request.args.get("entity_type"),
        entity_id=request.args.get("entity_id"),
    )
    return {"entries": [e.to_dict() for e in entries], "count": len(entries)}
