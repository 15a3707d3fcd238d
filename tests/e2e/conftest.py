"""Browser fixtures: one real Chromium per session (Playwright, sync API), a fresh page per test.

The browser is Debian's `chromium` (or CHROMIUM_PATH); failing that, Playwright's own build
(`playwright install chromium`). With none of them the tests fail loudly; they never skip.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Error, Page, expect, sync_playwright

from tests.e2e.accessibility import AxeWatch
from tests.e2e.support import CSP_REFUSAL
from tests.openai_server import OpenAICompatibleServer, Reply
from tests.support import LiveServer
from webapp import create_app

# The machine may have no outside network; these keep Chromium from calling home.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
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


@pytest.fixture()
def scoring_site(app, db_url, worker_factory) -> Iterator[Callable[[Reply], str]]:
    """A site whose worker scores essays with an OpenAI-compatible server giving `reply`
    (start(reply, *first, **env): `first` are given before it, in order; env is the worker's
    extra settings).

    That worker listens on its own Redis database, so the site the browser uses is a second
    app on the same database that enqueues there. Returns the site's base URL.
    """
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
