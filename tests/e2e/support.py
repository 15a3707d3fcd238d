"""What browser tests share and a fixture does not fit: logging in as a person does, screenshots
at two widths, and watching live progress bars. Fixtures live in tests/e2e/conftest.py."""

from __future__ import annotations

import time
from pathlib import Path

from playwright.sync_api import Page, expect

from tests.support import ADMIN, OTHER_STUDENT, STUDENT

SCREENSHOTS = Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"
WIDTHS = {1280: 800, 390: 844}
# A full-page capture draws sticky bars mid-page; in the picture they sit where they belong.
# Through the CSSOM, which the Content-Security-Policy does not govern: the `<style>` element
# Playwright's `style=` (and its caret hiding) would inject is refused like any inline style.
UNSTICK = "bars => bars.forEach(bar => bar.style.setProperty('position', 'static', 'important'))"
RESTICK = "bars => bars.forEach(bar => bar.style.removeProperty('position'))"
ACCOUNTS = {"student": STUDENT, "other": OTHER_STUDENT, "admin": ADMIN}
# How Chromium's console words whatever the policy blocks.
CSP_REFUSAL = "Content Security Policy"

# Essays are scored side by side; the first answer comes quickly and the second after this
# long, so a 2 s poll sees the gpt stage part-way (50%).
SLOW_ESSAY_SECONDS = 6.0


def log_in(page: Page, who: str = "student") -> None:
    """Log in through the login form, the way a person does."""
    email, password = ACCOUNTS[who]
    page.goto("/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Assessments", exact=True)).to_be_visible()


def screenshot(page: Page, name: str) -> None:
    """Save the page at 1280 and 390 px wide into tests/artifacts/screenshots/; neither may
    scroll sideways."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    original = page.viewport_size
    page.locator(".sticky-actions").evaluate_all(UNSTICK)
    for width, height in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": height})
        scroll_width = page.evaluate("document.documentElement.scrollWidth")
        assert scroll_width <= width, f"{name} scrolls sideways at {width}px ({scroll_width}px)"
        # Scan at this width too; not awaited (the scan reports itself), so a test that watches
        # live progress right after a screenshot starts watching at once.
        page.evaluate("() => { window.__axeScanNow && window.__axeScanNow(); }")
        page.screenshot(
            path=SCREENSHOTS / f"{name}-{width}.png",
            full_page=True,
            animations="disabled",
            caret="initial",
        )
    page.locator(".sticky-actions").evaluate_all(RESTICK)
    page.set_viewport_size(original)


def progress_values(page: Page) -> dict[str, int]:
    """Every progress bar's aria-valuenow, read in one go (a poll may swap them any moment)."""
    return page.evaluate(
        """() => Object.fromEntries(
            [...document.querySelectorAll('[role=progressbar][data-testid]')]
              .map(bar => [bar.dataset.testid, Number(bar.getAttribute('aria-valuenow'))]))"""
    )


def watch_until_finished(page: Page, worker=None, timeout: float = 45) -> list[dict[str, int]]:
    """Sample every bar's value until the result link shows; returns the samples in order."""
    samples = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        samples.append(progress_values(page))
        if page.get_by_test_id("result-link").is_visible():
            samples.append(progress_values(page))
            return samples
        page.wait_for_timeout(150)
    log = worker.log()[-3000:] if worker else ""
    raise AssertionError(f"not finished in {timeout}s; last values {samples[-1:]}\n{log}")


def assert_never_decreasing(samples: list[dict[str, int]]) -> None:
    """No bar ever moves backwards."""
    for name in samples[0]:
        values = [sample[name] for sample in samples]
        assert values == sorted(values), f"{name} went down: {values}"


def start_and_submit(page: Page, essays: tuple[str, ...]) -> int:
    """Start python-basics, answer its essays only, submit; returns the assessment id."""
    page.get_by_test_id("start-python-basics").click()
    page.get_by_label("Explain how recursion works").fill(essays[0])
    if len(essays) > 1:
        page.get_by_label("Describe how classes and instances work").fill(essays[1])
    page.get_by_role("button", name="Review and submit").click()
    page.get_by_role("button", name="Submit for scoring").click()
    expect(page.get_by_test_id("overall-progress")).to_be_visible()
    return int(page.url.rstrip("/").split("/")[-2])
