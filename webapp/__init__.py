"""Scoreline: scoring assessments in stages on background workers, live."""

from __future__ import annotations

import logging
from pathlib import Path

from flask import Flask
from flask_openapi3 import Info, OpenAPI
from sqlalchemy import event
from werkzeug.routing import IntegerConverter

from webapp import browser_headers, request_body, secret_box, secret_key
from webapp.config import INSTANCE_DIR, PROJECT_ROOT, Config, engine_options
from webapp.extensions import csrf, db, htmx, login_manager, migrate
from webapp.log_format import configure_logging
from webapp.request_values import MAX_ID


def create_app(test_config: dict | None = None) -> Flask:
    """Build the app: config from the environment (then `test_config`), extensions, blueprints."""
    app = OpenAPI(
        __name__,
        info=Info(title="Scoreline API", version="1"),
        security_schemes={
            "bearerAuth": {"type": "http", "scheme": "bearer"},
            "session": {"type": "apiKey", "in": "cookie", "name": "session"},
        },
        doc_ui=False,  # the document is served by the API itself: webapp/api/openapi.py
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
        configure_logging(app.config["LOG_FORMAT"], app.config["LOG_LEVEL"])

    db.init_app(app)
    migrate.init_app(app, db, directory=str(PROJECT_ROOT / "migrations"))
    login_manager.init_app(app)
    csrf.init_app(app)
    htmx.init_app(app)
    request_body.init_app(app)  # after htmx-flask, whose request class it extends
    with app.app_context():
        _tune_sqlite(db.engine)

    # The edges are imported here, as Flask's factory pattern does, so importing a model or the
    # scoring core never loads the routes (import-linter sees these imports all the same).
    from webapp import auth, cli, fast_polls, health, http_observer, metrics_server, queues
    from webapp.api import api_bp, rate_limits
    from webapp.api.blueprint import validation_problem
    from webapp.api.problems import init_app as init_error_handlers
    from webapp.api.schemas import Problem
    from webapp.views import init_app as init_views
    from webapp.views import login_limits

    queues.init_app(app)
    auth.init_app(app)
    app.validation_error_callback = validation_problem  # 422 problem+json, every field
    app.validation_error_model = Problem
    # In tests every JSON answer is checked against the model its route declares (a field
    # served but not documented is a 500 there); in production that work is skipped.
    app.validate_response = app.testing
    app.register_api(api_bp)
    init_views(app)
    rate_limits.init_app(app)  # after the blueprints it limits
    login_limits.init_app(app)  # on the limiter rate_limits made
    init_error_handlers(app)
    cli.init_app(app)
    app.register_api(health.bp)
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
