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
    presentation,
    progress,
    results,
    sign_in,
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
    sign_in.bp,
)


def init_app(app: Flask) -> None:
    """Register the HTML blueprints, their template globals and filters."""
    for bp in BLUEPRINTS:
        app.register_blueprint(bp)
    app.before_request(sign_in.restrict_link_sessions)
    app.context_processor(presentation.template_globals)
    app.jinja_env.filters.update(presentation.FILTERS)


def _guard(bp: Blueprint) -> None:
    """Browser-friendly answers for expired sessions and forms sent without a CSRF token."""

    @bp.before_request
    def _redirect_htmx_when_logged_out():
        # A poll from a tab whose session ended must not swap the login page into the page.
        if request.htmx and not current_user.is_authenticated and bp is not auth.bp:
            try:
                page = urlsplit(request.htmx.current_url or "").path or None
            except ValueError:  # "http://[::1/": a header no browser sends; back to no page
                page = None
            return htmx_response("", redirect=url_for("auth.login", next=page))
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
