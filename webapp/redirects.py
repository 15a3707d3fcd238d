"""Where a user-supplied address (`?next=`) may send the browser: paths of this site only."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

MAX_LENGTH = 2048
# Browsers strip tab, CR and LF from URLs and read "\" as "/", so "/\t/evil" and "/\evil" become
# "//evil", another site. Each extra round of percent-decoding is checked as well, so an
# encoded variant a later hop might decode is refused too.
DECODING_ROUNDS = 3


def local_path(target: str | None) -> str | None:
    """`target` if it is a path on this site (printable ASCII, no scheme, no host), else None."""
    if not target or len(target) > MAX_LENGTH:
        return None
    # As sent it is printable ASCII (no space, nothing a browser might read as a look-alike).
    if any(not 0x20 < ord(ch) < 0x7F for ch in target):
        return None
    candidate = target
    for _ in range(DECODING_ROUNDS):
        if not _is_same_site(candidate):
            return None
        decoded = unquote(candidate)
        if decoded == candidate:
            return target
        candidate = decoded
    return None  # still encoded after several rounds: nobody needs that


def _is_same_site(value: str) -> bool:
    """One absolute path: a single leading "/", no control character, no backslash."""
    if not value.startswith("/") or value.startswith("//"):
        return False
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F or ch == "\\" for ch in value):
        return False
    parts = urlsplit(value)
    return not parts.scheme and not parts.netloc
