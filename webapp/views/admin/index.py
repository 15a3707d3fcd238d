"""Admin: the entry page, naming every admin page with what it is for."""

from __future__ import annotations

from flask import current_app, render_template, request

from webapp.views.admin import bp

# Every admin page in the order the admin navigation shows them: its module (each page is one
# module of this package, its sub-pages included), its endpoint, its name, what it is for.
ADMIN_PAGES: tuple[tuple[str, str, str, str], ...] = (
    ("operations", "admin.operations", "Operations",
     "Queues, live workers, failed jobs, repairs and every assessment."),
    ("webhooks", "admin.webhooks", "Webhooks",
     "Endpoints, their health, delivery logs and secrets."),
    ("question_sets", "admin.question_sets", "Question sets",
     "The sets and their questions; generate new ones."),
    ("integrations", "admin.integrations", "Integrations",
     "Service accounts acting for their students: tokens, students, activity."),
    ("audit", "admin.audit_log", "Audit log", "Who did what, and when."),
)  # fmt: skip


@bp.context_processor
def admin_pages() -> dict:
    """The admin navigation's pages and the one being shown, for every admin template."""
    view = current_app.view_functions.get(request.endpoint or "")
    return {"ADMIN_PAGES": ADMIN_PAGES, "admin_section": getattr(view, "__module__", "")}


@bp.get("/")
def index():
    """Where the "Admin" link leads: every admin page, one line each."""
    return render_template("admin/index.html")
