"""Throttled logins (per email tried and per address, 429 with Retry-After) and no email oracle
in the answer time."""

from __future__ import annotations

import statistics
import time
import uuid

import pytest

from tests.support import ADMIN, OTHER_STUDENT, STUDENT, csrf_token, flashes
from webapp import create_app

pytestmark = pytest.mark.db


@pytest.fixture()
def throttled(app):
    """build(**limits): an app on the session's database and Redis with its own counters."""

    def build(**limits):
        return create_app(
            {
                "TESTING": True,
                "SQLALCHEMY_DATABASE_URI": app.config["SQLALCHEMY_DATABASE_URI"],
                "REDIS_URL": app.config["REDIS_URL"],
                "SECRET_KEY": app.config["SECRET_KEY"],
                "RATELIMIT_KEY_PREFIX": f"test-login-{uuid.uuid4().hex}",
                "RATE_LIMIT_LOGIN_ACCOUNT": "3/minute",
                "RATE_LIMIT_LOGIN_IP": "5/minute",
                **limits,
            }
        )

    return build


def attempt(client, email: str, password: str, address: str = "203.0.113.7"):
    """One login attempt from `address`."""
    environ = {"REMOTE_ADDR": address}
    token = csrf_token(client)
    return client.post(
        "/login",
        data={"csrf_token": token, "email": email, "password": password},
        environ_base=environ,
    )


def assert_throttled(response) -> None:
    assert response.status_code == 429
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    assert flashes(response) == [f"Too many failed attempts. Try again in {retry_after} seconds."]
    assert 'name="email"' in response.get_data(as_text=True)  # the login page itself


def test_failed_logins_per_account_are_limited_even_for_the_right_password(throttled):
    client = throttled().test_client()
    for address in ("203.0.113.1", "203.0.113.2", "203.0.113.3"):  # spread over addresses
        assert attempt(client, STUDENT[0], "wrong-guess", address).status_code == 400
    assert_throttled(attempt(client, STUDENT[0], STUDENT[1], "203.0.113.4"))
    assert_throttled(attempt(client, STUDENT[0].upper(), STUDENT[1], "203.0.113.5"))
    # Another account is not held up by this one.
    assert attempt(client, ADMIN[0], ADMIN[1], "203.0.113.6").status_code == 302


def test_failed_logins_per_address_are_limited_across_accounts(throttled):
    client = throttled().test_client()
    for n in range(5):  # five different emails, none over its own limit
        assert attempt(client, f"nobody-{n}@example.com", "guess-guess").status_code == 400
    assert_throttled(attempt(client, OTHER_STUDENT[0], OTHER_STUDENT[1]))
    assert attempt(client, OTHER_STUDENT[0], OTHER_STUDENT[1], "198.51.100.9").status_code == 302


def test_successful_logins_are_not_counted(throttled):
    site = throttled(RATE_LIMIT_LOGIN_ACCOUNT="2/minute", RATE_LIMIT_LOGIN_IP="2/minute")
    for _ in range(4):
        assert attempt(site.test_client(), STUDENT[0], STUDENT[1]).status_code == 302


def test_wrong_current_passwords_count_against_the_account_too(throttled):
    site = throttled(RATE_LIMIT_LOGIN_ACCOUNT="2/minute")
    browser = site.test_client()
    assert attempt(browser, OTHER_STUDENT[0], OTHER_STUDENT[1]).status_code == 302
    data = {"current": "not-it-at-all", "new": "whatever-new-1", "confirm": "whatever-new-1"}
    for _ in range(2):
        data["csrf_token"] = csrf_token(browser, "/account")
        assert browser.post("/account/password", data=data).status_code == 422
    data["csrf_token"] = csrf_token(browser, "/account")
    refused = browser.post("/account/password", data=data)
    assert refused.status_code == 429 and "Retry-After" in refused.headers
    assert "Too many failed attempts" in refused.get_data(as_text=True)
    # The same counter guards the login form for this account.
    assert attempt(site.test_client(), OTHER_STUDENT[0], OTHER_STUDENT[1]).status_code == 429


@pytest.mark.parametrize(
    ("name", "value"),
    [("RATE_LIMIT_LOGIN_ACCOUNT", "lots"), ("RATE_LIMIT_LOGIN_IP", "5/fortnight")],
)
def test_a_garbled_limit_setting_stops_the_app_from_starting(throttled, name, value):
    with pytest.raises(RuntimeError, match=name):
        throttled(**{name: value})


def test_an_unknown_email_costs_as_long_as_a_known_one(app):
    """The answer time must not tell which emails have accounts: both check a password hash."""
    client = app.test_client()  # the session's app: limits far away
    token = csrf_token(client)

    def timed(email: str) -> float:
        started = time.perf_counter()
        response = client.post(
            "/login", data={"csrf_token": token, "email": email, "password": "wrong-guess"}
        )
        elapsed = time.perf_counter() - started
        assert response.status_code == 400
        return elapsed

    timed(STUDENT[0]), timed("warm-up@example.com")  # first calls build caches
    known, unknown = [], []
    for n in range(7):  # interleaved, so machine load hits both alike
        known.append(timed(STUDENT[0]))
        unknown.append(timed(f"nobody-{n}@example.com"))
    ratio = statistics.median(unknown) / statistics.median(known)
    assert 0.5 <= ratio <= 2.0, (known, unknown)


def test_a_head_request_for_the_login_page_is_answered_like_a_get(client):
    """Uptime checks send HEAD: the login page is there (200), not a failed login (400)."""
    assert client.head("/login").status_code == 200
    assert client.get("/login").status_code == 200
