"""Sending: one HTTP POST of a delivery's body, and what became of it (an `Outcome`).

No database here. Redirects are not followed, no proxies are used, and every connection goes
only to addresses the SSRF guard checked; a failure is classified (timeout, DNS, connection,
TLS, redirect, blocked) for the attempt log.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime

import requests
import urllib3

from webapp.models import ErrorClass
from webapp.models.base import as_utc, utcnow
from webapp.services.webhooks import signing
from webapp.services.webhooks.url_guard import (
    AddressGuard,
    BlockedAddress,
    InvalidWebhookUrl,
    parse_url,
    shared_session,
)

RESPONSE_BODY_LIMIT = 4096


@dataclass
class Outcome:
    """What one HTTP attempt did, before anything is written."""

    url: str
    started_at: datetime
    request_headers: dict[str, str]
    duration_ms: int = 0
    status: int | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    body: str | None = None
    error: ErrorClass | None = None
    detail: str | None = None

    @property
    def succeeded(self) -> bool:
        """2xx, and nothing else, is success."""
        return self.error is None and self.status is not None and 200 <= self.status < 300

    def retry_after(self) -> float | None:
        """The receiver's Retry-After in seconds (delta or HTTP date), if it sent a valid one."""
        raw = (self.response_headers.get("retry-after") or "").strip()
        if not raw:
            return None
        if raw.isdigit():
            return float(raw)
        try:
            moment = parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        return max(0.0, (as_utc(moment) - utcnow()).total_seconds())

    def summary(self) -> str:
        """The attempt in a few words, for lists and reasons."""
        if self.error == ErrorClass.REDIRECT:
            return f"HTTP {self.status}, redirect not followed"
        if self.error is not None:
            return f"{self.error}: {self.detail}" if self.detail else str(self.error)
        return f"HTTP {self.status}"


def send(url: str, body: bytes, headers: dict[str, str], *, timeout: float, guard: AddressGuard):
    """POST the body once: no redirects, no proxies, only addresses the guard checked."""
    outcome = Outcome(url=url, started_at=utcnow(), request_headers=signing.redacted(headers))
    started = time.monotonic()
    try:
        parse_url(url)
        http = shared_session(guard)
        response = http.post(
            url,
            data=body,
            headers=headers,
            timeout=(timeout, timeout),
            allow_redirects=False,
            stream=True,
        )
        with response:
            outcome.status = response.status_code
            outcome.response_headers = {k.lower(): v for k, v in response.headers.items()}
            outcome.body = _read_body(response)
    except (BlockedAddress, InvalidWebhookUrl) as exc:
        outcome.error, outcome.detail = ErrorClass.BLOCKED, getattr(exc, "detail", str(exc))
    except requests.exceptions.SSLError as exc:
        outcome.error, outcome.detail = ErrorClass.TLS, _reason(exc)
    except requests.exceptions.Timeout:
        outcome.error, outcome.detail = ErrorClass.TIMEOUT, f"no answer within {timeout:g} s"
    except requests.exceptions.ConnectionError as exc:
        dns = _caused_by(exc, urllib3.exceptions.NameResolutionError)
        outcome.error = ErrorClass.DNS if dns else ErrorClass.CONNECTION
        outcome.detail = _reason(exc)
    except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError) as exc:
        outcome.error, outcome.detail = ErrorClass.CONNECTION, _reason(exc)
    outcome.duration_ms = round((time.monotonic() - started) * 1000)
    if outcome.status is not None and 300 <= outcome.status < 400:
        location = outcome.response_headers.get("location", "")
        outcome.error = ErrorClass.REDIRECT
        outcome.detail = f"redirects are not followed (Location: {location or 'none'})"
    return outcome


def _read_body(response: requests.Response) -> str:
    """The first 4 KB of the response body, as text; a body that stalls is noted, not fatal."""
    try:
        raw = response.raw.read(RESPONSE_BODY_LIMIT, decode_content=True) or b""
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        return f"(body not read: {type(exc).__name__})"
    return raw[:RESPONSE_BODY_LIMIT].decode(response.encoding or "utf-8", errors="replace")


def _caused_by(exc: BaseException, kind: type) -> bool:
    """True when `kind` is anywhere in the exception's chain (urllib3 nests it in MaxRetryError)."""
    seen = set()
    stack = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, kind):
            return True
        stack.extend([current.__cause__, current.__context__, getattr(current, "reason", None)])
        stack.extend(a for a in getattr(current, "args", ()) if isinstance(a, BaseException))
    return False


def _reason(exc: BaseException) -> str:
    """The innermost useful message of a requests/urllib3 error."""
    inner = exc
    while True:
        nxt = getattr(inner, "reason", None)
        if not isinstance(nxt, BaseException):
            args = [a for a in getattr(inner, "args", ()) if isinstance(a, BaseException)]
            nxt = args[0] if args else None
        if nxt is None or nxt is inner:
            break
        inner = nxt
    text = str(inner)
    if "): " in text:  # urllib3 prefixes "HTTPConnection(host=..., port=...): "
        text = text.split("): ", 1)[1]
    return text[:500]
