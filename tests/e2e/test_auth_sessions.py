"""Logins in a real Chromium: a hostile `next` never leads off the site, and changing the
password logs the account's other browsers out."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.support import screenshot

pytestmark = pytest.mark.e2e


def fill_login(page: Page, email: str, password: str) -> None:
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


@pytest.mark.parametrize(
    "raw_next", ["%2F%09%2Fevil.example", "/%0A/evil.example", "/%5Cevil.example", "//evil.example"]
)
def test_a_hostile_next_lands_on_the_dashboard(page, live_server, account, raw_next):
    page.goto(f"/login?next={raw_next}")
    fill_login(page, *account)
    expect(page.get_by_role("heading", name="Assessments", exact=True)).to_be_visible()
    here = urlsplit(page.url)
    assert (here.hostname, here.port, here.path) == (
        "127.0.0.1",
        live_server.server.server_port,
        "/",
    )


def test_changing_the_password_logs_other_browsers_out(page, new_page, live_server, account):
    email, password = account
    elsewhere = new_page(live_server.url)
    for browser_page in (page, elsewhere):
        browser_page.goto("/login")
        fill_login(browser_page, email, password)
        expect(browser_page.get_by_role("heading", name="Assessments", exact=True)).to_be_visible()

    page.goto("/account")
    page.get_by_label("Current password").fill(password)
    page.get_by_label("New password", exact=True).fill("second-password-2")
    page.get_by_label("New password again").fill("second-password-2")
    page.get_by_role("button", name="Change password").click()
    expect(page.get_by_test_id("flash")).to_have_text(
        "Password changed. Every other session of this account is logged out."
    )
    screenshot(page, "password-changed")

    elsewhere.goto("/account")
    expect(elsewhere.get_by_role("heading", name="Log in")).to_be_visible()
    fill_login(elsewhere, email, "second-password-2")  # back where it was asked to go
    expect(elsewhere.get_by_role("heading", name="Account", exact=True)).to_be_visible()
