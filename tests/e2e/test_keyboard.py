"""Keyboard use on a phone-sized screen: focus is never hidden behind the sticky answer bar."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.e2e.support import log_in

pytestmark = pytest.mark.e2e

# How much of the focused element the sticky bar covers, in px (0 when none), and what it is.
COVERED = """() => {
  const focused = document.activeElement;
  const bar = document.querySelector('.sticky-actions');
  if (!focused || !bar || bar.contains(focused)) return null;
  const box = focused.getBoundingClientRect(), cover = bar.getBoundingClientRect();
  const overlap = Math.max(0, Math.min(box.bottom, cover.bottom) - Math.max(box.top, cover.top));
  const what = focused.id || focused.name || focused.tagName;
  return {what, tag: focused.tagName, overlap: Math.round(overlap), top: Math.round(box.top),
          bottom: Math.round(box.bottom), barTop: Math.round(cover.top), viewport: innerHeight};
}"""


def test_tabbing_through_the_answer_form_at_390px_never_hides_focus(page):
    page.set_viewport_size({"width": 390, "height": 844})
    log_in(page)
    page.get_by_test_id("start-python-basics").click()
    expect(page.get_by_role("heading", name="Python basics", exact=True)).to_be_visible()
    first = page.get_by_test_id("question-1").get_by_role("radio").first
    first.focus()
    seen = []
    for _ in range(40):
        state = page.evaluate(COVERED)
        if state is None:  # focus reached the sticky bar's own buttons: the form is done
            break
        seen.append((state["tag"], state["what"]))
        assert state["overlap"] == 0, f"the sticky bar covers the focused field: {state}"
        assert state["top"] >= 0 and state["bottom"] <= state["viewport"], state
        page.keyboard.press("Tab")
    # Every question was visited: five radio groups, the profile answer and both essays.
    assert [tag for tag, _ in seen].count("INPUT") >= 5, seen
    assert [tag for tag, _ in seen].count("TEXTAREA") == 3, seen
