"""The JSON API under /api/v1: bearer token or session auth, problem+json errors."""

from __future__ import annotations

import json

from flask import Blueprint, request
from flask_login import current_user

from webapp.auth import authenticated_by_token
from webapp.errors import Forbidden, MalformedJSON, Unauthorized
from webapp.extensions import csrf

api_bp = Blueprint("api", __name__, url_prefix="/api/v1")
csrf.exempt(api_bp)

PUBLIC_ENDPOINTS = {"api.openapi"}
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}


@api_bp.before_request
def require_login():
    """401 without valid credentials; session-authenticated writes must carry a CSRF token."""
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    if not current_user.is_authenticated:
        raise Unauthorized("Send `Authorization: Bearer <token>` or log in.")
    if request.method in MUTATING and not authenticated_by_token():
        csrf.protect()
    return None


def json_body(*, required: bool = True) -> dict | None:
    """The request's JSON object; MalformedJSON (400) for broken JSON or a non-object body."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        if required:
            raise MalformedJSON("The request body must be a JSON object.")
        return None
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedJSON(f"The request body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise MalformedJSON("The request body must be a JSON object.")
    return data


def require_admin() -> None:
    """403 unless the current user is an admin."""
    if not current_user.is_admin:
        raise Forbidden("This needs an admin account.")


def _load_routes() -> None:
    """Import every module of this package so its routes attach to `api_bp`."""
    import importlib
    import pkgutil

    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


_load_routes()
