"""Rotating the account's signing secret in Chromium: the confirmation is required, then the
page shows the new secret and until when the old one still signs."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.e2e.support import log_in, screenshot

pytestmark = pytest.mark.e2e

SECRET = re.compile(r"^whsec_[A-Za-z0-9+/]{43}=$")


def test_a_student_rotates_their_signing_secret_after_confirming(page):
    log_in(page, "other")
    page.get_by_role("link", name="Account").click()
    page.get_by_text("Show signing secret").click()
    before = page.get_by_test_id("signing-secret").input_value()
    assert SECRET.match(before)

    rotate = page.get_by_role("button", name="Rotate signing secret")
    rotate.click()  # unconfirmed: the browser keeps the form (the box is required)
    expect(page.get_by_test_id("flash")).to_have_count(0)
    page.get_by_label("Receivers must switch to the new secret within 24 hours").check()
    rotate.click()

    expect(page.get_by_test_id("flash")).to_contain_text("New signing secret created")
    expect(page.get_by_test_id("signing-secret-grace")).to_contain_text("also signs until")
    page.get_by_text("Show signing secret").click()
    after = page.get_by_test_id("signing-secret").input_value()
    assert SECRET.match(after) and after != before
    screenshot(page, "account-secret-rotated")
