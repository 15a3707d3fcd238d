"""axe-core on every page the browser tests open, through axe-playwright-python's axe build.

Each browser context gets axe as an init script plus a small runner: every document is scanned
a second after it has loaded, and again after htmx swaps settle (a poll that finishes scoring
changes the page). The page reports its violations to Python through an exposed binding, so a
scan needs no cooperation from the test. Right after the test (its servers still up), the page
as it was left is scanned once more from Python; any page the test left before its scan
finished is opened again (same session) and scanned then. Any serious or critical violation
fails the test.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from axe_playwright_python.base import AXE_SCRIPT
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import BrowserContext, Error, Page

FAILING_IMPACTS = ("serious", "critical")
# Rules axe runs; "best-practice" is included because scrollable-region-focusable lives there.
AXE_OPTIONS = {
    "resultTypes": ["violations"],
    "runOnly": {
        "type": "tag",
        "values": ["wcag2a", "wcag2aa", "wcag21aa", "wcag22aa", "best-practice"],
    },
}

_RUNNER = """
(() => {
  if (window.top !== window) return;
  const options = %s;
  // After htmx swaps (a poll every 2 s), scan at most once per SWAP_GAP ms, the last swap
  // included: a scan costs the browser CPU that live-progress tests need for their own timing.
  const SWAP_GAP = 8000, LOAD_DELAY = 1000;
  let running = false, again = false, timer = null, last = 0;
  async function scan() {
    if (running) { again = true; return; }
    if (!document.body) return;
    running = true;
    last = Date.now();
    try {
      const result = await window.axe.run(document, options);
      await window.__axeReport(location.pathname + location.search, result.violations);
    } catch (error) {
      /* the document went away mid-scan; the next document is scanned on its own */
    } finally {
      running = false;
      if (again) { again = false; scan(); }
    }
  }
  window.__axeScanNow = scan;
  function soon() {
    clearTimeout(timer);
    timer = setTimeout(scan, Math.max(50, last + SWAP_GAP - Date.now()));
  }
  // A second after load: a page the test leaves sooner is reopened and scanned when it ends
  // (scan_missed), so quick steps (log in, submit) don't wait on axe.
  document.addEventListener("DOMContentLoaded", function () { setTimeout(scan, LOAD_DELAY); });
  document.addEventListener("htmx:afterSettle", soon);
})();
"""


@dataclass
class Finding:
    """One rule broken on one page, with the elements that break it."""

    url: str
    rule: str
    impact: str
    help: str
    targets: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.url}: {self.rule} ({self.impact}) {self.help} at {', '.join(self.targets)}"


@dataclass
class AxeWatch:
    """What the scans of one test found, and which pages they covered."""

    findings: dict[tuple[str, str], Finding] = field(default_factory=dict)
    scanned: set[str] = field(default_factory=set)
    visited: dict[str, BrowserContext] = field(default_factory=dict)
    pages: list[Page] = field(default_factory=list)

    def record(self, url: str, violations: list[dict]) -> None:
        """Keep the serious and critical violations of one scan (once per page and rule)."""
        url = _local(url)
        self.scanned.add(url)
        for violation in violations:
            if violation.get("impact") not in FAILING_IMPACTS:
                continue
            targets = [", ".join(node["target"]) for node in violation["nodes"]][:5]
            self.findings[(url.split("?")[0], violation["id"])] = Finding(
                url, violation["id"], violation["impact"], violation["help"], targets
            )

    def watch(self, context: BrowserContext) -> None:
        """Scan every document this context loads, and every htmx swap in it."""
        context.expose_binding(
            "__axeReport", lambda _source, url, violations: self.record(url, violations)
        )
        context.add_init_script(script=AXE_SCRIPT)
        context.add_init_script(script=_RUNNER % json.dumps(AXE_OPTIONS))
        context.on("page", lambda page: self._follow(context, page))

    def _follow(self, context: BrowserContext, page: Page) -> None:
        """Note every document the page's main frame shows."""

        def navigated(frame) -> None:
            if frame == page.main_frame and frame.url.startswith("http"):
                self.visited.setdefault(_local(frame.url), context)

        page.on("framenavigated", navigated)

    def scan_missed(self) -> None:
        """Open again, in the same session, each page the test left before it was scanned."""
        for url, context in list(self.visited.items()):
            if url in self.scanned:
                continue
            page = context.new_page()
            try:
                page.goto(url)
                self.scan_now(page)
            finally:
                page.close()

    def scan_now(self, page: Page) -> None:
        """Scan the page as it is now (the state a test leaves it in)."""
        if page.is_closed() or not page.url.startswith("http"):
            return
        try:
            results = Axe().run(page, options=AXE_OPTIONS)
        except Error:  # the page is mid-navigation; its documents were scanned as they loaded
            return
        self.record(page.url, results.response["violations"])

    def problems(self) -> list[str]:
        """Every serious or critical violation found, in words."""
        return [str(finding) for finding in self.findings.values()]

    def finish(self) -> None:
        """Scan the test's pages as left and those it left unscanned; fail on any problem."""
        for page in self.pages:
            self.scan_now(page)
        self.scan_missed()
        problems = self.problems()
        assert not problems, "axe-core found serious or critical problems:\n" + "\n".join(problems)


def _local(url: str) -> str:
    """A URL without scheme, host and fragment: the path and query a page was opened at."""
    return urlsplit(url)._replace(scheme="", netloc="", fragment="").geturl()
