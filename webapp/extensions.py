"""Flask extensions, created unbound here and bound to the app in `create_app`."""

import logging
import time

import redis
from flask_limiter import Limiter
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect
from htmx_flask import Htmx
from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

# Alembic needs stable constraint names to alter them later, on SQLite and PostgreSQL alike.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base for every model."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


db = SQLAlchemy(model_class=Base)
migrate = Migrate()
login_manager = LoginManager()
csrf = CSRFProtect()
htmx = Htmx()


log = logging.getLogger(__name__)


def seconds_to_retry(limiter: Limiter) -> int:
    """Seconds until the window of the limit this request broke ends (60 if unknown): the
    `Retry-After` of the API's and the login form's 429s (the limiter is made per app by
    webapp.api.rate_limits)."""
    try:
        if limiter.current_limit is not None:
            return max(1, int(limiter.current_limit.reset_at - time.time()))
    except redis.RedisError:
        log.warning("rate limit window unknown (Redis unreachable); Retry-After: 60")
    return 60
