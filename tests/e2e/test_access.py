"""What the browser must refuse: forged form posts and other students' work."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.e2e.support import log_in, screenshot

pytestmark = pytest.mark.e2e


def test_a_form_post_without_csrf_token_is_refused(page, api):
    log_in(page)
    page.locator("form[action='/assessments'] input[name=csrf_token]").evaluate_all(
        "inputs => inputs.forEach(input => input.remove())"
    )
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.get_by_test_id("start-python-basics").click()
    assert posted.value.status == 400
    expect(page.get_by_role("heading", name="Form not accepted")).to_be_visible()
    screenshot(page, "csrf-refused")
    assert api.get("/assessments").json()["assessments"] == []


def test_another_students_assessment_is_not_visible(page, api):
    theirs = api.start()
    log_in(page, "other")
    expect(page.get_by_test_id(f"assessment-{theirs['id']}")).to_have_count(0)
    expect(page.get_by_text("No assessments yet.")).to_be_visible()

    for path in ("", "/submit", "/progress", "/result"):
        response = page.goto(f"/assessments/{theirs['id']}{path}")
        assert response.status == 403, path
        expect(page.get_by_test_id("error-page")).to_contain_text("another account")
    screenshot(page, "forbidden")
    assert page.goto("/assessments/999999/progress").status == 404
