"""The account page: API tokens shown once and revocable, and the webhook signing secret."""

from __future__ import annotations

import re

import pytest
import requests
from playwright.sync_api import expect

from tests.e2e.support import log_in, screenshot

pytestmark = pytest.mark.e2e


def test_token_is_shown_once_works_and_stops_working_when_revoked(page, live_server):
    log_in(page)
    page.get_by_role("link", name="Account").click()
    page.get_by_label("Token name").fill("grading <b>script</b>")
    page.get_by_role("button", name="Create token").click()

    token = page.get_by_test_id("new-token-value").input_value()
    assert token.startswith("sl_")
    expect(page.get_by_role("cell", name="grading <b>script</b>", exact=True)).to_be_visible()
    page.get_by_text("Show signing secret").click()
    expect(page.get_by_test_id("signing-secret")).to_have_value(
        re.compile(r"^whsec_[A-Za-z0-9+/]{43}=$")
    )
    screenshot(page, "account")

    api_url = f"{live_server.url}/api/v1/assessments"
    bearer = {"Authorization": f"Bearer {token}"}
    assert requests.get(api_url, headers=bearer, timeout=10).status_code == 200

    page.goto("/account")
    assert token not in page.content()
    asked: list[str] = []
    page.once("dialog", lambda dialog: asked.append(dialog.message) or dialog.accept())
    page.get_by_role("button", name="Revoke token grading <b>script</b>").click()
    expect(page.get_by_test_id("flash")).to_contain_text("revoked")
    assert asked == ["Revoke token grading <b>script</b>? Anything using it stops working at once."]
    assert requests.get(api_url, headers=bearer, timeout=10).status_code == 401
