"""HTML blueprints: auth, student (dashboard), take, progress, results, account, admin."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, Flask, render_template, request, url_for
from flask_login import current_user
from flask_wtf.csrf import CSRFError
from htmx_flask import make_response as htmx_response

from webapp.views import (
    account,
    admin,
    auth,
    login_limits,
    presentation,
    progress,
    results,
    student,
    take,
)
from webapp.views.text_guard import guard as guard_text

BLUEPRINTS: tuple[Blueprint, ...] = (
    auth.bp,
    student.bp,
    take.bp,
    progress.bp,
    results.bp,
    account.bp,
    admin.bp,
)


def init_app(app: Flask) -> None:
    """Register the HTML blueprints, their template globals and filters."""
    for bp in BLUEPRINTS:
        app.register_blueprint(bp)
    app.context_processor(presentation.template_globals)
    app.jinja_env.filters.update(presentation.FILTERS)
    login_limits.init_app(app)


def _guard(bp: Blueprint) -> None:
    """Browser-friendly answers for expired sessions and forms sent without a CSRF token."""

    @bp.before_request
    def _redirect_htmx_when_logged_out():
        # A poll from a tab whose session ended must not swap the login page into the page.
        if request.htmx and not current_user.is_authenticated and bp is not auth.bp:
            return htmx_response("", redirect=url_for("auth.login", next=_tab_path()))
        return None

    def _tab_path() -> str | None:
        # HX-Current-URL is a header like any other: one urllib cannot split names no page.
        try:
            return urlsplit(request.htmx.current_url or "").path or None
        except ValueError:
            return None

    @bp.errorhandler(CSRFError)
    def _csrf_refused(exc: CSRFError):
        detail = (
            "This form was sent without a valid security token, so nothing was changed. "
            "Go back, reload the page and try again."
        )
        return render_template(
            "errors/error.html", status=400, title="Form not accepted", detail=detail
        ), 400


# Once per process, not per app: a blueprint takes no new handlers after its first registration.
for _bp in BLUEPRINTS:
    _guard(_bp)
    guard_text(_bp)
