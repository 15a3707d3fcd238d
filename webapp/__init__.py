"""Scoreline: scoring assessments in stages on background workers, live."""

from __future__ import annotations

import logging
from pathlib import Path

from flask import Flask
from sqlalchemy import event
from werkzeug.routing import IntegerConverter

from webapp import browser_headers, fast_polls, request_body, secret_box, secret_key
from webapp.config import INSTANCE_DIR, PROJECT_ROOT, Config
from webapp.extensions import csrf, db, htmx, login_manager, migrate
from webapp.request_values import MAX_ID


def create_app(test_config: dict | None = None) -> Flask:
    """Build the app: config from the environment (then `test_config`), extensions, blueprints."""
    app = Flask(
        __name__,
        instance_path=str(INSTANCE_DIR),
        template_folder=str(PROJECT_ROOT / "templates"),
        static_folder=str(PROJECT_ROOT / "static"),
    )
    # Before any route exists: every `<int:...>` in a URL is bounded.
    app.url_map.converters["int"] = BoundedIntegerConverter
    app.config.from_object(Config())
    if test_config:
        app.config.update(test_config)
        if (
            "SQLALCHEMY_DATABASE_URI" in test_config
            and "SQLALCHEMY_ENGINE_OPTIONS" not in test_config
        ):
            from webapp.config import engine_options

            app.config["SQLALCHEMY_ENGINE_OPTIONS"] = engine_options(
                test_config["SQLALCHEMY_DATABASE_URI"]
            )
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)
    app.config["SECRET_KEY"] = secret_key.resolve(
        app.config.get("SECRET_KEY"), Path(app.instance_path)
    )
    logging.getLogger("webapp").setLevel(logging.INFO)
    secret_box.init_app(app)  # before anything can read or write a signing secret
    if not app.testing:  # tests keep pytest's capture; the worker configures its own
        from webapp.log_format import configure_logging

        configure_logging(app.config["LOG_FORMAT"], app.config["LOG_LEVEL"])

    db.init_app(app)
    migrate.init_app(app, db, directory=str(PROJECT_ROOT / "migrations"))
    login_manager.init_app(app)
    csrf.init_app(app)
    htmx.init_app(app)
    request_body.init_app(app)  # after htmx-flask, whose request class it extends
    with app.app_context():
        _tune_sqlite(db.engine)

    from webapp import auth, cli, queues
    from webapp.api import api_bp, rate_limits
    from webapp.api.problems import init_app as init_error_handlers
    from webapp.views import init_app as init_views
    from webapp.views import login_limits

    queues.init_app(app)
    auth.init_app(app)
    app.register_blueprint(api_bp)
    init_views(app)
    rate_limits.init_app(app)  # after the blueprints it limits
    login_limits.init_app(app)  # on the limiter rate_limits made
    init_error_handlers(app)
    cli.init_app(app)
    from webapp import health, http_observer, metrics_server

    app.register_blueprint(health.bp)
    metrics_server.init_app(app)
    fast_polls.init_app(app)  # polls answered from memory, before Flask
    browser_headers.init_app(app)  # around it: every answer, the shortcut's too, gets them
    http_observer.init_app(app)  # it wraps the other middleware, the poll shortcut too
    browser_headers.trust_proxies(app)  # outermost WSGI layer
    return app


class BoundedIntegerConverter(IntegerConverter):
    """`<int:...>` up to MAX_ID: a larger id is a 404 like any unknown one, not a database error."""

    def __init__(self, url_map, fixed_digits=0, min=None, max=MAX_ID, signed=False) -> None:
        super().__init__(url_map, fixed_digits=fixed_digits, min=min, max=max, signed=signed)


def _tune_sqlite(engine) -> None:
    """WAL and foreign keys on every SQLite connection, so web and worker share the file safely."""
    if engine.dialect.name != "sqlite":
        return

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()
