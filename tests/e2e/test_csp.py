"""The Content-Security-Policy in a real Chromium: live progress works and nothing is refused."""

from __future__ import annotations

import dataclasses

import pytest
from playwright.sync_api import ConsoleMessage, Page

from tests.e2e.support import (
    CSP_REFUSAL,
    SLOW_ESSAY_SECONDS,
    log_in,
    start_and_submit,
    watch_until_finished,
)
from tests.openai_server import rubric_reply

pytestmark = pytest.mark.e2e

# Every violation the page reports, whether or not Chromium also logs it.
RECORD_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__violations.push(`${event.violatedDirective}: ${event.blockedURI || "inline"}`);
});
"""


def watch_policy(page: Page) -> list[str]:
    """Collect CSP refusals on `page`: console messages and securitypolicyviolation events."""
    refusals: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if CSP_REFUSAL in message.text:
            refusals.append(message.text)

    page.on("console", on_console)
    page.add_init_script(RECORD_VIOLATIONS)  # runs outside the policy, before any page script
    return refusals


def violations(page: Page) -> list[str]:
    return page.evaluate("() => window.__violations")


def test_live_progress_works_under_the_policy_with_no_violation(new_page, scoring_site):
    site = scoring_site(dataclasses.replace(rubric_reply(), delay=SLOW_ESSAY_SECONDS))
    page = new_page(site)
    refusals = watch_policy(page)
    polls: list[str] = []
    page.on("response", lambda r: polls.append(r.url) if "/progress/live" in r.url else None)

    log_in(page)
    response = page.goto("/")
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    start_and_submit(page, ("Recursion: a base case and a recursive call.", "Classes."))
    samples = watch_until_finished(page)
    assert polls, "the progress partial was never polled"
    assert samples[-1]["overall-progress"] == 100
    # Widths come from style attributes, which the policy allows (and only those).
    fill = page.locator("#overall-progress-fill")
    assert fill.evaluate("el => el.style.width") == "100%"
    assert fill.evaluate("el => el.getBoundingClientRect().width") > 0

    page.goto("/account")
    page.get_by_text("Show signing secret").click()
    secret = page.get_by_test_id("signing-secret")
    secret.focus()  # the script file selects it, ready to copy
    value = secret.input_value()
    assert secret.evaluate("el => [el.selectionStart, el.selectionEnd]") == [0, len(value)]

    assert refusals == [] and violations(page) == []


def test_the_policy_is_enforced_and_its_refusals_are_seen(browser, live_server):
    """The watch above can fail: an inline script is refused, and both channels report it.

    Its own context: `new_page` would (rightly) fail the test for the refusal it provokes.
    """
    context = browser.new_context(base_url=live_server.url)
    try:
        page = context.new_page()
        refusals = watch_policy(page)
        log_in(page)
        page.evaluate(
            """() => {
                const script = document.createElement("script");
                script.textContent = "window.__inlineRan = true";
                document.head.append(script);
            }"""
        )
        page.wait_for_timeout(200)  # the report is an event: let it arrive
        assert page.evaluate("() => window.__inlineRan") is None
        assert any(v.startswith("script-src") for v in violations(page)), violations(page)
        assert any(CSP_REFUSAL in text for text in refusals), refusals
    finally:
        context.close()
