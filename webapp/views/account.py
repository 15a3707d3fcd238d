"""The account page: API tokens (the new one shown once, at most MAX_API_TOKENS active), the
webhook signing secret (rotated by its owner after a confirmation) and the password."""

from __future__ import annotations

from flask import (
    Blueprint,
    current_app,
    flash,
    make_response,
    redirect,
    render_template,
    url_for,
)
from flask_limiter import RateLimitExceeded
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from wtforms import BooleanField, PasswordField, StringField
from wtforms.validators import DataRequired, Length

from webapp.auth import end_sessions, start_session
from webapp.services import audit
from webapp.services.accounts import (
    MAX_TOKEN_NAME,
    TokenLimitReached,
    TokenNotFound,
    active_token_count,
    issue_token,
    list_tokens,
    revoke_token,
    rotate_signing_secret,
)
from webapp.services.audit import Action
from webapp.services.logins import (
    MAX_PASSWORD_LENGTH,
    MIN_PASSWORD_LENGTH,
    PasswordRejected,
    change_password,
)
from webapp.views.login_limits import too_many_attempts
from webapp.views.presentation import day_and_time

bp = Blueprint("account", __name__, url_prefix="/account")


class TokenForm(FlaskForm):
    """Name a new API token."""

    name = StringField("Token name", validators=[Length(max=MAX_TOKEN_NAME)])


class RevokeForm(FlaskForm):
    """Revoke one token (CSRF only)."""


NEW_PASSWORD_FIELD = {
    "minlength": MIN_PASSWORD_LENGTH,
    "maxlength": MAX_PASSWORD_LENGTH,
    "autocomplete": "new-password",
}


class PasswordForm(FlaskForm):
    """The current password, and the new one twice."""

    current = PasswordField(
        "Current password",
        validators=[Length(max=MAX_PASSWORD_LENGTH)],
        render_kw={"maxlength": MAX_PASSWORD_LENGTH, "autocomplete": "current-password"},
    )
    new = PasswordField("New password", validators=[Length(max=MAX_PASSWORD_LENGTH)],
                        render_kw=NEW_PASSWORD_FIELD)  # fmt: skip
    confirm = PasswordField("New password again", validators=[Length(max=MAX_PASSWORD_LENGTH)],
                            render_kw=NEW_PASSWORD_FIELD)  # fmt: skip


class RotateSecretForm(FlaskForm):
    """Rotate the account's signing secret: the owner confirms they know what follows."""

    confirm = BooleanField(
        "Receivers must switch to the new secret within 24 hours", validators=[DataRequired()]
    )


def _render(
    form: TokenForm,
    new_token: str | None = None,
    status: int = 200,
    password_form: PasswordForm | None = None,
):
    """The account page; a response showing a new token is never cached."""
    body = render_template(
        "account/page.html",
        form=form,
        tokens=list_tokens(current_user),
        new_token=new_token,
        password_form=password_form or PasswordForm(formdata=None),
        active_tokens=active_token_count(current_user),
        max_tokens=current_app.config["MAX_API_TOKENS"],
        rotate_form=RotateSecretForm(formdata=None),
    )
    response = make_response(body, status)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("")
@login_required
def page():
    """Tokens and signing secret."""
    return _render(TokenForm())


@bp.post("/tokens")
@login_required
def create_token():
    """Issue a token and show it this once."""
    form = TokenForm()
    if not form.validate_on_submit():
        flash(f"A token name can be at most {MAX_TOKEN_NAME} characters.", "error")
        return _render(form, status=422)
    try:
        _, plain = issue_token(current_user, form.name.data or "")
    except TokenLimitReached as exc:
        flash(exc.detail, "error")
        return _render(form, status=exc.status)
    flash("Token created. Copy it now: it will not be shown again.", "success")
    return _render(TokenForm(formdata=None), new_token=plain, status=201)


@bp.get("/tokens")
@login_required
def tokens():
    """The address a new token was shown at: back to the account page (it is not shown again)."""
    return redirect(url_for("account.page"))


@bp.post("/tokens/<int:token_id>/revoke")
@login_required
def revoke(token_id: int):
    """Revoke a token; it stops working at once."""
    if not RevokeForm().validate_on_submit():
        flash("The form expired; please try again.", "error")
        return redirect(url_for("account.page"))
    try:
        row = revoke_token(current_user, token_id)
    except TokenNotFound:
        flash("That token does not exist or is not yours.", "error")
        return redirect(url_for("account.page"))
    flash(f"Token {row.name or row.hint + '…'} revoked.", "success")
    return redirect(url_for("account.page"))


@bp.post("/password")
@login_required
def password():
    """Change the password; every other session of the account ends, this one starts anew."""
    form = PasswordForm()
    if not form.validate_on_submit():
        flash("The password form expired or a field is too long; please try again.", "error")
        return _render(TokenForm(formdata=None), status=422, password_form=form)
    user = current_user._get_current_object()
    try:
        change_password(user, form.current.data, form.new.data, form.confirm.data)
    except PasswordRejected as exc:
        flash(str(exc), "error")
        return _render(TokenForm(formdata=None), status=422, password_form=form)
    end_sessions(user)
    start_session(user)
    audit.record(Action.PASSWORD_CHANGED, actor=user, entity_type="user", entity_id=user.id)
    flash("Password changed. Every other session of this account is logged out.", "success")
    return redirect(url_for("account.page"))


@bp.errorhandler(RateLimitExceeded)
def _throttled(_exc: RateLimitExceeded):
    """Too many wrong current passwords: the account page, saying when to try again."""
    return too_many_attempts(lambda: _render(TokenForm(formdata=None)))


@bp.post("/signing-secret/rotate")
@login_required
def rotate_secret():
    """A new signing secret; the old one keeps signing for 24 hours. Needs the confirmation."""
    form = RotateSecretForm()
    if not form.validate_on_submit():
        if "csrf_token" in form.errors:
            flash("The form expired; please try again.", "error")
        else:
            flash("Tick the confirmation to rotate the signing secret.", "error")
        return redirect(url_for("account.page"))
    user = rotate_signing_secret(current_user)
    grace_ends = day_and_time(user.previous_signing_secret_expires_at)
    flash(
        f"New signing secret created. The previous one also signs until {grace_ends}.",
        "success",
    )
    return redirect(url_for("account.page"))
