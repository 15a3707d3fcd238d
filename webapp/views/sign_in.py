"""Sign-in links: a student an integration sent here opens their assessment's live progress.

GET shows what the link opens and a button; the POST behind the button uses the link up. Mail
scanners and chat link previews fetch URLs with GET, so a GET that used the link would spend
it before the student ever clicked.

A session started by a link is limited to the student's own pages (dashboard, taking,
progress, results) and logging out: not the account page (tokens, secrets) nor the API.
"""

from __future__ import annotations

from flask import Blueprint, abort, redirect, render_template, request, session, url_for
from flask_wtf import FlaskForm

from webapp.auth import sends_bearer, start_session
from webapp.services import sign_in_links
from webapp.services.sign_in_links import LinkRefused

bp = Blueprint("sign_in", __name__, url_prefix="/sign-in")

# The session key marking a session started by a link, and what such a session may open.
LINK_SESSION = "_link"
LINK_BLUEPRINTS = frozenset({"student", "take", "progress", "results", "auth", "sign_in"})
# Their integration starts their assessments, not they.
LINK_REFUSED = frozenset({"student.start"})


class OpenForm(FlaskForm):
    """The button that uses the link (CSRF only)."""


def _refused(exc: LinkRefused):
    body = render_template(
        "errors/error.html", status=exc.status, title=exc.title, detail=exc.detail
    )
    return body, exc.status, {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


@bp.get("/<path:token>")
def show(token: str):
    """What the link opens, with the button that opens it; a clear page if it cannot."""
    try:
        link = sign_in_links.peek(token)
    except LinkRefused as exc:
        return _refused(exc)
    body = render_template("sign_in/open.html", link=link, form=OpenForm(), token=token)
    return body, 200, {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


@bp.post("/<path:token>")
def open_link(token: str):
    """Use the link: a new session as its student, limited to their own pages."""
    if not OpenForm().validate_on_submit():
        abort(400, "This form was sent without a valid security token. Open the link again.")
    try:
        link = sign_in_links.redeem(token)
    except LinkRefused as exc:
        return _refused(exc)
    start_session(link.student)
    session[LINK_SESSION] = True
    return redirect(url_for("progress.page", assessment_id=link.assessment_id))


def restrict_link_sessions():
    """A session started by a link opens the student's own pages only (403 elsewhere); a
    request with a Bearer token is judged by the token alone, as everywhere."""
    if not session.get(LINK_SESSION) or request.endpoint in (None, "static"):
        return None
    if sends_bearer(request.headers.get("Authorization", "")):
        return None
    if request.blueprint not in LINK_BLUEPRINTS or request.endpoint in LINK_REFUSED:
        abort(403, "You signed in with a link: it opens your own assessments only.")
    return None
