"""Admin: integrations (service accounts), their tokens, students and recent activity."""

from __future__ import annotations

from flask import flash, make_response, redirect, render_template, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import EmailField, IntegerField, SelectMultipleField, StringField, widgets
from wtforms.validators import Length, NumberRange, Optional

from webapp.errors import ScorelineError
from webapp.models import Scope
from webapp.services import audit
from webapp.services.accounts import TokenNotFound, revoke_token
from webapp.services.audit import Action
from webapp.services.integrations import (
    MAX_NAME,
    MAX_TOKEN_DAYS,
    create_integration,
    get_integration,
    issue_scoped_token,
    overview,
    parse_scopes,
)
from webapp.views.admin import bp

SCOPE_WORDS = {
    Scope.READ: "read: list and read assessments, status, results",
    Scope.WRITE: "write: students, assessments, answers, submits, sign-in links",
    Scope.WEBHOOKS: "webhooks: register callbacks and read the signing secret",
}


class IntegrationForm(FlaskForm):
    """A new integration: its name and a contact email."""

    name = StringField("Name", validators=[Length(max=MAX_NAME)])
    email = EmailField("Contact email", validators=[Length(max=255)])


class TokenForm(FlaskForm):
    """A new token for one integration."""

    name = StringField("Token name", validators=[Length(max=100)])
    scopes = SelectMultipleField(
        "Scopes",
        choices=[(s.value, SCOPE_WORDS[s]) for s in Scope],
        default=[s.value for s in Scope],
        option_widget=widgets.CheckboxInput(),
        widget=widgets.ListWidget(prefix_label=False),
    )
    expires_in_days = IntegerField(
        "Expires after (days, empty: never)",
        validators=[Optional(), NumberRange(min=1, max=MAX_TOKEN_DAYS)],
    )


class RevokeForm(FlaskForm):
    """Revoke one token (CSRF only)."""


def _render(status: int = 200, new_token: tuple[int, str] | None = None, form=None):
    """The page; an answer showing a new token is never cached."""
    body = render_template(
        "admin/integrations.html",
        summaries=overview(),
        form=form or IntegrationForm(formdata=None),
        token_form=TokenForm(formdata=None),
        revoke_form=RevokeForm(formdata=None),
        new_token=new_token,
        SCOPE_WORDS=SCOPE_WORDS,
    )
    response = make_response(body, status)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/integrations")
def integrations():
    """Every integration: tokens, students, recent activity; and a form to add one."""
    return _render()


@bp.post("/integrations")
def create_integration_page():
    """Add an integration; then give it a token."""
    form = IntegrationForm()
    if not form.validate_on_submit():
        flash("Name at most 100 characters, email at most 255.", "error")
        return _render(422, form=form)
    try:
        integration = create_integration(form.name.data, form.email.data, current_user)
    except ScorelineError as exc:
        problems = "; ".join(f"{e['field']}: {e['message']}" for e in exc.errors or [])
        flash(f"{exc.detail} {problems}".strip(), "error")
        return _render(exc.status, form=form)
    flash(f"Integration {integration.name} added. Create its first token below.", "success")
    return redirect(url_for("admin.integrations", _anchor=f"integration-{integration.id}"))


@bp.post("/integrations/<int:integration_id>/tokens")
def create_integration_token(integration_id: int):
    """Issue a token with the chosen scopes and expiry, shown this once."""
    integration = get_integration(integration_id)
    form = TokenForm()
    if not form.validate_on_submit():
        flash(f"Check the token: expiry 1 to {MAX_TOKEN_DAYS} days, name 100 characters.", "error")
        return _render(422)
    try:
        scopes = parse_scopes(form.scopes.data or [])
        _, plain = issue_scoped_token(
            integration, form.name.data or "", scopes, form.expires_in_days.data, current_user
        )
    except ScorelineError as exc:
        flash(exc.detail, "error")
        return _render(exc.status)
    flash("Token created. Copy it now: it will not be shown again.", "success")
    return _render(201, new_token=(integration.id, plain))


@bp.post("/integrations/<int:integration_id>/tokens/<int:token_id>/revoke")
def revoke_integration_token(integration_id: int, token_id: int):
    """Revoke one of the integration's tokens: it stops working at once."""
    integration = get_integration(integration_id)
    if not RevokeForm().validate_on_submit():
        flash("The form expired; try again.", "error")
        return redirect(url_for("admin.integrations"))
    try:
        row = revoke_token(integration, token_id)
    except TokenNotFound as exc:
        flash(exc.detail, "error")
        return redirect(url_for("admin.integrations"))
    audit.record(
        Action.TOKEN_REVOKED,
        actor=current_user,
        entity_type="user",
        entity_id=integration.id,
        details={"token": row.hint, "name": row.name},
    )
    flash(f"Token {row.name or row.hint} revoked.", "success")
    return redirect(url_for("admin.integrations", _anchor=f"integration-{integration.id}"))
