"""The JSON API under /api/v1: bearer token or session auth, problem+json errors.

Layers every route gets without code of its own: text no column can hold (NUL, lone
surrogates) refused and idempotency keys on every POST (SPEC 4) here, rate limits (SPEC 8) in
`rate_limits`.
"""

from __future__ import annotations

import contextlib
import json

from flask import Blueprint, Response, g, request
from flask_login import current_user

from webapp.auth import authenticated_by_token, require_scope
from webapp.errors import Forbidden, MalformedJSON, Unauthorized
from webapp.extensions import csrf
from webapp.models import Scope
from webapp.request_values import parse_json_object, refuse_unstorable, unstorable_text
from webapp.services import idempotency

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
    require_scope(required_scope())
    return None


def required_scope() -> Scope:
    """The token scope this request needs: `webhooks` for anything under a webhook path (reads
    included), else `read` for GET and `write` for every other method."""
    rule = request.url_rule.rule if request.url_rule is not None else ""
    if "webhook" in rule:
        return Scope.WEBHOOKS
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return Scope.READ
    return Scope.WRITE


def json_body(*, required: bool = True) -> dict | None:
    """The request's JSON object; MalformedJSON (400) for broken JSON or a non-object body."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        if required:
            raise MalformedJSON("The request body must be a JSON object.")
        return None
    return parse_json_object(raw)


def require_admin() -> None:
    """403 unless the current user is an admin."""
    if not current_user.is_admin:
        raise Forbidden("This needs an admin account.")


@api_bp.before_request
def refuse_unstorable_text():
    """422 for NUL characters (PostgreSQL cannot store or compare them) in query or JSON strings,
    and for lone surrogates ("\\ud800") in JSON strings, which cannot be encoded at all."""
    errors = [
        error
        for name, value in request.args.items(multi=True)
        for error in unstorable_text(name + value, name)
    ]
    raw = request.get_data(cache=True)
    if b"\\u" in raw:  # the only way JSON spells a NUL or a surrogate inside a string
        # A body that is not JSON is the route's to refuse (MALFORMED_JSON).
        with contextlib.suppress(ValueError, UnicodeDecodeError, RecursionError):
            errors += unstorable_text(json.loads(raw), "body")
    refuse_unstorable(errors)


# --- idempotency keys (SPEC 4) ----------------------------------------------------------------
# "Before it ran": these hooks run after authentication and CSRF (require_login above) and after
# the rate limiter (an app-level hook), so a request refused there, for its key or for its size
# stores nothing. Once the view ran, its answer is stored unless it is a 5xx: 4xx answers too.


@api_bp.before_request
def reserve_idempotency_key():
    """POST with an Idempotency-Key: run the first request, replay its answer to the rest."""
    if request.method != "POST":
        return None
    key = idempotency.parse_key(request.headers.get(idempotency.HEADER))
    if key is None:
        return None
    request_fingerprint = idempotency.fingerprint(
        request.method, request.path, request.get_data(cache=True)
    )
    outcome = idempotency.reserve(
        current_user.id, key, request_fingerprint, method=request.method, path=request.path
    )
    if isinstance(outcome, idempotency.StoredResponse):
        response = Response(outcome.body, status=outcome.status, headers=outcome.headers)
        response.headers[idempotency.REPLAYED_HEADER] = "true"
        return response
    g.idempotency_reservation = outcome
    return None


@api_bp.after_request
def store_idempotent_response(response: Response) -> Response:
    """Store the answer under the reserved key, or give the key back after a 5xx."""
    reservation = g.pop("idempotency_reservation", None)
    if reservation is None:
        return response
    if response.status_code >= 500 or response.is_streamed:
        idempotency.release(reservation)
        return response
    headers = {
        name: response.headers[name]
        for name in idempotency.REPLAYED_HEADERS
        if name in response.headers
    }
    idempotency.finish(reservation, response.status_code, response.get_data(as_text=True), headers)
    return response


@api_bp.after_request
def keep_out_of_caches(response: Response) -> Response:
    """API answers are one account's data, some with a signing secret: no cache may keep them,
    unless the route chose its own caching (status polls revalidate)."""
    response.headers.setdefault("Cache-Control", "no-store")
    return response


@api_bp.teardown_request
def release_unfinished_key(_exc: BaseException | None) -> None:
    """A request that died before after_request leaves no lock behind."""
    reservation = g.pop("idempotency_reservation", None)
    if reservation is not None:
        idempotency.release(reservation)


def _load_routes() -> None:
    """Import every module of this package so its routes attach to `api_bp`."""
    import importlib
    import pkgutil

    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


_load_routes()
