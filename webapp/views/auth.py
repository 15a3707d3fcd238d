"""Logging in and out of the browser UI."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_limiter import RateLimitExceeded
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField
from wtforms.validators import DataRequired, Email, Length

from webapp.auth import end_sessions, start_session
from webapp.redirects import local_path
from webapp.services import audit
from webapp.services.audit import Action
from webapp.services.logins import MAX_PASSWORD_LENGTH, authenticate, normalise_email
from webapp.views.login_limits import too_many_attempts

bp = Blueprint("auth", __name__)


class LoginForm(FlaskForm):
    """Email and password."""

    email = EmailField("Email", validators=[DataRequired(), Email(check_deliverability=False)])
    password = PasswordField(
        "Password", validators=[DataRequired(), Length(max=MAX_PASSWORD_LENGTH)]
    )


def _next_page() -> str:
    """Where to go after login: `?next=` if it is a page of this site, else the dashboard."""
    return local_path(request.args.get("next")) or url_for("student.dashboard")


@bp.route("/login", methods=["GET", "POST"])
def login():
    """Show the login form; log in on valid credentials."""
    if current_user.is_authenticated and request.method != "POST":
        return redirect(_next_page())
    form = LoginForm()
    if form.validate_on_submit():
        user = authenticate(form.email.data, form.password.data)
        if user is not None:
            start_session(user)
            audit.record(Action.LOGIN, actor=user, entity_type="user", entity_id=user.id)
            return redirect(_next_page())
        audit.record(Action.LOGIN_FAILED, details={"email": normalise_email(form.email.data)})
        flash("Wrong email or password.", "error")
    elif request.method == "POST":
        flash("Please enter a valid email and your password.", "error")
    # Only a POST failed (HEAD is a GET without the body).
    return render_template("auth/login.html", form=form), 400 if request.method == "POST" else 200


@bp.post("/logout")
def logout():
    """Log out, ending every session of the account, and go back to the login page."""
    if current_user.is_authenticated:
        user = current_user._get_current_object()
        audit.record(Action.LOGOUT, actor=user, entity_type="user", entity_id=user.id)
        end_sessions(user)
    flash("You are logged out.", "info")
    return redirect(url_for("auth.login"))


@bp.errorhandler(RateLimitExceeded)
def _throttled(_exc: RateLimitExceeded):
    """Past a login limit: the login page, saying when to try again (429, Retry-After)."""
    return too_many_attempts(lambda: render_template("auth/login.html", form=LoginForm()))
