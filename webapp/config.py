"""Every setting, read from the environment, with its default."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
INSTANCE_DIR = Path(os.environ.get("SCORELINE_INSTANCE", PROJECT_ROOT / "instance"))


def _int(name: str, default: int) -> int:
    """Read an integer setting, failing loudly on garbage rather than guessing."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise RuntimeError(f"{name} must be an integer, got {raw!r}") from exc


def _float(name: str, default: float) -> float:
    """Read a float setting, failing loudly on garbage."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise RuntimeError(f"{name} must be a number, got {raw!r}") from exc


def _int_list(name: str, default: str) -> list[int]:
    """Read a comma-separated list of whole seconds."""
    raw = os.environ.get(name) or default
    try:
        return [int(part) for part in raw.split(",") if part.strip()]
    except ValueError as exc:
        raise RuntimeError(f"{name} must be comma-separated seconds, got {raw!r}") from exc


def _bool(name: str, default: bool) -> bool:
    """Read an on/off setting: 1/true/yes/on or 0/false/no/off."""
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise RuntimeError(f"{name} must be true or false, got {raw!r}")


def database_url() -> str:
    """DATABASE_URL, or a SQLite file under instance/."""
    url = os.environ.get("DATABASE_URL", "").strip()
    if not url:
        return f"sqlite:///{INSTANCE_DIR / 'scoreline.db'}"
    # Heroku-style URLs name the dialect "postgres"; SQLAlchemy wants the psycopg 3 driver.
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


class Config:
    """Settings for one app instance; `create_app(test_config)` may override any of them."""

    def __init__(self) -> None:
        self.SECRET_KEY = os.environ.get("SECRET_KEY", "dev-only-change-me")
        self.SQLALCHEMY_DATABASE_URI = database_url()
        self.REDIS_URL = os.environ.get("REDIS_URL", "").strip()
        self.OPENAI_API_KEY = os.environ.get("OPENAI_API_KEY", "").strip()
        self.OPENAI_BASE_URL = os.environ.get("OPENAI_BASE_URL", "").strip() or None
        self.OPENAI_MODEL = os.environ.get("OPENAI_MODEL", "gpt-4o-mini").strip()
        self.OPENAI_TIMEOUT = _float("OPENAI_TIMEOUT", 30.0)
        self.OPENAI_MAX_RETRIES = _int("OPENAI_MAX_RETRIES", 4)
        # The provider's limits for the whole fleet (OpenAI's tier 1 for gpt-4o-mini).
        self.OPENAI_RPM = _int("OPENAI_RPM", 500)
        self.OPENAI_TPM = _int("OPENAI_TPM", 200000)
        # US dollars per 1,000 tokens (gpt-4o-mini's list prices), for the cost estimates.
        self.OPENAI_PRICE_PROMPT = _float("OPENAI_PRICE_PROMPT", 0.00015)
        self.OPENAI_PRICE_CACHED = _float("OPENAI_PRICE_CACHED", 0.000075)
        self.OPENAI_PRICE_COMPLETION = _float("OPENAI_PRICE_COMPLETION", 0.0006)
        # Gathered gpt scoring: calls in flight per batch, batches at once in the fleet, and
        # how long one batch job gathers new work before it hands over to a fresh job.
        self.LLM_CONCURRENCY = _int("LLM_CONCURRENCY", 100)
        self.LLM_BATCHES = _int("LLM_BATCHES", 1)
        self.LLM_BATCH_SECONDS = _int("LLM_BATCH_SECONDS", 300)
        # Seconds an essay waits for an unavailable provider before the offline scorer runs.
        self.LLM_MAX_WAIT = _int("LLM_MAX_WAIT", 900)
        # The circuit breaker: consecutive failures that open it, seconds between probes.
        self.LLM_BREAKER_FAILURES = _int("LLM_BREAKER_FAILURES", 5)
        self.LLM_BREAKER_COOLDOWN = _float("LLM_BREAKER_COOLDOWN", 15.0)
        self.WEBHOOK_TIMEOUT = _float("WEBHOOK_TIMEOUT", 15.0)
        self.WEBHOOK_RETRY_SCHEDULE = _int_list(
            "WEBHOOK_RETRY_SCHEDULE", "5,300,1800,7200,18000,36000,36000"
        )
        self.WEBHOOK_ALLOWED_CIDRS = [
            c.strip() for c in os.environ.get("WEBHOOK_ALLOWED_CIDRS", "").split(",") if c.strip()
        ]
        self.WEBHOOK_DISABLE_AFTER = _int("WEBHOOK_DISABLE_AFTER", 432000)
        self.IDEMPOTENCY_TTL = _int("IDEMPOTENCY_TTL", 86400)
        # A key still locked after this long belongs to a crashed request and may be taken over.
        self.IDEMPOTENCY_LOCK_TIMEOUT = _int("IDEMPOTENCY_LOCK_TIMEOUT", 60)
        self.HISTORY_RETENTION = _int("HISTORY_RETENTION", 604800)
        # Seconds between the worker's scheduled prunes (history cap and retention, old keys).
        self.PRUNE_INTERVAL = _int("PRUNE_INTERVAL", 3600)
        # A busy worker heartbeats this often; the watchdog calls it dead after 2 x this + 5 s.
        self.WORKER_HEARTBEAT = _int("WORKER_HEARTBEAT", 30)
        self.WATCHDOG_INTERVAL = _int("WATCHDOG_INTERVAL", 30)
        # Per account (or per IP when anonymous), in the `limits` notation: "240/minute".
        self.RATE_LIMIT_ENABLED = _bool("RATE_LIMIT_ENABLED", True)
        self.RATE_LIMIT_POLL = os.environ.get("RATE_LIMIT_POLL", "").strip() or "240/minute"
        self.RATE_LIMIT_WRITE = os.environ.get("RATE_LIMIT_WRITE", "").strip() or "30/minute"
        self.RATE_LIMIT_DEFAULT = os.environ.get("RATE_LIMIT_DEFAULT", "").strip() or "300/minute"
        self.MAX_CONTENT_LENGTH = _int("MAX_CONTENT_LENGTH", 1024 * 1024)
        self.SQLALCHEMY_ENGINE_OPTIONS = engine_options(self.SQLALCHEMY_DATABASE_URI)
        self.SESSION_COOKIE_HTTPONLY = True
        self.SESSION_COOKIE_SAMESITE = "Lax"
        self.WTF_CSRF_TIME_LIMIT = None  # tokens live as long as the session


def engine_options(url: str) -> dict:
    """Pool settings per dialect: SQLite gets a busy timeout so web and worker share the file."""
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 30, "check_same_thread": False}}
    return {"pool_pre_ping": True, "pool_size": 5, "max_overflow": 10}
