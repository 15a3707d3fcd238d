"""Sessions that end: logout and a new login end the old session server-side, on every path
(HTML pages, the API, the polled partial answered before Flask), and a request is judged by
one credential only."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tests.support import (
    ADMIN,
    STUDENT,
    csrf_token,
    eventually,
    get_noting_flask,
    live_near_cache,
    log_in,
    sibling_app,
)
from webapp.extensions import db
from webapp.models import Assessment, WebhookEndpoint

pytestmark = pytest.mark.db

HTMX = {"HX-Request": "true"}
JUNK_BEARER = {"Authorization": "Bearer junk"}


def session_cookie(client) -> str:
    return client.get_cookie("session").value


def with_cookie(app, cookie: str):
    """A new browser holding a copy of a session cookie."""
    copy = app.test_client()
    copy.set_cookie("session", cookie)
    return copy


def log_out(client) -> None:
    response = client.post("/logout", data={"csrf_token": csrf_token(client, "/account")})
    assert response.status_code == 302


def assert_logged_out(browser, in_progress: int) -> None:
    """The account page, the API and the polled partial all refuse this browser's session."""
    page = browser.get("/account")
    assert page.status_code == 302 and "/login" in page.headers["Location"]
    assert browser.get("/api/v1/assessments").status_code == 401
    partial = browser.get(f"/assessments/{in_progress}/progress/live", headers=HTMX)
    assert partial.headers.get("HX-Redirect", "").startswith("/login")
    assert partial.get_data() == b""


def test_a_cookie_copied_before_logout_opens_nothing_after_it(app, client, in_progress):
    live_near_cache(app)
    log_in(client, STUDENT)
    url = f"/assessments/{in_progress}/progress/live"
    client.get(url, headers=HTMX)  # builds the partial; this process vouches for the cookie
    served, through_flask = get_noting_flask(app, client, url, headers=HTMX)
    assert served.status_code == 200 and not through_flask  # from memory, before Flask
    copied = session_cookie(client)
    assert with_cookie(app, copied).get("/account").status_code == 200

    log_out(client)

    _, through_flask = get_noting_flask(app, with_cookie(app, copied), url, headers=HTMX)
    assert through_flask  # the shortcut no longer vouches for it
    assert_logged_out(with_cookie(app, copied), in_progress)


def test_logout_in_another_process_ends_the_session_here_too(app, client, in_progress):
    here = sibling_app(app)
    live_near_cache(here)
    log_in(client, STUDENT)
    copied = session_cookie(client)
    browser = with_cookie(here, copied)
    url = f"/assessments/{in_progress}/progress/live"
    browser.get(url, headers=HTMX)
    assert not get_noting_flask(here, browser, url, headers=HTMX)[1]  # served from memory

    log_out(client)  # through the session's app: another process

    eventually(lambda: get_noting_flask(here, browser, url, headers=HTMX)[1])
    assert_logged_out(with_cookie(here, copied), in_progress)


def test_logout_ends_the_accounts_other_browser_sessions_too(app, in_progress):
    laptop, phone = app.test_client(), app.test_client()
    log_in(laptop, STUDENT)
    log_in(phone, STUDENT)
    log_out(laptop)
    assert_logged_out(phone, in_progress)
    log_in(phone, STUDENT)  # and a new login works again
    assert phone.get("/account").status_code == 200


def test_a_pre_login_csrf_token_fails_after_login(app, client):
    before = csrf_token(client)
    cookie_before = session_cookie(client)
    response = client.post(
        "/login", data={"csrf_token": before, "email": STUDENT[0], "password": STUDENT[1]}
    )
    assert response.status_code == 302
    assert session_cookie(client) != cookie_before
    stale = client.post("/account/tokens", data={"csrf_token": before, "name": "stale"})
    assert stale.status_code == 400
    fresh = client.post(
        "/account/tokens", data={"csrf_token": csrf_token(client, "/account"), "name": "fresh"}
    )
    assert fresh.status_code == 201


def test_a_session_without_its_generation_opens_nothing(app, in_progress):
    """A session made before generations existed (or by hand) counts as logged out."""
    browser = app.test_client()
    with app.app_context():
        student_id = db.session.scalar(
            select(Assessment.user_id).where(Assessment.id == in_progress)
        )
    with browser.session_transaction() as session:
        session["_user_id"] = str(student_id)
        session["_fresh"] = True
    assert_logged_out(browser, in_progress)


# --- one way in per request -------------------------------------------------------------


@pytest.fixture()
def admin_browser(app):
    """An admin logged in through the form, with the session's CSRF token as `.csrf`."""
    browser = app.test_client()
    browser.csrf = log_in(browser, ADMIN)
    return browser


def test_an_invalid_bearer_header_beside_a_valid_cookie_is_401_and_changes_nothing(
    app, admin_browser, tokens
):
    admin = {"Authorization": f"Bearer {tokens['admin']}"}
    created = admin_browser.post(
        "/api/v1/webhook-endpoints",
        json={"url": "https://hooks.example.invalid/one-way-in", "description": "before"},
        headers=admin,
    )
    assert created.status_code == 201, created.get_data(as_text=True)
    endpoint = created.get_json()["id"]
    draft = admin_browser.post(
        "/api/v1/assessments", json={"question_set": "python-basics"}, headers=admin
    ).get_json()
    question = draft["questions"][0]["id"]

    for junk in (JUNK_BEARER, {"Authorization": "Bearer "}, {"Authorization": "bearer x y"}):
        answers = [
            admin_browser.put(
                f"/api/v1/assessments/{draft['id']}/responses",
                json={"responses": [{"question_id": question, "answer": "b"}]},
                headers=junk,
            ),
            admin_browser.patch(
                f"/api/v1/webhook-endpoints/{endpoint}",
                json={"description": "changed"},
                headers=junk,
            ),
            admin_browser.delete(f"/api/v1/webhook-endpoints/{endpoint}", headers=junk),
            admin_browser.get("/api/v1/webhook-endpoints", headers=junk),
        ]
        assert [a.status_code for a in answers] == [401] * 4, junk
        assert {a.get_json()["code"] for a in answers} == {"UNAUTHORIZED"}

    with app.app_context():
        row = db.session.get(WebhookEndpoint, endpoint)
        assert row is not None and row.description == "before"
        assert db.session.get(Assessment, draft["id"]).responses == []


def test_a_valid_bearer_header_beside_a_cookie_acts_as_the_token_alone(admin_browser, tokens):
    mine = admin_browser.get(
        "/api/v1/webhook-endpoints", headers={"Authorization": f"Bearer {tokens['student']}"}
    )
    assert mine.status_code == 403  # the student the token names, not the admin of the cookie


def test_another_scheme_beside_a_cookie_still_needs_the_csrf_token(admin_browser):
    """A proxy's Basic auth is not ours: the cookie decides, and its writes need CSRF."""
    basic = {"Authorization": "Basic dXNlcjpwYXNz"}
    body = {"question_set": "python-basics"}
    refused = admin_browser.post("/api/v1/assessments", json=body, headers=basic)
    assert refused.status_code == 400
    allowed = admin_browser.post(
        "/api/v1/assessments", json=body, headers={**basic, "X-CSRFToken": admin_browser.csrf}
    )
    assert allowed.status_code == 201


def test_the_partial_is_not_served_on_a_cookie_beside_a_junk_bearer(app, client, in_progress):
    live_near_cache(app)
    log_in(client, STUDENT)
    url = f"/assessments/{in_progress}/progress/live"
    client.get(url, headers=HTMX)
    assert not get_noting_flask(app, client, url, headers=HTMX)[1]
    refused, through_flask = get_noting_flask(app, client, url, headers={**HTMX, **JUNK_BEARER})
    assert through_flask and refused.headers.get("HX-Redirect", "").startswith("/login")


def test_a_generation_read_before_its_sessions_ended_is_not_taken_in(app):
    """The race: a poll reads the account's session generation, the account logs out
    elsewhere, then the poll keeps what it read. The end arrived after the poll's ticket, so
    the generation is not kept, and no cookie of it is served from memory."""
    near = live_near_cache(app)
    ticket = near.ticket()
    near.changed(("s", "4242"))  # as the listener applies another process's logout
    near.learn(ticket, ("s", "4242"), 7)
    assert near.get(("s", "4242")) is None
    near.learn(near.ticket(), ("s", "4242"), 8)  # read after the end: kept
    assert near.get(("s", "4242")) == 8
