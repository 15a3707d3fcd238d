"""problem+json for the API, HTML error pages for the browser: one place for both."""

from __future__ import annotations

import logging

from flask import Flask, Response, json, render_template, request
from werkzeug.exceptions import HTTPException, NotFound

from webapp.errors import ScorelineError
from webapp.extensions import db

log = logging.getLogger(__name__)

PROBLEM_TYPE_BASE = "https://scoreline.dev/problems/"
# Codes for plain HTTP errors raised by Flask/Werkzeug itself.
HTTP_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "VALIDATION_ERROR",
    429: "RATE_LIMITED",
    500: "INTERNAL_ERROR",
}


def problem(
    status: int,
    code: str,
    title: str,
    detail: str | None = None,
    *,
    errors: list[dict] | None = None,
    headers: dict | None = None,
) -> Response:
    """An RFC 9457 problem+json response."""
    body = {
        "type": PROBLEM_TYPE_BASE + code.lower().replace("_", "-"),
        "title": title,
        "status": status,
        "detail": detail or title,
        "code": code,
    }
    if errors is not None:
        body["errors"] = errors
    response = Response(json.dumps(body), status=status, mimetype="application/problem+json")
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def wants_json() -> bool:
    """API paths always answer JSON; elsewhere, clients that prefer JSON get it."""
    if request.path.startswith("/api/"):
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json" and not request.headers.get("HX-Request")


def init_app(app: Flask) -> None:
    """Register the app-wide error handlers."""

    @app.errorhandler(ScorelineError)
    def handle_scoreline_error(exc: ScorelineError):
        if wants_json():
            return problem(exc.status, exc.code, exc.title, exc.detail, errors=exc.errors)
        return _html_error(exc.status, exc.title, exc.detail)

    @app.errorhandler(HTTPException)
    def handle_http_error(exc: HTTPException):
        status = exc.code or 500
        headers = {}
        if status == 405 and exc.valid_methods:  # RFC 9110: a 405 lists what the resource allows
            headers["Allow"] = ", ".join(exc.valid_methods)
        if wants_json():
            code = HTTP_CODES.get(status, "HTTP_ERROR")
            return problem(status, code, exc.name, exc.description, headers=headers)
        if status == 404 and exc.description == NotFound.description:
            # Werkzeug's stock wording is written for developers; say it as a product does.
            return _html_error(
                404,
                "Page not found",
                f"There is no page at {request.path}. The link may be old or mistyped.",
            )
        page, status = _html_error(status, exc.name, exc.description)
        return page, status, headers

    @app.errorhandler(Exception)
    def handle_unexpected(exc: Exception):
        db.session.rollback()
        log.exception("unhandled error on %s %s", request.method, request.path)
        if wants_json():
            return problem(
                500, "INTERNAL_ERROR", "Internal server error", "Something broke; it was logged."
            )
        return _html_error(500, "Something went wrong", "The error was logged; please try again.")


def _html_error(status: int, title: str, detail: str):
    """The browser's error page."""
    return render_template("errors/error.html", status=status, title=title, detail=detail), status
