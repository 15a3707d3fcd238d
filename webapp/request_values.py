"""Values a client sends (query parameters, JSON bodies, form fields), parsed one way everywhere.

Each parser takes what the client sent and either returns a value the database and Python can
hold, or raises ValidationFailed naming the field. The API renders that as 422 problem+json; the
HTML pages catch it and say it on the page. Nothing a client sends reaches `int()`,
`datetime` arithmetic or a database column unchecked, so odd input is a 4xx, never a 500.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime

from webapp.errors import MalformedJSON, ValidationFailed

# Ids are INTEGER columns: PostgreSQL refuses larger numbers (the `<int:>` converter agrees).
MAX_ID = 2**31 - 1
# ASCII digits only: `str.isdigit()` and `int()` also take "²" or "٣", which no client means.
_DIGITS = re.compile(r"[0-9]{1,20}")
# Characters no database column holds: NUL (PostgreSQL refuses it) and lone UTF-16 surrogates
# (JSON can spell them, "\ud800", but they cannot be encoded as UTF-8).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def invalid(field: str, message: str) -> ValidationFailed:
    """The 422 for one bad field: `<field> <message>.`, with the field in `errors`."""
    return ValidationFailed(f"{field} {message}.", errors=[{"field": field, "message": message}])


def parse_whole_number(raw: str | None, field: str, *, minimum: int, maximum: int) -> int | None:
    """An integer from `minimum` to `maximum` written in ASCII digits; None when absent or empty."""
    if raw is None or raw.strip() == "":
        return None
    text = raw.strip()
    if not _DIGITS.fullmatch(text) or not minimum <= int(text) <= maximum:
        raise invalid(field, f"must be a whole number from {minimum} to {maximum}")
    return int(text)


def parse_id(raw: str | None, field: str) -> int | None:
    """A record id (1 to MAX_ID); None when absent or empty."""
    return parse_whole_number(raw, field, minimum=1, maximum=MAX_ID)


def parse_moment(raw: object, field: str) -> datetime:
    """An ISO 8601 timestamp as an aware UTC datetime (no zone means UTC).

    Refuses what cannot be held in UTC: "0001-01-01T00:00:00+14:00" is a moment before year 1.
    """
    if not isinstance(raw, str) or not raw.strip():
        raise invalid(field, "is required: an ISO 8601 timestamp, e.g. 2025-01-31T12:00:00Z")
    try:
        moment = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError:
        raise invalid(field, "must be an ISO 8601 timestamp") from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise invalid(field, "is out of range (years 1 to 9999 in UTC)") from None


def parse_date(raw: str | None, field: str) -> date | None:
    """A calendar day (YYYY-MM-DD) whose whole day exists; None when absent or empty."""
    if raw is None or raw.strip() == "":
        return None
    try:
        day = date.fromisoformat(raw.strip())
    except ValueError:
        raise invalid(field, "must be a date (YYYY-MM-DD)") from None
    if day == date.max:  # "until the end of that day" would need the day after
        raise invalid(field, "is out of range")
    return day


def parse_text(raw: str | None, field: str) -> str | None:
    """Free text such as a filter, stripped; None when empty; refused if it cannot be stored."""
    if raw is None or not raw.strip():
        return None
    refuse_unstorable(unstorable_text(raw, field))
    return raw.strip()


def parse_json_object(raw: bytes) -> dict:
    """A request body that is a JSON object; MalformedJSON (400) otherwise.

    Text that cannot be stored (see `unstorable_text`) is the caller's to refuse, by field.
    """
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # nesting too deep too
        raise MalformedJSON(f"The request body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise MalformedJSON("The request body must be a JSON object.")
    return data


def unstorable_text(value: object, where: str) -> list[dict]:
    """Field errors for text (keys too) in a JSON document, or one string, that cannot be stored:
    NUL, or a lone surrogate."""
    if isinstance(value, str):
        problem = _text_problem(value)
        return [{"field": where, "message": problem}] if problem else []
    if isinstance(value, list):
        return [e for i, item in enumerate(value) for e in unstorable_text(item, f"{where}[{i}]")]
    if isinstance(value, dict):
        found = []
        for key, item in value.items():
            found += unstorable_text(key, f"{where}.{key!r}")
            found += unstorable_text(item, f"{where}.{key}")
        return found
    return []


def _text_problem(text: str) -> str | None:
    """Why a string cannot be stored, or None."""
    match = _UNSTORABLE.search(text)
    if match is None:
        return None
    if "\x00" in text:
        return "contains a NUL character"
    return "contains an unpaired surrogate (invalid Unicode)"


def refuse_unstorable(errors: list[dict]) -> None:
    """422 listing `errors` (from `unstorable_text`), if there are any."""
    if errors:
        raise ValidationFailed(
            "Text must not contain NUL characters or unpaired surrogates.", errors=errors
        )
