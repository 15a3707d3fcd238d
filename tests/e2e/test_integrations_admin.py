"""The admin integrations page in Chromium, and a student's way in by sign-in link: add an
integration, give it a scoped token, watch its student and activity appear, revoke the token;
the student opens the link onto their live progress page."""

from __future__ import annotations

import pytest
import requests
from playwright.sync_api import Page, expect

from tests.e2e.support import log_in, screenshot

pytestmark = [pytest.mark.e2e, pytest.mark.db]


def add_integration(page: Page) -> None:
    page.goto("/admin/integrations")
    expect(page.get_by_role("heading", name="Integrations", exact=True)).to_be_visible()
    page.get_by_label("Name").fill("<i>Moodle</i> north")
    page.get_by_label("Contact email").fill("moodle-north@example.edu")
    page.get_by_role("button", name="Add integration").click()
    expect(page.get_by_test_id("flash")).to_contain_text("added")
    expect(page.get_by_role("heading", name="<i>Moodle</i> north")).to_be_visible()  # escaped


def create_token(page: Page) -> str:
    page.get_by_text("Create a token for").click()
    page.get_by_label("Token name").fill("production")
    page.get_by_label("webhooks").uncheck()
    page.get_by_label("Expires after (days; empty: never)").fill("30")
    page.get_by_role("button", name="Create token").click()
    expect(page.get_by_test_id("new-token")).to_be_visible()
    token = page.get_by_test_id("new-token-value").input_value()
    assert token.startswith("sl_")
    expect(page.get_by_test_id("integration-tokens")).to_contain_text("read write")
    return token


def test_admin_manages_an_integration_and_its_student_signs_in_by_link(
    new_page, live_server, worker
):
    page = new_page(live_server.url)
    log_in(page, "admin")
    add_integration(page)
    token = create_token(page)

    api = requests.Session()
    api.headers["Authorization"] = f"Bearer {token}"
    base = f"{live_server.url}/api/v1"
    created = api.post(
        f"{base}/assessments", json={"question_set": "python-basics", "external_id": "s-1001"}
    )
    assert created.status_code == 201, created.text
    assessment_id = created.json()["id"]
    assert api.post(f"{base}/assessments/{assessment_id}/submit").status_code == 202
    link = api.post(f"{base}/assessments/{assessment_id}/sign-in-link").json()["url"]
    refused = api.post(f"{base}/assessments/{assessment_id}/webhook", json={"webhook_url": "x"})
    assert refused.json()["code"] == "INSUFFICIENT_SCOPE"

    page.goto("/admin/integrations")
    expect(page.get_by_test_id("integration-summary")).to_contain_text("1 student")
    activity = page.get_by_test_id("integration-activity")
    expect(activity).to_contain_text("sign_in_link.issued")
    expect(activity).to_contain_text("s-1001")
    screenshot(page, "admin-integrations")

    student = new_page(live_server.url)
    student.goto(link)
    expect(student.get_by_role("heading", name="Open your assessment")).to_be_visible()
    screenshot(student, "sign-in-link")
    student.get_by_role("button", name="Open my assessment").click()
    expect(student).to_have_url(f"{live_server.url}/assessments/{assessment_id}/progress")
    expect(student.get_by_test_id("overall-progress")).to_be_visible()
    expect(student.get_by_role("link", name="Account")).to_have_count(0)
    student.goto(link)
    expect(student.get_by_test_id("error-page")).to_contain_text("used already")

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Revoke token production of <i>Moodle</i> north").click()
    expect(page.get_by_test_id("flash")).to_contain_text("revoked")
    assert api.get(f"{base}/assessments").status_code == 401
