"""`GET /api/v1/openapi.json`: the OpenAPI 3.1 document of the API, kept true by the routes.

Every operation is described once, in `operations.OPERATIONS`. The served document holds exactly
the routes the app has (read from its URL map), so it never lists an endpoint that does not
exist; tests/test_openapi.py fails when a route has no description, so it never misses one.
"""

from __future__ import annotations

import re

from flask import Flask, current_app

from webapp.api import api_bp
from webapp.api.openapi.operations import (
    LINKS,
    OPERATIONS,
    PARAMETERS,
    PATH_ID,
    RESPONSES,
    answer,
    param,
)
from webapp.api.openapi.schemas import SCHEMAS

OPENAPI_VERSION = "3.1.0"
# Besides /api/v1, the health endpoints belong to the contract.
DOCUMENTED_OUTSIDE_API = ("/healthz", "/readyz")

DESCRIPTION = """\
Score assessments in stages on background workers; poll operations or receive webhooks.

**Authentication.** `Authorization: Bearer <token>` (tokens from the account page or
`flask create-token`), or the browser session, whose writes need an `X-CSRFToken` header.
A request with a Bearer header is judged by that token alone, whatever cookie it carries.
401 `UNAUTHORIZED` without valid credentials, 403 `FORBIDDEN` for another account's resource or a
missing role, 404 for what does not exist (ids above 2147483647 included). Errors are
`application/problem+json`; text containing NUL characters is 422 `VALIDATION_ERROR`.

**Idempotency keys.** Every POST accepts `Idempotency-Key` (1-255 printable ASCII, bare or in
double quotes; else 400 `INVALID_IDEMPOTENCY_KEY`). Keys belong to the account and are remembered
for {IDEMPOTENCY_TTL} s (`IDEMPOTENCY_TTL`). The first request with a key runs; a repeat with the
same method, path and JSON body (compared canonically: key order and whitespace do not matter)
gets the stored status, body, `Content-Type` and `Location` with `Idempotent-Replayed: true`.
Another request under the same key is 422 `IDEMPOTENCY_KEY_REUSED`; a repeat while the first
still runs is 409 `IDEMPOTENCY_KEY_IN_USE` (a lock older than {IDEMPOTENCY_LOCK_TIMEOUT} s,
`IDEMPOTENCY_LOCK_TIMEOUT`, is taken to be a crashed request and taken over). Every answer of
the endpoint itself is stored, 4xx included, except 5xx. Requests refused before the endpoint
ran store nothing: bad credentials, a missing CSRF token, an invalid key, a rate limit, an
oversized body, NUL characters. The header is ignored on other methods.

**Rate limits.** Per account (per IP address when anonymous), in fixed windows, three buckets
shared by their endpoints: polling (status, operations, history, recent events)
{RATE_LIMIT_POLL} (`RATE_LIMIT_POLL`; the default 240/minute allows 2-second polling from eight
tabs); every POST {RATE_LIMIT_WRITE} (`RATE_LIMIT_WRITE`); everything else {RATE_LIMIT_DEFAULT}
(`RATE_LIMIT_DEFAULT`). Over a limit: 429 `RATE_LIMITED` with `Retry-After` in seconds.
Integration accounts have their own: polling {RATE_LIMIT_INTEGRATION_POLL}, writes
{RATE_LIMIT_INTEGRATION_WRITE}, everything else {RATE_LIMIT_INTEGRATION_DEFAULT}
(`RATE_LIMIT_INTEGRATION_*`); a batch submit counts one write per item.

**Token scopes.** A token holds some of `read` (GET), `write` (every other method) and
`webhooks` (anything under a webhook path, reads included). A call outside them is 403
`INSUFFICIENT_SCOPE`. Tokens made on the account page hold all three; admins choose for
integrations. A token may expire (then 401 like a revoked one).

**Integrations.** An integration account acts for the students it creates, each named by its
`external_id` (unique within the integration): it creates their assessments (`external_id` in
the create body), answers, submits (one by one or in batches), lists (`?external_id=`) and
reads them, and sees nothing of other accounts. Their assessments, status answers and webhook
events carry the `external_id`, and their callbacks are signed with the integration's secret.
"""


# --- the document -------------------------------------------------------------------------------

_CONVERTER = re.compile(r"<(?:[a-z_]+(?:\([^)]*\))?:)?([a-z_][a-z0-9_]*)>")
IGNORED_METHODS = {"HEAD", "OPTIONS"}


def openapi_path(rule: str) -> str:
    """`/a/<int:b_id>/c` -> `/a/{b_id}/c`."""
    return _CONVERTER.sub(r"{\1}", rule)


def routes(app: Flask) -> dict[tuple[str, str], str]:
    """Every route the contract covers: (method, OpenAPI path) -> a unique operation id."""
    found = {}
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith(api_bp.url_prefix + "/") or rule.rule in DOCUMENTED_OUTSIDE_API:
            methods = sorted((rule.methods or set()) - IGNORED_METHODS)
            name = rule.endpoint.removeprefix(api_bp.name + ".")
            for method in methods:
                operation_id = name if len(methods) == 1 else f"{name}_{method.lower()}"
                found[(method.lower(), openapi_path(rule.rule))] = operation_id
    return found


def _operation(method: str, path: str, operation_id: str) -> dict:
    """One operation with the parts every route shares: path parameters, keys, errors."""
    operation = {"operationId": operation_id, **OPERATIONS[(method, path)]}
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": PATH_ID}
        for name in re.findall(r"{(\w+)}", path)
    ]
    if method == "post":
        parameters.append(param("IdempotencyKey"))
    parameters += operation.get("parameters", [])
    if parameters:
        operation["parameters"] = parameters
    operation["responses"] = {**operation["responses"], "default": answer("Error")}
    return operation


def _add_links(paths: dict, operation_ids: dict[tuple[str, str], str]) -> None:
    """Link each LINKS response to every documented operation that takes its parameter."""
    for (method, path, status), values in LINKS.items():
        if path not in paths or method not in paths[path]:
            continue
        links = {}
        for (_method, target_path), operation_id in sorted(operation_ids.items()):
            wanted = set(re.findall(r"{(\w+)}", target_path))
            if wanted and wanted <= set(values):
                links[operation_id] = {
                    "operationId": operation_id,
                    "parameters": {name: values[name] for name in wanted},
                }
        response = dict(paths[path][method]["responses"][status])
        response["links"] = links
        paths[path][method]["responses"][status] = response


def build_document(app: Flask) -> dict:
    """The OpenAPI document of the routes `app` has; KeyError names an undocumented route."""
    operation_ids = routes(app)
    paths: dict[str, dict] = {}
    for (method, path), operation_id in sorted(operation_ids.items()):
        paths.setdefault(path, {})[method] = _operation(method, path, operation_id)
    _add_links(paths, operation_ids)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Scoreline API",
            "version": "1",
            "description": DESCRIPTION.format_map(app.config),
        },
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}, {"session": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": "session"},
            },
            "schemas": SCHEMAS,
            "parameters": PARAMETERS,
            "responses": RESPONSES,
        },
    }


@api_bp.get("/openapi.json")
def openapi():
    """The OpenAPI document (public); built once per app."""
    document = current_app.extensions.get("openapi_document")
    if document is None:
        document = current_app.extensions["openapi_document"] = build_document(current_app)
    return document
