"""Safe redirects after login: `?next=` leads to a page of this site or to the dashboard."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support import STUDENT, csrf_token
from webapp.redirects import local_path

HOSTILE = [
    "%2F%09%2Fevil.example",  # "/<TAB>/evil.example": browsers drop the tab, "//evil.example"
    "/%09/evil.example",
    "/%0A/x",  # a line feed once made a 500 (a header may not contain one)
    "/%0D/evil.example",
    "/%0D%0ASet-Cookie:%20x=y",
    "//evil.example",
    "%2F%2Fevil.example",
    "///evil.example",
    "/\\evil.example",
    "/%5Cevil.example",
    "%5C%5Cevil.example",
    "/%255Cevil.example",  # double-encoded backslash
    "/%252F/evil.example",  # double-encoded "//" once decoded twice
    "https://evil.example/",
    "https:evil.example",
    "http%3A%2F%2Fevil.example",
    "javascript:alert(1)",
    "JaVaScRiPt%3Aalert(1)",
    "data:text/html,<script>alert(1)</script>",
    "evil.example",
    "/%00/evil.example",
    "/%7F/evil.example",
    "/%E2%80%8B/evil.example",  # zero-width space
    "/%EF%BC%8F%EF%BC%8Fevil.example",  # fullwidth solidi
    "%20//evil.example",
    "/" + "a" * 5000,
]
SAME_SITE = [
    ("/account", "/account"),
    ("%2Fassessments%2F1%2Fprogress", "/assessments/1/progress"),
    ("/admin/audit%3Faction%3Dlogin%26actor%3Da%2520b", "/admin/audit?action=login&actor=a%20b"),
]


def log_in_with_next(client, raw_next: str):
    """Post the login form to /login?next=<raw_next> (sent exactly as written)."""
    return client.post(
        f"/login?next={raw_next}",
        data={"csrf_token": csrf_token(client), "email": STUDENT[0], "password": STUDENT[1]},
    )


@pytest.mark.parametrize("raw_next", HOSTILE)
def test_login_never_leaves_the_site(app, raw_next):
    client = app.test_client()
    response = log_in_with_next(client, raw_next)
    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    # Logged in already, the login page redirects too: the same rule.
    again = client.get(f"/login?next={raw_next}")
    assert again.status_code == 302 and again.headers["Location"] == "/"


@pytest.mark.parametrize(("raw_next", "landing"), SAME_SITE)
def test_login_returns_to_the_page_asked_for(app, raw_next, landing):
    response = log_in_with_next(app.test_client(), raw_next)
    assert response.status_code == 302 and response.headers["Location"] == landing


@pytest.mark.parametrize("value", [None, "", "/", "/a/b?c=d#e", "/%7E", "/%2E%2E/x"])
def test_harmless_paths_are_kept(value):
    assert local_path(value) == (value or None)


# --- the rule as a property: whatever comes in, what goes out stays on the site -------------

# Pieces attackers put together: separators, their encodings (once and twice), schemes, hosts.
PIECES = ["/", "//", "\\", "\t", "\n", "\r", " ", "\x00", "%09", "%0A", "%0D", "%2F", "%2f", "%5C",
          "%252F", "%255C", "%25", ":", "@", ".", "?", "#", "https:", "javascript:", "evil.example",
          "a", "\u3002", "\uff0f"]  # fmt: skip
NEXT_VALUES = st.lists(st.sampled_from(PIECES), max_size=8).map("".join) | st.text(max_size=40)


def browser_target(path: str) -> str:
    """Where a browser on https://site.example/page goes for `Location: path`: it drops tab,
    CR and LF, reads a backslash as a slash, and resolves the rest against the page."""
    from urllib.parse import urljoin

    cleaned = "".join(ch for ch in path if ch not in "\t\r\n").replace("\\", "/")
    return urljoin("https://site.example/page", cleaned)


@given(NEXT_VALUES)
@settings(max_examples=2000, deadline=None)
def test_no_next_leads_off_the_site(value):
    target = local_path(value)
    if target is None:
        return
    from urllib.parse import unquote, urlsplit

    for hop in (target, unquote(target), unquote(unquote(target))):  # and after later decoding
        landing = urlsplit(browser_target(hop))
        assert (landing.scheme, landing.netloc) == ("https", "site.example"), (value, hop)
