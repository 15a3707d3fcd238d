"""The audit log (admins)."""

from webapp.api.blueprint import admin_only, api_bp, problem_response
from webapp.api.schemas import AuditEntryOut, AuditFilter, AuditLog
from webapp.services import audit


@api_bp.get("/audit", responses={200: AuditLog, 403: problem_response("FORBIDDEN: admins only.")})
@admin_only
def audit_log(query: AuditFilter):
    """Audit entries newest first (up to 200); filter by actor, action and entity."""
    entries = audit.search(
        actor=query.actor,
        action=query.action,
        entity_type=query.entity_type,
        entity_id=query.entity_id,
    )
    return AuditLog(entries=[AuditEntryOut.of(e) for e in entries], count=len(entries)).model_dump(
        mode="json"
    )
