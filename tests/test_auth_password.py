"""Changing the password on the account page ends every other session of the account."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tests.support import ACCOUNT_PASSWORD, csrf_token, flashes, log_in
from webapp.extensions import db
from webapp.models import User
from webapp.services.logins import authenticate

pytestmark = pytest.mark.db

OLD, NEW = ACCOUNT_PASSWORD, "new-password-2"


def change(browser, current: str, new: str, confirm: str | None = None, token: str | None = None):
    data = {"current": current, "new": new, "confirm": new if confirm is None else confirm}
    data["csrf_token"] = token or csrf_token(browser, "/account")
    return browser.post("/account/password", data=data)


def test_a_password_change_ends_every_other_session(app, account):
    email, _ = account
    here, elsewhere = app.test_client(), app.test_client()
    log_in(here, account)
    log_in(elsewhere, account)
    cookie_before = here.get_cookie("session").value

    response = change(here, OLD, NEW)

    assert response.status_code == 302 and response.headers["Location"] == "/account"
    page = here.get("/account")
    assert page.status_code == 200  # this browser goes on, on a new session
    assert flashes(page) == ["Password changed. Every other session of this account is logged out."]
    assert elsewhere.get("/account").status_code == 302
    assert elsewhere.get("/api/v1/assessments").status_code == 401
    copy = app.test_client()
    copy.set_cookie("session", cookie_before)
    assert copy.get("/account").status_code == 302  # this browser's old cookie too
    with app.app_context():
        assert authenticate(email, OLD) is None
        assert authenticate(email, NEW) is not None


@pytest.mark.parametrize(
    ("current", "new", "confirm", "message"),
    [
        ("wrong-password", NEW, NEW, "The current password is not right."),
        (OLD, NEW, NEW + "x", "The new password and its repetition differ."),
        (OLD, "short", "short", "A password needs 8 to 200 characters."),
        (OLD, OLD, OLD, "The new password is the same as the current one."),
        ("", NEW, NEW, "The current password is not right."),
    ],
)
def test_a_rejected_change_says_why_and_changes_nothing(
    app, account, current, new, confirm, message
):
    browser = app.test_client()
    log_in(browser, account)
    response = change(browser, current, new, confirm)
    assert response.status_code == 422
    assert flashes(response) == [message]
    assert browser.get("/account").status_code == 200  # still logged in
    with app.app_context():
        assert authenticate(account[0], OLD) is not None


def test_an_overlong_password_is_a_message_not_a_500(app, account):
    browser = app.test_client()
    log_in(browser, account)
    response = change(browser, OLD, "x" * 5000)
    assert response.status_code == 422 and flashes(response)


def test_a_change_without_the_csrf_token_is_refused(app, account):
    browser = app.test_client()
    log_in(browser, account)
    response = browser.post("/account/password", data={"current": OLD, "new": NEW, "confirm": NEW})
    assert response.status_code == 400
    with app.app_context():
        user = db.session.scalar(select(User).where(User.email == account[0]))
        assert user.check_password(OLD)


def test_the_account_page_has_a_labelled_password_form(app, account):
    browser = app.test_client()
    log_in(browser, account)
    html = browser.get("/account").get_data(as_text=True)
    for label, field in [
        ("Current password", "current-password"),
        ("New password", "new-password"),
        ("New password again", "confirm-password"),
    ]:
        assert f'<label for="{field}">{label}</label>' in html
    assert 'minlength="8"' in html and 'autocomplete="new-password"' in html
