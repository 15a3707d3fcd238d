"""Answers are never lost (autosave, a leave-page warning); times read in the viewer's zone."""

from __future__ import annotations

import re
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from tests.e2e.support import log_in
from webapp.extensions import db
from webapp.models import AuditEntry

pytestmark = pytest.mark.e2e

ESSAY = "Recursion solves a problem by solving smaller copies of it, down to a base case."


def test_an_essay_saves_itself_and_leaving_before_it_has_asks_first(page):
    log_in(page)
    page.get_by_test_id("start-python-basics").click()
    essay = page.get_by_label("Explain how recursion works")

    # Typed, and a link followed at once (before the autosave second is up): the page asks.
    essay.fill(ESSAY)
    asked: list[str] = []

    def stay(dialog) -> None:
        asked.append(dialog.type)
        dialog.dismiss()

    page.once("dialog", stay)
    page.get_by_role("link", name="Assessments").first.click()
    page.wait_for_timeout(500)
    assert asked == ["beforeunload"]
    expect(essay).to_have_value(ESSAY)

    # A second later it is saved without any button, and leaving no longer asks.
    expect(page.get_by_test_id("autosave-saved")).to_be_visible()
    page.on("dialog", lambda dialog: asked.append(dialog.type) or dialog.dismiss())
    page.get_by_role("link", name="Assessments").first.click()
    expect(page.get_by_role("heading", name="Assessments", exact=True)).to_be_visible()
    assert asked == ["beforeunload"]
    page.get_by_role("link", name="Continue").first.click()
    expect(page.get_by_label("Explain how recursion works")).to_have_value(ESSAY)


def test_times_show_in_the_viewers_zone_with_the_exact_moment_on_hover(new_page, live_server, api):
    assessment = api.start()
    page = new_page(live_server.url, timezone_id="Asia/Kolkata", locale="en-GB")
    log_in(page)
    started = page.get_by_test_id(f"assessment-{assessment['id']}").locator("time")
    expect(started).to_have_attribute("data-localised", "1")
    expect(started).to_have_text(re.compile(r"^(just now|\d+ seconds? ago)$"))
    moment = datetime.fromisoformat(started.get_attribute("datetime"))
    local = moment.astimezone(ZoneInfo("Asia/Kolkata"))
    title = started.get_attribute("title")
    assert f"{local:%H:%M:%S}" in title and "UTC" not in title, title


def test_recover_since_is_typed_in_the_viewers_zone_and_sent_as_utc(new_page, live_server, app):
    page = new_page(live_server.url, timezone_id="Asia/Kolkata")
    log_in(page, "admin")
    page.goto("/admin/webhooks")
    page.get_by_label("Endpoint URL").fill("https://hooks.example.com/zone")
    page.get_by_role("button", name="Add endpoint").click()
    since = page.get_by_label("Since (your time)")
    since.fill("2026-11-30T10:30")  # 10:30 in Kolkata is 05:00 UTC
    page.get_by_role("button", name="Recover failed deliveries").click()
    expect(page.get_by_test_id("flash")).to_contain_text("Sending 0 deliveries again")
    with app.app_context():
        entry = db.session.scalar(
            select(AuditEntry)
            .where(AuditEntry.action == "webhook_endpoint.recovered")
            .order_by(AuditEntry.id.desc())
        )
    assert entry.details["since"].startswith("2026-11-30T05:00")
