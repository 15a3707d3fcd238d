"""Log lines: JSON (one object per line, for a log search) or text (for people, in `make run`).

Every line carries the correlation fields bound where it was written (`request_id`,
`assessment_id`, `operation_id`, `job_id`, `job`: see `webapp.correlation`), so one submission
can be followed from its request through its stage jobs to its webhook deliveries.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime

from webapp import correlation

# Attributes every LogRecord has; anything else was passed in `extra=` and is logged too.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, message, process, the correlation fields,
    any `extra=` fields, and the exception's traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        line = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
            **correlation.current(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    """`12:00:01 INFO webapp.http: message [request_id=... assessment_id=...]`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        """The usual line, with the correlation fields at the end."""
        text = super().format(record)
        fields = correlation.current()
        if not fields:
            return text
        tail = " ".join(f"{key}={value}" for key, value in fields.items())
        first, newline, rest = text.partition("\n")
        return f"{first} [{tail}]{newline}{rest}"


class _ScorelineHandler(logging.StreamHandler):
    """The handler configure_logging installs (and replaces when called again)."""


def configure_logging(fmt: str = "json", level: str = "INFO", stream=None) -> None:
    """Send every logger's records to stderr (or `stream`) in `fmt`, from `level` up."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _ScorelineHandler)]:
        root.removeHandler(handler)
    handler = _ScorelineHandler(stream or sys.stderr)
    handler.setLevel(level)  # also for libraries that lower their own logger's level (bm25s)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level)


def formatter_from_environment() -> logging.Formatter:
    """The formatter LOG_FORMAT names: for logging.config users (gunicorn's logconfig_dict)."""
    text = os.environ.get("LOG_FORMAT", "").strip().lower() == "text"
    return TextFormatter() if text else JsonFormatter()
