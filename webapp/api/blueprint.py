"""The API blueprint: bearer token or session auth, problem+json errors, what every route gets.

Routes are declared with flask-openapi3: the pydantic models in `schemas` that a view takes
(`path`, `query`, `body`) are validated before it runs and, with the models it answers with,
make /api/v1/openapi.json (see `openapi`). Layers every route gets without code of its own: a
request body, when sent, must be a JSON object whose text a column can hold (no NUL, no lone
surrogates), and idempotency keys on every POST (SPEC 4) here; rate limits (SPEC 8) in
`rate_limits`.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Response, current_app, g, request
from flask_login import current_user
from flask_openapi3 import APIBlueprint
from pydantic import ValidationError
from werkzeug.exceptions import UnsupportedMediaType

from webapp.auth import authenticated_by_token, require_scope
from webapp.errors import Forbidden, MalformedJSON, Unauthorized, ValidationFailed
from webapp.extensions import csrf
from webapp.models import Scope
from webapp.request_values import parse_json_object, refuse_unstorable, unstorable_text
from webapp.services import idempotency
from webapp.services.webhooks.url_guard import InvalidWebhookUrl

# The Problem model (webapp.api.schemas) is in the document's components as the app's
# validation error model (webapp/__init__.py).
PROBLEM_SCHEMA = "#/components/schemas/Problem"
# Every API answer may be one of these problems (those a route adds are in its `responses`).
PROBLEM = {"content": {"application/problem+json": {"schema": {"$ref": PROBLEM_SCHEMA}}}}


def problem_response(description: str) -> dict:
    """An OpenAPI response object: problem+json, with `description`."""
    return {"description": description, **PROBLEM}


def operation_id(*, name: str, **_route: str) -> str:
    """A route's operationId is its view's name (what `url_for` and the OpenAPI links use)."""
    return name


api_bp = APIBlueprint(
    "api",
    __name__,
    url_prefix="/api/v1",
    operation_id_callback=operation_id,
    abp_security=[{"bearerAuth": []}, {"session": []}],
    abp_responses={
        401: problem_response("UNAUTHORIZED: no valid credentials."),
        422: problem_response("VALIDATION_ERROR: `errors` lists every field problem."),
        429: {
            **problem_response("RATE_LIMITED: `Retry-After` says when to try again."),
            "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}},
        },
        "default": problem_response("Any other problem (400, 403, 404, 409, 413, 415, ...)."),
    },
)
csrf.exempt(api_bp)

PUBLIC_ENDPOINTS = {"api.openapi"}
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
# A problem with one of these fields is a bad webhook URL (SPEC 3), whatever else is wrong.
WEBHOOK_URL_FIELDS = {"url", "webhook_url"}


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


def require_admin() -> None:
    """403 unless the current user is an admin."""
    if not current_user.is_admin:
        raise Forbidden("This needs an admin account.")


def admin_only(view: Callable) -> Callable:
    """Mark a route for admins: 403 for anyone else, before its input is validated.

    Goes under the route decorator, which copies the mark onto the view it registers.
    """
    view.admin_only = True  # type: ignore[attr-defined]
    return view


@api_bp.before_request
def refuse_non_admins():
    """403 on admin-only routes before anything else about the request is judged."""
    view = current_app.view_functions.get(request.endpoint or "")
    if getattr(view, "admin_only", False) and current_user.is_authenticated:
        require_admin()


def validation_problem(exc: ValidationError) -> None:
    """flask-openapi3's validation error callback: 422 listing every field problem.

    A body that is missing or not a JSON object is 400 MALFORMED_JSON; a problem with a webhook
    URL is 422 INVALID_WEBHOOK_URL.
    """
    errors = []
    for error in exc.errors(include_url=False):
        if not error["loc"]:
            raise MalformedJSON("The request body must be a JSON object.")
        errors.append({"field": _field_name(error["loc"]), "message": error["msg"]})
    if any(error["field"] in WEBHOOK_URL_FIELDS for error in errors):
        raise InvalidWebhookUrl("The webhook URL is missing or not a URL.", errors=errors)
    raise ValidationFailed("Some fields are invalid.", errors=errors)


def _field_name(loc: tuple) -> str:
    """`("responses", 0, "answer")` -> `responses[0].answer`."""
    name = ""
    for part in loc:
        name += f"[{part}]" if isinstance(part, int) else f".{part}" if name else str(part)
    return name


def body_data() -> dict | None:
    """The request's JSON object, None without a body (checked by `check_json_body`)."""
    raw = request.get_data(cache=True)
    return parse_json_object(raw) if raw.strip() else None


@api_bp.before_request
def check_json_body():
    """A body, when sent, is a JSON object (400 MALFORMED_JSON; 415 unless sent as JSON) whose
    text a column can hold: 422 for NUL characters (PostgreSQL cannot store or compare them) in
    query or JSON strings, and for lone surrogates ("\\ud800"), which cannot be encoded at all."""
    errors = [
        error
        for name, value in request.args.items(multi=True)
        for error in unstorable_text(name + value, name)
    ]
    if request.method in MUTATING and request.get_data(cache=True).strip():
        errors += unstorable_text(body_data(), "body")
        if not request.is_json:
            raise UnsupportedMediaType("Send the JSON body as application/json.")
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
