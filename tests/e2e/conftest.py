"""Browser fixtures: one real Chromium per session (Playwright, sync API), a fresh page per test.

The browser is Debian's `chromium` (or CHROMIUM_PATH); failing that, Playwright's own build
(`playwright install chromium`). With none of them the tests fail loudly; they never skip.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Error, Page, expect, sync_playwright

from tests.conftest import ADMIN, OTHER_STUDENT, STUDENT, LiveServer
from tests.e2e.accessibility import AxeWatch
from tests.openai_server import OpenAICompatibleServer, Reply

SCREENSHOTS = Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"
WIDTHS = {1280: 800, 390: 844}
# The machine may have no outside network; these keep Chromium from calling home.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# A full-page capture draws sticky bars mid-page; in the picture they sit where they belong.
# Through the CSSOM, which the Content-Security-Policy does not govern: the `<style>` element
# Playwright's `style=` (and its caret hiding) would inject is refused like any inline style.
UNSTICK = "bars => bars.forEach(bar => bar.style.setProperty('position', 'static', 'important'))"
RESTICK = "bars => bars.forEach(bar => bar.style.removeProperty('position'))"
ACCOUNTS = {"student": STUDENT, "other": OTHER_STUDENT, "admin": ADMIN}
# How Chromium's console words whatever the policy blocks.
CSP_REFUSAL = "Content Security Policy"

expect.set_options(timeout=15_000)


def chromium_executable() -> str | None:
    """CHROMIUM_PATH, else a system Chromium; None means Playwright's own download."""
    explicit = os.environ.get("CHROMIUM_PATH")
    if explicit:
        if not Path(explicit).exists():
            pytest.fail(f"CHROMIUM_PATH={explicit} does not exist", pytrace=False)
        return explicit
    for candidate in ("chromium", "chromium-browser"):
        found = shutil.which(candidate)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """One Chromium for the whole session."""
    executable = chromium_executable()
    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        except Error as exc:
            pytest.fail(
                "No usable Chromium for the browser tests: install Debian's `chromium`, set "
                f"CHROMIUM_PATH, or run `playwright install chromium`.\n{exc}",
                pytrace=False,
            )
        yield browser
        browser.close()


AXE_WATCH = pytest.StashKey[AxeWatch]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """Right after a browser test passes, while its servers still run: scan the pages as the
    test left them and any it left unscanned; a serious or critical violation fails it."""
    result = yield
    watch = item.stash.get(AXE_WATCH, None)
    if watch is not None:
        watch.finish()
    return result


@pytest.fixture()
def new_page(browser, request) -> Iterator[Callable[[str], Page]]:
    """Open pages on a base URL, each in its own context; JavaScript errors, anything the
    Content-Security-Policy refuses, and a serious or critical axe-core violation on any page
    the test opened fail the test."""
    contexts, errors = [], []
    axe = AxeWatch()
    request.node.stash[AXE_WATCH] = axe

    def open_page(base_url: str, **options) -> Page:
        """A page in a fresh context; `options` go to new_context (timezone_id, locale...)."""
        options = {"viewport": {"width": 1280, "height": 800}, **options}
        context = browser.new_context(base_url=base_url, **options)
        context.set_default_timeout(20_000)
        axe.watch(context)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda m: errors.append(m.text) if CSP_REFUSAL in m.text else None)
        axe.pages.append(page)
        return page

    yield open_page
    for context in contexts:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture()
def page(new_page, live_server) -> Page:
    """A page on the session's live server."""
    return new_page(live_server.url)


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


@pytest.fixture()
def scoring_site(app, db_url, worker_factory) -> Iterator[Callable[[Reply], str]]:
    """A site whose worker scores essays with an OpenAI-compatible server giving `reply`
    (start(reply, *first, **env): `first` are given before it, in order; env is the worker's
    extra settings).

    That worker listens on its own Redis database, so the site the browser uses is a second
    app on the same database that enqueues there. Returns the site's base URL.
    """
    from webapp import create_app

    servers: list[LiveServer] = []
    fakes: list[OpenAICompatibleServer] = []

    def start(reply: Reply, *first: Reply, **env: str) -> str:
        fake = OpenAICompatibleServer(default=reply).then(*first)
        fakes.append(fake)
        _, redis_url = worker_factory(
            OPENAI_API_KEY="test-key",
            OPENAI_BASE_URL=fake.base_url,
            OPENAI_MODEL="test-model",
            OPENAI_MAX_RETRIES="0",
            **env,
        )
        site = create_app(
            {
                "TESTING": True,
                "SQLALCHEMY_DATABASE_URI": db_url,
                "REDIS_URL": redis_url,
                "SECRET_KEY": app.config["SECRET_KEY"],
            }
        )
        servers.append(LiveServer(site))
        return servers[-1].url

    yield start
    for server in servers:
        server.stop()
    for fake in fakes:
        fake.stop()


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
