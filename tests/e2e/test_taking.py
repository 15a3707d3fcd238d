"""A student takes an assessment in the browser and watches it being scored, live."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.support import assert_never_decreasing, log_in, screenshot, watch_until_finished

pytestmark = pytest.mark.e2e

ESSAY = (
    "Recursion is when a function calls itself on a smaller input. Every recursive function "
    "needs a base case, otherwise the call stack grows until Python raises RecursionError at "
    "the recursion limit. For example, factorial(n) returns 1 when n is 0, else "
    "n * factorial(n - 1). Because each recursive call adds a frame to the call stack, deep "
    "recursion is slow in Python, so I would use iteration with a loop instead."
)
XSS_ESSAY = "<script>window.__xss = 1</script> Recursion needs a base case & a recursive call."
XSS_PROFILE = '<img src="x" onerror="window.__xss = 2"> two years'


def answer_python_basics(page: Page) -> None:
    """Answer every question of python-basics except the second essay."""
    for number, option in enumerate(["2", "yield", "tuple", "try/except", "[0, 2, 4]"], 1):
        page.get_by_test_id(f"question-{number}").get_by_label(option, exact=True).check()
    page.get_by_label("How long have you been programming").fill("Three years, mostly Flask.")
    page.get_by_label("Explain how recursion works").fill(ESSAY)


def test_student_takes_saves_submits_and_reads_the_result(page, worker):
    page.goto("/login")
    screenshot(page, "login")
    log_in(page)
    screenshot(page, "dashboard-empty")

    page.get_by_test_id("start-python-basics").click()
    expect(page.get_by_role("heading", name="Python basics", exact=True)).to_be_visible()
    answer_python_basics(page)
    screenshot(page, "take")

    page.get_by_role("button", name="Save draft").click()
    expect(page.get_by_test_id("flash")).to_have_text("Draft saved.")
    page.reload()
    expect(page.get_by_test_id("question-2").get_by_label("yield", exact=True)).to_be_checked()
    expect(page.get_by_label("Explain how recursion works")).to_have_value(ESSAY)

    page.get_by_role("button", name="Review and submit").click()
    unanswered = page.get_by_test_id("unanswered")
    expect(unanswered).to_contain_text("1 question unanswered")
    expect(unanswered).to_contain_text("Question 8")
    expect(unanswered).not_to_contain_text("Question 7")
    screenshot(page, "confirm")

    polls: list[str] = []
    page.on("request", lambda r: polls.append(r.url) if "/progress/live" in r.url else None)
    page.get_by_role("button", name="Submit for scoring").click()
    expect(page.get_by_test_id("overall-progress")).to_be_visible()
    for name, label in [("overall-progress", "Overall"), ("stage-gpt", "Essay scoring")]:
        bar = page.get_by_role("progressbar", name=label, exact=True)
        expect(bar).to_have_attribute("data-testid", name)
        expect(bar).to_have_attribute("aria-valuemin", "0")
        expect(bar).to_have_attribute("aria-valuemax", "100")
    screenshot(page, "progress-running")

    samples = watch_until_finished(page, worker)
    assert_never_decreasing(samples)
    assert samples[-1] == {
        "overall-progress": 100,
        "stage-rule_score": 100,
        "stage-gpt": 100,
        "stage-rag": 100,
        "stage-fusion": 100,
    }
    expect(page.get_by_test_id("status-badge")).to_have_text("Scored")
    expect(page.get_by_test_id("timeline")).to_contain_text("Submitted")
    # How long it took, as CI tools show it: each stage, and the whole run.
    expect(page.get_by_test_id("stage-duration-gpt")).to_have_text(
        re.compile(r" · (under )?[\d.]+ s$")
    )
    expect(page.get_by_test_id("elapsed")).to_contain_text("Scored in")
    expect(page.get_by_test_id("stage-scorer")).to_contain_text("offline rubric scorer")

    # A tab left open on a finished assessment makes no more requests.
    polls_when_finished = len(polls)
    page.wait_for_timeout(6_000)
    assert len(polls) == polls_when_finished, polls[polls_when_finished:]
    expect(page.locator("[hx-trigger]")).to_have_count(0)
    screenshot(page, "progress-done")

    page.get_by_test_id("result-link").click()
    expect(page.get_by_test_id("result-percentage")).to_have_text(re.compile(r"^\d+(\.\d)?%$"))
    expect(page.get_by_test_id("degraded-notice")).to_contain_text("left unanswered")
    expect(page.get_by_test_id("breakdown")).to_contain_text("Multiple choice")
    essay = page.get_by_test_id("essay-answer").first
    expect(essay).to_have_text(ESSAY)
    for dimension in ("relevance", "depth", "clarity", "technical"):
        expect(page.get_by_test_id(f"rubric-{dimension}").first).to_contain_text("/10")
    expect(page.get_by_test_id("essay-scorer").first).to_contain_text("offline rubric scorer")
    recommendation = page.get_by_test_id("recommendation").first
    expect(recommendation).to_contain_text("Source:")
    expect(recommendation).to_contain_text("the passage that matched")
    screenshot(page, "result")

    page.get_by_role("link", name="Back to your assessments").click()
    expect(page.get_by_test_id("status-badge").first).to_have_text("Scored")
    expect(page.get_by_test_id(re.compile(r"assessment-\d+-score"))).to_contain_text("%")
    screenshot(page, "dashboard")


def test_script_in_an_answer_is_shown_as_text(page, api, worker):
    assessment = api.start()
    essay_id = next(q["id"] for q in assessment["questions"] if q["type"] == "essay")
    profile_id = next(q["id"] for q in assessment["questions"] if q["type"] == "profile")
    response = api.put(
        f"/assessments/{assessment['id']}/responses",
        json={
            "responses": [
                {"question_id": essay_id, "answer": XSS_ESSAY},
                {"question_id": profile_id, "answer": XSS_PROFILE},
            ]
        },
    )
    assert response.status_code == 200, response.text

    log_in(page)
    page.goto(f"/assessments/{assessment['id']}")
    expect(page.get_by_label("Explain how recursion works")).to_have_value(XSS_ESSAY)
    expect(page.get_by_label("How long have you been programming")).to_have_value(XSS_PROFILE)
    page.get_by_role("button", name="Review and submit").click()
    page.get_by_role("button", name="Submit for scoring").click()
    watch_until_finished(page, worker)
    page.get_by_test_id("result-link").click()

    expect(page.get_by_test_id("essay-answer").first).to_have_text(XSS_ESSAY)
    assert page.evaluate("window.__xss") is None
    assert page.locator("main script, main img").count() == 0
    screenshot(page, "result-escaped")
