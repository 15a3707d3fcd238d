"""Throttled logins: Flask-Limiter counts failed attempts per email tried and per address.

Two limits on the login form, RATE_LIMIT_LOGIN_ACCOUNT per email (whichever address tries it,
so spreading a guessing run over many machines does not help) and RATE_LIMIT_LOGIN_IP per
client address (so one machine cannot try one password on many accounts). Only failures count
(a 400 answer): a person who logs in often is never throttled. Wrong current passwords on the
account page's password form (a 422 answer) count against the same two counters. Past a limit
the attempt is refused, right password or not, with 429, `Retry-After` and a message on the
page.
"""

from __future__ import annotations

import hashlib

from flask import Flask, Response, current_app, flash, make_response, request
from flask_limiter import Limiter
from flask_login import current_user
from limits import parse_many

from webapp.extensions import seconds_to_retry
from webapp.services.logins import normalise_email

SETTINGS = ("RATE_LIMIT_LOGIN_ACCOUNT", "RATE_LIMIT_LOGIN_IP")


def init_app(app: Flask) -> None:
    """Put the login limits on the app's limiter (webapp.api.rate_limits made it)."""
    for name in SETTINGS:
        try:
            parse_many(app.config[name])
        except ValueError as exc:
            raise RuntimeError(f"{name} is not a rate limit: {app.config[name]!r}") from exc
    limiter: Limiter = app.extensions["scoreline_limiter"]
    limit_failures(limiter, app.blueprints["auth"], "auth.login", _email_in_form, failure=400)
    limit_failures(limiter, app.blueprints["account"], "account.password", _own_email, failure=422)


def _email_in_form() -> str:
    return request.form.get("email", "")


def _own_email() -> str:
    return getattr(current_user, "email", "")


def too_many_attempts(render) -> Response:
    """The 429 page: `render()` (the form's own page) with a message saying when to retry."""
    seconds = seconds_to_retry(current_app.extensions["scoreline_limiter"])
    flash(f"Too many failed attempts. Try again in {seconds} seconds.", "error")
    response = make_response(render(), 429)
    response.headers["Retry-After"] = str(seconds)
    return response


def limit_failures(limiter: Limiter, blueprint, endpoint: str, email_tried, *, failure: int):
    """Both limits on POSTs to `endpoint` (of `blueprint`), counting `failure` answers only.

    The limits are shared: one counter per email and one per address, whichever form failed.
    """
    common = {
        "methods": ["POST"],
        "exempt_when": lambda: request.endpoint != endpoint,
        "deduct_when": lambda response: response.status_code == failure,
        "override_defaults": False,
    }
    limiter.shared_limit(
        _setting("RATE_LIMIT_LOGIN_ACCOUNT"),
        scope="login-account",
        key_func=lambda: "account:" + _digest(normalise_email(email_tried())),
        **common,
    )(blueprint)
    limiter.shared_limit(
        _setting("RATE_LIMIT_LOGIN_IP"),
        scope="login-ip",
        key_func=lambda: f"ip:{request.remote_addr or 'unknown'}",
        **common,
    )(blueprint)


def _setting(name: str):
    return lambda: current_app.config[name]


def _digest(email: str) -> str:
    """Emails are counted by hash: fixed-length keys, and no addresses in Redis."""
    return hashlib.sha256(email.encode()).hexdigest()[:32]
