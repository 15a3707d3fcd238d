"""HTML blueprints: auth, student."""

from flask import Flask


def init_app(app: Flask) -> None:
    """Register the HTML blueprints."""
    from webapp.views import auth, student

    app.register_blueprint(auth.bp)
    app.register_blueprint(student.bp)
