"""Every setting, read from the environment, with its default."""

from __future__ import annotations

import ipaddress
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


def _cidrs(name: str) -> list[str]:
    """Read comma-separated address ranges (empty by default), failing loudly on garbage."""
    ranges = [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]
    for item in ranges:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError as exc:
            raise RuntimeError(f"{name}: {item!r} is not an address range ({exc})") from exc
    return ranges


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
        # Unset: create_app uses the checkout's generated key (webapp/secret_key.py).
        self.SECRET_KEY = os.environ.get("SECRET_KEY", "").strip() or None
        # Fernet keys sealing signing secrets at rest, comma-separated, newest first; empty: a
        # key generated once into instance/secrets.key (webapp.secret_box).
        self.SECRETS_KEY = os.environ.get("SECRETS_KEY", "").strip()
        # Active (unrevoked) API tokens one account may hold.
        self.MAX_API_TOKENS = _int("MAX_API_TOKENS", 20)
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
        self.LLM_BREAKER_COOLDOWN = _float("LLM_BREAKER_COOLDOWN", 5.0)
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
        # Integration accounts get their own limits (a class of 500 submitting within a minute:
        # 500 creates + 500 submits fit the write limit even without the batch endpoint).
        self.RATE_LIMIT_INTEGRATION_POLL = (
            os.environ.get("RATE_LIMIT_INTEGRATION_POLL", "").strip() or "3000/minute"
        )
        self.RATE_LIMIT_INTEGRATION_WRITE = (
            os.environ.get("RATE_LIMIT_INTEGRATION_WRITE", "").strip() or "1200/minute"
        )
        self.RATE_LIMIT_INTEGRATION_DEFAULT = (
            os.environ.get("RATE_LIMIT_INTEGRATION_DEFAULT", "").strip() or "3000/minute"
        )
        # Seconds a sign-in link works when the integration does not say (at most 3600).
        self.SIGN_IN_LINK_TTL = _int("SIGN_IN_LINK_TTL", 300)
        # Failed logins (and password-change attempts), per email tried and per client address.
        self.RATE_LIMIT_LOGIN_ACCOUNT = (
            os.environ.get("RATE_LIMIT_LOGIN_ACCOUNT", "").strip() or "5/minute;20/hour"
        )
        self.RATE_LIMIT_LOGIN_IP = (
            os.environ.get("RATE_LIMIT_LOGIN_IP", "").strip() or "30/minute;300/hour"
        )
        self.MAX_CONTENT_LENGTH = _int("MAX_CONTENT_LENGTH", 1024 * 1024)
        # Operating: metrics files (local disk, per machine), who may scrape, log format.
        metrics_dir = os.environ.get("METRICS_DIR", "").strip()
        self.METRICS_DIR = metrics_dir or str(INSTANCE_DIR / "metrics")
        self.METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "").strip()
        self.METRICS_ALLOWED_CIDRS = _cidrs("METRICS_ALLOWED_CIDRS")
        self.WORKER_METRICS_HOST = os.environ.get("WORKER_METRICS_HOST", "").strip() or "0.0.0.0"
        self.WORKER_METRICS_PORT = _int("WORKER_METRICS_PORT", 9101)
        self.LOG_FORMAT = os.environ.get("LOG_FORMAT", "").strip().lower() or "json"
        if self.LOG_FORMAT not in ("json", "text"):
            raise RuntimeError(f"LOG_FORMAT must be json or text, got {self.LOG_FORMAT!r}")
        self.LOG_LEVEL = os.environ.get("LOG_LEVEL", "").strip().upper() or "INFO"
        self.SQLALCHEMY_ENGINE_OPTIONS = engine_options(self.SQLALCHEMY_DATABASE_URI)
        self.SESSION_COOKIE_HTTPONLY = True
        self.SESSION_COOKIE_SAMESITE = "Lax"
        # HTTPS deployments: redirect http to https and send HSTS (off: `make run` is plain http).
        self.FORCE_HTTPS = _bool("FORCE_HTTPS", False)
        # Cookies only over HTTPS; on by default wherever HTTPS is forced.
        self.SESSION_COOKIE_SECURE = _bool("SESSION_COOKIE_SECURE", self.FORCE_HTTPS)
        self.REMEMBER_COOKIE_SECURE = self.SESSION_COOKIE_SECURE
        self.REMEMBER_COOKIE_SAMESITE = self.SESSION_COOKIE_SAMESITE
        # Behind a reverse proxy: how many proxies' X-Forwarded-* headers to trust (0: none, so
        # no client can claim another address or scheme). Usually PROXY_FIX_X_FOR=1 and
        # PROXY_FIX_X_PROTO=1 behind one proxy.
        for name in ("X_FOR", "X_PROTO", "X_HOST", "X_PORT", "X_PREFIX"):
            setattr(self, f"PROXY_FIX_{name}", _int(f"PROXY_FIX_{name}", 0))
        self.WTF_CSRF_TIME_LIMIT = None  # tokens live as long as the session


def engine_options(url: str) -> dict:
    """Pool settings per dialect: SQLite gets a busy timeout so web and worker share the file."""
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 30, "check_same_thread": False}}
    return {"pool_pre_ping": True, "pool_size": 5, "max_overflow": 10}
