"""The admin operations overview in Chromium: panels, charts and filters at 1280 and 375 px."""

from __future__ import annotations

from datetime import timedelta

import pytest
from playwright.sync_api import expect

from tests.e2e.support import log_in, screenshot
from tests.support import add_assessment, failing_remove
from webapp.models.base import utcnow
from webapp.scoring.vocabulary import AssessmentStatus

pytestmark = [pytest.mark.e2e, pytest.mark.db]


def test_admin_reads_the_operations_overview(app, page, worker, tmp_path):
    now = utcnow()
    for hours_ago, status, degraded in [
        (0, AssessmentStatus.COMPLETED, False),
        (1, AssessmentStatus.COMPLETED, True),
        (3, AssessmentStatus.FAILED, False),
        (3, AssessmentStatus.COMPLETED, False),
    ]:
        at = now - timedelta(hours=hours_ago)
        add_assessment(app, status, degraded=degraded, created_at=at, completed_at=at)
    add_assessment(app, AssessmentStatus.DRAFT)
    job = failing_remove(app, tmp_path / "missing")

    log_in(page, "admin")
    page.get_by_role("link", name="Admin", exact=True).click()
    page.get_by_role("navigation", name="Admin").get_by_role("link", name="Operations").click()
    expect(page.get_by_role("heading", name="Operations", exact=True)).to_be_visible()
    expect(page.get_by_test_id("worker-alive").first).to_have_text("Alive")
    expect(page.locator(f'[data-job-id="{job.id}"]')).to_contain_text("FileNotFoundError")
    expect(page.get_by_role("img", name="Scoring throughput")).to_be_visible()
    expect(page.get_by_test_id("assessment-row")).to_have_count(5)
    screenshot(page, "admin-operations")

    page.get_by_label("Status").select_option("completed")
    page.get_by_label("Partial report").select_option("yes")
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_test_id("assessment-row")).to_have_count(1)
