"""Live progress against workers whose essay scorer is a real (local) OpenAI-compatible server."""

from __future__ import annotations

import dataclasses
import re

import pytest
from playwright.sync_api import expect

from tests.e2e.support import (
    SLOW_ESSAY_SECONDS,
    assert_never_decreasing,
    log_in,
    screenshot,
    start_and_submit,
    watch_until_finished,
)
from tests.openai_server import Reply, rubric_reply

pytestmark = pytest.mark.e2e

# Before and after a worker picks the job up.
IN_FLIGHT_WORDS = re.compile("Waiting to be scored|Being scored")


def test_bars_rise_step_by_step_and_the_dashboard_follows(new_page, scoring_site):
    site = scoring_site(
        dataclasses.replace(rubric_reply(), delay=SLOW_ESSAY_SECONDS),
        dataclasses.replace(rubric_reply(), delay=SLOW_ESSAY_SECONDS / 2),
    )
    page = new_page(site)
    log_in(page)
    assessment_id = start_and_submit(
        page, ("Recursion: a base case and a recursive call.", "A class makes instances.")
    )

    dashboard = new_page(site)
    log_in(dashboard)
    mini_bar = dashboard.get_by_test_id(f"assessment-{assessment_id}-progress")
    expect(mini_bar).to_be_visible()
    expect(dashboard.get_by_test_id("status-badge")).to_have_text(IN_FLIGHT_WORDS)
    screenshot(dashboard, "dashboard-live")

    poll_tokens: list[str | None] = []
    page.on(
        "request",
        lambda r: (
            poll_tokens.append(r.headers.get("x-csrftoken")) if "/progress/live" in r.url else None
        ),
    )
    samples = watch_until_finished(page)
    assert_never_decreasing(samples)
    meta_token = page.locator("meta[name=csrf-token]").get_attribute("content")
    assert poll_tokens and set(poll_tokens) == {meta_token}, "htmx must send the CSRF token"
    overall = [s["overall-progress"] for s in samples]
    gpt = [s["stage-gpt"] for s in samples]
    assert overall[-1] == 100 and overall[0] < 100
    assert any(0 < value < 100 for value in gpt), f"gpt never seen part-way: {gpt}"
    assert len(set(overall)) >= 3, f"overall should rise in steps: {overall}"

    expect(dashboard.get_by_test_id("status-badge")).to_have_text("Scored")
    expect(mini_bar).to_have_count(0)
    list_polls: list[str] = []
    dashboard.on("request", lambda r: list_polls.append(r.url))
    dashboard.wait_for_timeout(3_000)
    assert list_polls == [], f"the dashboard kept polling: {list_polls}"

    page.get_by_test_id("result-link").click()
    expect(page.get_by_test_id("essay-scorer").first).to_contain_text("OpenAI (test-model)")
    expect(page.get_by_test_id("rubric-relevance").first).to_contain_text("8/10")


def test_a_provider_down_too_long_gets_offline_scores_and_the_report_says_why(
    new_page, scoring_site
):
    site = scoring_site(
        Reply(status=500, body={"error": {"message": "upstream broke"}}),
        LLM_MAX_WAIT="2",
        LLM_BREAKER_FAILURES="2",
        LLM_BREAKER_COOLDOWN="1",
    )
    page = new_page(site)
    log_in(page)
    assessment_id = start_and_submit(
        page, ("Recursion needs a base case so the call stack stops growing.",)
    )

    watch_until_finished(page)
    expect(page.get_by_test_id("stage-gpt")).to_have_attribute("aria-valuetext", "100%, Done")
    expect(page.get_by_test_id("stage-rag")).to_have_attribute("aria-valuetext", "100%, Done")
    expect(page.get_by_test_id("stage-scorer")).to_contain_text("the offline rubric scorer")
    screenshot(page, "progress-provider-down")

    page.get_by_test_id("result-link").click()
    notice = page.get_by_test_id("degraded-notice")
    expect(notice).to_contain_text("This report is partial")
    expect(notice).to_contain_text("was scored by the offline rubric scorer, because the AI")
    expect(notice).not_to_contain_text("HTTP 500")  # the provider's answer is for admins
    expect(page.get_by_test_id("essay-scorer").first).not_to_contain_text("OpenAI")
    screenshot(page, "result-degraded")

    page.get_by_role("link", name="Back to your assessments").click()
    row = page.get_by_test_id(f"assessment-{assessment_id}")
    # Every part was scored (some essays offline): no "Partly scored", which means a failed stage.
    expect(row.get_by_test_id("status-badge")).to_have_text("Scored")
    expect(row.get_by_test_id(f"assessment-{assessment_id}-score")).to_contain_text("%")

    # An admin scores the partial assessment again from its page.
    admin = new_page(site)
    log_in(admin, "admin")
    admin.goto(f"/assessments/{assessment_id}/result")
    expect(admin.get_by_test_id("essay-fallback")).to_contain_text("OpenAI API was unavailable")
    expect(admin.get_by_test_id("essay-fallback")).to_contain_text("HTTP 500")
    admin.goto(f"/assessments/{assessment_id}/progress")
    admin.get_by_test_id("rescore").click()
    expect(admin.get_by_test_id("flash")).to_contain_text("Scoring again")
    expect(admin.get_by_test_id("status-badge")).to_have_text(IN_FLIGHT_WORDS)
    watch_until_finished(admin)
    screenshot(admin, "progress-rescored-admin")
