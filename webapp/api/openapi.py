"""`GET /api/v1/openapi.json`: the OpenAPI 3.1 document, built by flask-openapi3 from the models
each route takes and answers with (webapp/api/schemas.py), plus what every POST shares: the
`Idempotency-Key` header and its answers."""

from __future__ import annotations

import copy

from flask import Flask, current_app
from pydantic import BaseModel

from webapp.api import fields, schemas
from webapp.api.blueprint import api_bp, problem_response
from webapp.api.schemas import NewSignInLink
from webapp.services import idempotency

DESCRIPTION = """\
Score assessments in stages on background workers; poll operations or receive webhooks.

**Authentication.** `Authorization: Bearer <token>` (tokens from the account page or
`flask create-token`), or the browser session, whose writes need an `X-CSRFToken` header.
A request with a Bearer header is judged by that token alone, whatever cookie it carries.
401 `UNAUTHORIZED` without valid credentials, 403 `FORBIDDEN` for another account's resource or a
missing role, 404 for what does not exist (ids above 2147483647 included). Errors are
`application/problem+json`; a 422 `VALIDATION_ERROR` lists every field problem in `errors`.
A request body, when sent, is a JSON object (400 `MALFORMED_JSON`; 415 unless its Content-Type
is JSON); text anywhere in it or in the query must not contain NUL characters or unpaired
surrogates (422). Unknown fields are ignored, except where a schema says
`additionalProperties: false` (422).

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
oversized or malformed body, NUL characters. The header is ignored on other methods.

**What no schema predicts.** Besides a request's own fields, answers depend on state: a reused
or busy idempotency key (above), an assessment locked by its submit (409 `ASSESSMENT_LOCKED`) or
busy being scored (409 `ASSESSMENT_BUSY`), a result not ready (409 `RESULT_NOT_READY`), rate
limits (429), and webhook URLs whose host resolves to a private address (422
`INVALID_WEBHOOK_URL`, unless inside `WEBHOOK_ALLOWED_CIDRS`).

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

# `idempotency.parse_key`'s rule as a pattern: 1-255 printable ASCII without surrounding blanks
# (which HTTP strips); `""` is an empty key in quotes. tests/test_openapi.py holds them together.
IDEMPOTENCY_KEY_PATTERN = r'^(?!""$)[!-~](?:[ -~]{0,253}[!-~])?$'
IDEMPOTENCY_KEY = {
    "name": idempotency.HEADER,
    "in": "header",
    "required": False,
    "description": "Run this POST once: a repeat replays the first answer (see the top).",
    "schema": {"type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN},
}
REPLAYED = {
    "description": "`true` when this is the stored answer to an earlier request with this key.",
    "schema": {"type": "string", "enum": ["true"]},
}
OPTIONAL_BODIES = (NewSignInLink,)
KEY_CONFLICT = problem_response(
    "IDEMPOTENCY_KEY_IN_USE: the first request with this key still runs; or the resource's "
    "state forbids this (see the operation)."
)


@api_bp.get(
    "/openapi.json",
    security=[{}],
    responses={200: {"description": "This document.", "content": {"application/json": {}}}},
    validate_response=False,  # a document, not a model
)
def openapi():
    """This OpenAPI document (public)."""
    document = current_app.extensions.get("openapi_document")
    if document is None:
        document = current_app.extensions["openapi_document"] = build_document(current_app)
    return document


def build_document(app: Flask) -> dict:
    """flask-openapi3's document of the app, with the description and what every POST shares."""
    document = copy.deepcopy(app.api_doc)
    # Optional bodies, which their routes validate themselves, are named in their
    # openapi_extensions; their models join the components here.
    for model in OPTIONAL_BODIES:
        document["components"]["schemas"].setdefault(
            model.__name__, model.model_json_schema(ref_template="#/components/schemas/{model}")
        )
    document["info"]["description"] = DESCRIPTION.format_map(app.config)
    _complete_schemas(document["components"]["schemas"])
    for item in document["paths"].values():
        for method, operation in item.items():
            _drop_generated_422(operation)
            if "description" in operation:  # docstring lines are joined with <br/>
                operation["description"] = operation["description"].replace("<br/>", "\n")
            if method != "post":
                continue
            operation.setdefault("parameters", []).append(IDEMPOTENCY_KEY)
            responses = operation["responses"]
            responses.setdefault("409", KEY_CONFLICT)
            for status, response in responses.items():
                if status.startswith("2"):
                    response.setdefault("headers", {})["Idempotent-Replayed"] = REPLAYED
    return document


def _complete_schemas(components: dict) -> None:
    """The models' schemas as pydantic writes them: flask-openapi3 copies them through its own
    OpenAPI 3.0-shaped model, which drops JSON Schema 2020-12 keywords (`propertyNames`,
    `examples`)."""
    models = [
        value
        for module in (fields, schemas)
        for value in vars(module).values()
        if isinstance(value, type) and issubclass(value, BaseModel) and value.__name__ in components
    ]
    for model in models:
        mode = "serialization" if issubclass(model, fields.Out) else "validation"
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode=mode)
        components.update(schema.pop("$defs", {}))
        components[model.__name__] = schema


def _drop_generated_422(operation: dict) -> None:
    """flask-openapi3 documents a 422 (an array of errors) on operations that declare none; the
    API declares its own, and routes without input (health checks) answer none."""
    response = operation["responses"].get("422", {})
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    if schema.get("type") == "array":
        del operation["responses"]["422"]
