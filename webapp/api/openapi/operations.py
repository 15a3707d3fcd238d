"""Every operation of the API, described once, by (method, path with {parameters}).

The path parameters (all `<int:...>` ids), the `Idempotency-Key` header of every POST and the
`default` problem answer are added to each operation by the document builder.
"""

from __future__ import annotations

from webapp import MAX_ID
from webapp.api.openapi.schemas import (
    ANY_OBJECT,
    BOOLEAN,
    INTEGER,
    STRING,
    TIMESTAMP,
    enum,
    list_of,
    nullable,
    obj,
    ref,
)
from webapp.models import AssessmentStatus, OperationType
from webapp.models.questions import QuestionType

# Every path parameter is an `<int:...>` id.
PATH_ID = {"type": "integer", "minimum": 0, "maximum": MAX_ID}

# --- reusable parts ---------------------------------------------------------------------------

PROBLEM_CONTENT = {"application/problem+json": {"schema": ref("Problem")}}
RETRY_AFTER = {"description": "Seconds to wait.", "schema": {"type": "integer", "minimum": 0}}
REPLAYED = {
    "description": "`true` when this is the stored answer to an earlier request with this key.",
    "schema": {"type": "string", "enum": ["true"]},
}
LOCATION = {"description": "Where to poll the operation.", "schema": STRING}

RESPONSES = {
    name: {"description": description, "content": PROBLEM_CONTENT}
    for name, description in {
        "BadRequest": "Malformed JSON (`MALFORMED_JSON`) or an invalid `Idempotency-Key`.",
        "Unauthorized": "No valid credentials (`UNAUTHORIZED`).",
        "Forbidden": "Another account's resource, or an admin-only endpoint (`FORBIDDEN`).",
        "NotFound": "No such resource.",
        "Conflict": "The resource's state forbids it, or the idempotency key is in use.",
        "TooLarge": "The body is larger than MAX_CONTENT_LENGTH (`PAYLOAD_TOO_LARGE`).",
        "Invalid": "Field problems listed in `errors` (`VALIDATION_ERROR`), or a reused key.",
        "Error": (
            "An unexpected error (`INTERNAL_ERROR`), or stored signing secrets that SECRETS_KEY "
            "cannot decrypt (`SECRETS_KEY_MISMATCH`); either is logged."
        ),
    }.items()
}
RESPONSES["RateLimited"] = {
    "description": "Too many requests (`RATE_LIMITED`).",
    "headers": {"Retry-After": RETRY_AFTER},
    "content": PROBLEM_CONTENT,
}

PARAMETERS = {
    "IdempotencyKey": {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "description": "Makes the request safe to retry (see the API description).",
        "schema": {"type": "string", "minLength": 1, "maxLength": 257},
    },
}


def param(name: str) -> dict:
    return {"$ref": f"#/components/parameters/{name}"}


def answer(name: str) -> dict:
    return {"$ref": f"#/components/responses/{name}"}


def json_body(schema: dict, *, required: bool = True) -> dict:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def ok(description: str, schema: dict, *, headers: dict | None = None) -> dict:
    response = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


ERRORS_READ = {"401": answer("Unauthorized"), "429": answer("RateLimited")}
ERRORS_ONE = {**ERRORS_READ, "403": answer("Forbidden"), "404": answer("NotFound")}
ERRORS_WRITE = {
    "400": answer("BadRequest"),
    "401": answer("Unauthorized"),
    "403": answer("Forbidden"),
    "409": answer("Conflict"),
    "413": answer("TooLarge"),
    "422": answer("Invalid"),
    "429": answer("RateLimited"),
}
RESPONSES_BODY = obj({"responses": list_of(ref("Answer"))})

# --- the operations, by (method, path with {parameters}) ---------------------------------------

OPERATIONS: dict[tuple[str, str], dict] = {
    ("get", "/healthz"): {
        "summary": "The process is up",
        "security": [],
        "responses": {"200": ok("Up.", obj({"status": {"type": "string", "const": "ok"}}))},
    },
    ("get", "/readyz"): {
        "summary": "Database, Redis and a live worker are reachable",
        "security": [],
        "responses": {
            "200": ok("Ready.", ANY_OBJECT),
            "503": ok("Not ready; the body says what is missing.", ANY_OBJECT),
        },
    },
    ("get", "/api/v1/openapi.json"): {
        "summary": "This document",
        "security": [],
        "responses": {"200": ok("The OpenAPI document.", ANY_OBJECT), "429": answer("RateLimited")},
    },
    ("get", "/api/v1/question-sets"): {
        "summary": "Question sets, by slug",
        "responses": {
            "200": ok("Every question set.", obj({"question_sets": list_of(ref("QuestionSet"))})),
            **ERRORS_READ,
        },
    },
    ("post", "/api/v1/assessments"): {
        "summary": "Start a draft assessment of a question set",
        "requestBody": json_body(
            obj({"question_set": {"type": "string", "examples": ["python-basics"]}})
        ),
        "responses": {
            "201": ok(
                "The draft with its questions (never the correct answers).",
                ref("Assessment"),
                headers={"Location": {"schema": STRING}, "Idempotent-Replayed": REPLAYED},
            ),
            **ERRORS_WRITE,
            "404": answer("NotFound"),
        },
    },
    ("get", "/api/v1/assessments"): {
        "summary": "Your assessments (admins: everyone's), newest first",
        "parameters": [
            {"name": "status", "in": "query", "required": False, "schema": enum(AssessmentStatus)}
        ],
        "responses": {
            "200": ok(
                "Assessments without their questions.",
                obj({"assessments": list_of(ref("Assessment"))}),
            ),
            "422": answer("Invalid"),
            **ERRORS_READ,
        },
    },
    ("get", "/api/v1/assessments/{assessment_id}"): {
        "summary": "One assessment with its questions and saved responses",
        "responses": {"200": ok("The assessment.", ref("Assessment")), **ERRORS_ONE},
    },
    ("put", "/api/v1/assessments/{assessment_id}/responses"): {
        "summary": "Save draft answers (merged by question id)",
        "description": "A theoretical answer is an option id. 409 `ASSESSMENT_LOCKED` once "
        "submitted.",
        "requestBody": json_body(RESPONSES_BODY),
        "responses": {
            "200": ok("The assessment with its saved responses.", ref("Assessment")),
            **ERRORS_WRITE,
            "404": answer("NotFound"),
        },
    },
    ("post", "/api/v1/assessments/{assessment_id}/submit"): {
        "summary": "Submit (optionally with final responses, merged first)",
        "description": "Runs `rule_score` inline and starts the pipeline: 202 with the "
        "operation's `Location`. Submitting again answers 200 with the same operation and "
        '`"message": "already submitted"`. Unanswered questions score 0 (`degraded`).',
        "requestBody": json_body(RESPONSES_BODY, required=False),
        "responses": {
            "202": ok(
                "Submitted; poll the operation or the status.",
                ref("Submission"),
                headers={"Location": LOCATION, "Idempotent-Replayed": REPLAYED},
            ),
            "200": ok(
                "Already submitted: the existing operation.",
                ref("Submission"),
                headers={"Location": LOCATION, "Idempotent-Replayed": REPLAYED},
            ),
            **ERRORS_WRITE,
            "404": answer("NotFound"),
        },
    },
    ("get", "/api/v1/assessments/{assessment_id}/status"): {
        "summary": "Pipeline progress (poll this)",
        "description": "`Retry-After: 2` while not finished; an `ETag`, and 304 for a matching "
        "`If-None-Match`.",
        "parameters": [
            {"name": "If-None-Match", "in": "header", "required": False, "schema": STRING}
        ],
        "responses": {
            "200": ok(
                "Stages, jobs and the weighted overall progress.",
                ref("Status"),
                headers={"ETag": {"schema": STRING}, "Retry-After": RETRY_AFTER},
            ),
            "304": {"description": "Unchanged since the ETag you sent."},
            **ERRORS_ONE,
        },
    },
    ("get", "/api/v1/assessments/{assessment_id}/result"): {
        "summary": "The final report",
        "responses": {
            "200": ok("The report.", ref("Report")),
            "409": answer("Conflict"),
            **ERRORS_ONE,
        },
    },
    ("get", "/api/v1/assessments/{assessment_id}/history"): {
        "summary": "Every status change, newest first (at most 100)",
        "responses": {"200": ok("The history.", ref("History")), **ERRORS_ONE},
    },
    ("post", "/api/v1/assessments/{assessment_id}/rescore"): {
        "summary": "Score a finished assessment again (admins)",
        "responses": {
            "202": ok(
                "A new scoring operation.",
                ref("Operation"),
                headers={"Location": LOCATION, "Idempotent-Replayed": REPLAYED},
            ),
            **ERRORS_WRITE,
            "404": answer("NotFound"),
        },
    },
    ("get", "/api/v1/events/recent"): {
        "summary": "Recent status changes of your assessments (admins: all), newest first",
        "parameters": [
            {
                "name": "hours",
                "in": "query",
                "required": False,
                "schema": {"type": "integer", "minimum": 1, "maximum": 720, "default": 24},
            }
        ],
        "responses": {
            "200": ok("The events.", ref("RecentEvents")),
            "422": answer("Invalid"),
            **ERRORS_READ,
        },
    },
    ("get", "/api/v1/operations/{operation_id}"): {
        "summary": "Poll an operation",
        "responses": {
            "200": ok("Exactly one of result / error_message is set once done.", ref("Operation")),
            **ERRORS_ONE,
        },
    },
    ("post", "/api/v1/operations"): {
        "summary": "Start a question_generation operation (admins)",
        "requestBody": json_body(
            obj(
                {
                    "operation_type": enum([OperationType.QUESTION_GENERATION]),
                    "params": obj({"topic": STRING, "question_type": enum(QuestionType)}),
                }
            )
        ),
        "responses": {
            "202": ok(
                "The operation; poll it.",
                ref("Operation"),
                headers={"Location": LOCATION, "Idempotent-Replayed": REPLAYED},
            ),
            **ERRORS_WRITE,
        },
    },
    ("get", "/api/v1/audit"): {
        "summary": "The audit log, newest first (admins)",
        "parameters": [
            {"name": name, "in": "query", "required": False, "schema": STRING, "description": d}
            for name, d in (
                ("actor", "Part of the actor's email, matched literally (`%` and `_` too)."),
                ("action", "An action, e.g. `assessment.submitted`."),
                ("entity_type", "e.g. `assessment`."),
                ("entity_id", "The entity's id."),
            )
        ],
        "responses": {
            "200": ok(
                "Up to 200 entries.",
                obj({"entries": list_of(ref("AuditEntry")), "count": INTEGER}),
            ),
            "403": answer("Forbidden"),
            **ERRORS_READ,
        },
    },
}

# Webhooks (SPEC 3, 5): admins manage endpoints and deliveries; owners register callbacks.
ENDPOINT = ref("WebhookEndpoint")
DELIVERY = ref("WebhookDelivery")
ACCEPTED_DELIVERY = ok(
    "The delivery; poll it.",
    DELIVERY,
    headers={
        "Location": {"description": "Where to poll the delivery.", "schema": STRING},
        "Idempotent-Replayed": REPLAYED,
    },
)
ENDPOINT_BODY = {
    "url": STRING,
    "description": STRING,
    "event_types": list_of(STRING),
    "enabled": BOOLEAN,
}
ERRORS_ADMIN_ONE = {**ERRORS_ONE, "422": answer("Invalid")}
OPERATIONS.update(
    {
        ("get", "/api/v1/webhook-endpoints"): {
            "summary": "Webhook endpoints with their health (admins)",
            "responses": {
                "200": ok("Every endpoint.", obj({"endpoints": list_of(ENDPOINT)})),
                "403": answer("Forbidden"),
                **ERRORS_READ,
            },
        },
        ("post", "/api/v1/webhook-endpoints"): {
            "summary": "Register a webhook endpoint (admins)",
            "description": "`event_types` empty means every event. 422 `INVALID_WEBHOOK_URL` "
            "for a URL that is not http(s), carries credentials or reaches a private address.",
            "requestBody": json_body(obj({"url": STRING}, ENDPOINT_BODY)),
            "responses": {
                "201": ok(
                    "The endpoint with its signing secret.",
                    ENDPOINT,
                    headers={"Location": {"schema": STRING}, "Idempotent-Replayed": REPLAYED},
                ),
                **ERRORS_WRITE,
            },
        },
        ("get", "/api/v1/webhook-endpoints/{endpoint_id}"): {
            "summary": "One webhook endpoint (admins)",
            "responses": {"200": ok("The endpoint.", ENDPOINT), **ERRORS_ONE},
        },
        ("patch", "/api/v1/webhook-endpoints/{endpoint_id}"): {
            "summary": "Change a webhook endpoint (admins)",
            "requestBody": json_body(obj({}, ENDPOINT_BODY)),
            "responses": {
                "200": ok("The endpoint.", ENDPOINT),
                **ERRORS_WRITE,
                "404": answer("NotFound"),
            },
        },
        ("delete", "/api/v1/webhook-endpoints/{endpoint_id}"): {
            "summary": "Delete a webhook endpoint and its delivery log (admins)",
            "responses": {"204": {"description": "Deleted."}, **ERRORS_ONE},
        },
        ("post", "/api/v1/webhook-endpoints/{endpoint_id}/rotate-secret"): {
            "summary": "A new signing secret; the previous one also signs for 24 hours (admins)",
            "responses": {
                "200": ok("The endpoint with its new secret.", ENDPOINT),
                **ERRORS_WRITE,
                "404": answer("NotFound"),
            },
        },
        ("post", "/api/v1/webhook-endpoints/{endpoint_id}/test"): {
            "summary": "Send a `webhook.test` event (admins)",
            "responses": {"202": ACCEPTED_DELIVERY, **ERRORS_WRITE, "404": answer("NotFound")},
        },
        ("post", "/api/v1/webhook-endpoints/{endpoint_id}/recover"): {
            "summary": "Send again every failed delivery since a moment (admins)",
            "requestBody": json_body(obj({"since": TIMESTAMP})),
            "responses": {
                "202": ok(
                    "What was queued again.",
                    obj({"recovered": INTEGER}, {"delivery_ids": list_of(INTEGER)}),
                    headers={"Idempotent-Replayed": REPLAYED},
                ),
                **ERRORS_WRITE,
                "404": answer("NotFound"),
            },
        },
        ("get", "/api/v1/webhook-endpoints/{endpoint_id}/deliveries"): {
            "summary": "An endpoint's deliveries, newest first (admins)",
            "parameters": [
                {
                    "name": "status",
                    "in": "query",
                    "required": False,
                    "schema": enum(["pending", "retrying", "succeeded", "failed", "skipped"]),
                },
                {"name": "event_type", "in": "query", "required": False, "schema": STRING},
                {
                    "name": "before",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
                    "description": "Older deliveries: the `next_before` of a page.",
                },
            ],
            "responses": {
                "200": ok("A page of deliveries.", obj({"deliveries": list_of(DELIVERY)})),
                **ERRORS_ADMIN_ONE,
            },
        },
        ("get", "/api/v1/webhook-deliveries/{delivery_id}"): {
            "summary": "One delivery with every attempt (admins)",
            "responses": {"200": ok("The delivery.", DELIVERY), **ERRORS_ONE},
        },
        ("post", "/api/v1/webhook-deliveries/{delivery_id}/redeliver"): {
            "summary": "Send a delivery again now, same webhook-id and body (admins)",
            "responses": {"202": ACCEPTED_DELIVERY, **ERRORS_WRITE, "404": answer("NotFound")},
        },
        ("post", "/api/v1/assessments/{assessment_id}/webhook"): {
            "summary": "Deliver every event of this assessment to a URL too",
            "description": "Signed with the owning account's secret (shown on the account page); "
            "422 `INVALID_WEBHOOK_URL` for a bad or forbidden URL.",
            "requestBody": json_body(obj({"webhook_url": STRING})),
            "responses": {
                "201": ok(
                    "The registration.",
                    obj(
                        {
                            "assessment_id": INTEGER,
                            "webhook_url": STRING,
                            "registered_at": TIMESTAMP,
                            "signing_secret": STRING,
                        }
                    ),
                    headers={"Idempotent-Replayed": REPLAYED},
                ),
                **ERRORS_WRITE,
                "404": answer("NotFound"),
            },
        },
    }
)

# Responses that name a resource, so clients (and schemathesis) can follow them: the value at
# this JSON pointer of the body fills that path parameter of every operation that takes it.
LINKS: dict[tuple[str, str, str], dict[str, str]] = {
    ("post", "/api/v1/assessments", "201"): {"assessment_id": "$response.body#/id"},
    ("post", "/api/v1/assessments/{assessment_id}/submit", "202"): {
        "operation_id": "$response.body#/operation/id"
    },
    ("post", "/api/v1/assessments/{assessment_id}/rescore", "202"): {
        "operation_id": "$response.body#/id"
    },
    ("post", "/api/v1/operations", "202"): {"operation_id": "$response.body#/id"},
    ("post", "/api/v1/webhook-endpoints", "201"): {"endpoint_id": "$response.body#/id"},
    ("post", "/api/v1/webhook-endpoints/{endpoint_id}/test", "202"): {
        "delivery_id": "$response.body#/id"
    },
}

# Integrations (issue 17): students by external_id, batch submit, sign-in links.
STUDENT = ref("Student")
EXTERNAL_ID = ref("ExternalId")
ERRORS_INTEGRATION = {**ERRORS_WRITE}
ERRORS_INTEGRATION["403"] = {
    "description": "Not an integration account (`FORBIDDEN`), or a token without the `write` "
    "scope (`INSUFFICIENT_SCOPE`).",
    "content": PROBLEM_CONTENT,
}
BATCH_ITEM = obj(
    {"assessment_id": {"type": "integer", "minimum": 1, "maximum": MAX_ID}},
    {
        "responses": list_of(ref("Answer")),
        "idempotency_key": {
            "type": "string",
            "minLength": 1,
            "maxLength": 257,
            "description": "This item's own key: the `Idempotency-Key` its single submit takes.",
        },
    },
)
OPERATIONS["post", "/api/v1/assessments"]["requestBody"] = json_body(
    obj(
        {"question_set": {"type": "string", "examples": ["python-basics"]}},
        {"external_id": EXTERNAL_ID},
    )
)
OPERATIONS["post", "/api/v1/assessments"]["description"] = (
    "Integrations name the student by `external_id` (required for them, refused for other "
    "accounts); the student is created if the integration has none with that id yet."
)
OPERATIONS["get", "/api/v1/assessments"]["parameters"].append(
    {
        "name": "external_id",
        "in": "query",
        "required": False,
        "schema": EXTERNAL_ID,
        "description": "Integrations: one student's assessments (none for an unknown id).",
    }
)
OPERATIONS["post", "/api/v1/assessments/{assessment_id}/webhook"]["description"] = (
    "Signed with the owning account's secret (shown on the account page), or for an "
    "integration's student with the integration's secret (returned here as `signing_secret`); "
    "422 `INVALID_WEBHOOK_URL` for a bad or forbidden URL. Needs the `webhooks` scope."
)
OPERATIONS.update(
    {
        ("post", "/api/v1/students"): {
            "summary": "Create (or find) one of your students by external_id (integrations)",
            "description": "201 when created, 200 when the integration already had a student "
            "with this `external_id` (a `name` or `email` given replaces the stored one). The "
            "email is contact information only: never a login, not unique.",
            "requestBody": json_body(
                obj(
                    {"external_id": EXTERNAL_ID},
                    {
                        "name": nullable({"type": "string", "maxLength": 100}),
                        "email": nullable({"type": "string", "format": "email"}),
                    },
                )
            ),
            "responses": {
                "201": ok("Created.", STUDENT, headers={"Idempotent-Replayed": REPLAYED}),
                "200": ok("Found.", STUDENT, headers={"Idempotent-Replayed": REPLAYED}),
                **ERRORS_INTEGRATION,
            },
        },
        ("get", "/api/v1/students"): {
            "summary": "Your students (integrations), 100 a page",
            "parameters": [
                {"name": "external_id", "in": "query", "required": False, "schema": EXTERNAL_ID},
                {
                    "name": "after",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 0, "maximum": MAX_ID},
                    "description": "The next page: the `next_after` of the last one.",
                },
            ],
            "responses": {
                "200": ok(
                    "Students in the order they were created.",
                    obj({"students": list_of(STUDENT), "next_after": nullable(INTEGER)}),
                ),
                "403": answer("Forbidden"),
                "422": answer("Invalid"),
                **ERRORS_READ,
            },
        },
        ("post", "/api/v1/assessments/batch-submit"): {
            "summary": "Submit up to 100 assessments, each item on its own",
            "description": "Each item is run as `POST /assessments/{id}/submit` would run it, in "
            "its own transaction: its `status` and `body` are that endpoint's (202, 200 already "
            "submitted, or a problem such as 403, 404, 409, 422), and one item's failure "
            "changes nothing of another's nor applies half of itself. An item's "
            "`idempotency_key` is that endpoint's `Idempotency-Key`: a repeated item replays "
            '(its body then carries `"replayed": true`). A batch counts one write per item '
            "against the rate limit. 422 for a batch that is not 1-100 items.",
            "requestBody": json_body(
                obj({"items": {**list_of(BATCH_ITEM), "minItems": 1, "maxItems": 100}})
            ),
            "responses": {
                "200": ok(
                    "One result per item, in order.",
                    obj(
                        {
                            "results": list_of(
                                obj(
                                    {
                                        "index": INTEGER,
                                        "assessment_id": {"anyOf": [INTEGER, {"type": "null"}]},
                                        "status": INTEGER,
                                        "body": ANY_OBJECT,
                                    }
                                )
                            ),
                            "accepted": INTEGER,
                            "already_submitted": INTEGER,
                            "failed": INTEGER,
                        }
                    ),
                    headers={"Idempotent-Replayed": REPLAYED},
                ),
                **ERRORS_WRITE,
            },
        },
        ("post", "/api/v1/assessments/{assessment_id}/sign-in-link"): {
            "summary": "A single-use link that signs the student in (integrations)",
            "description": "Opening the link (a page with one button, so mail scanners and link "
            "previews cannot use it up) starts a browser session limited to the student's own "
            "pages and lands on the assessment's live progress page (its answer form while it "
            "is a draft). Used, expired or tampered links show a page saying so and grant "
            "nothing. `expires_in` defaults to SIGN_IN_LINK_TTL (300 s).",
            "requestBody": json_body(
                obj({}, {"expires_in": {"type": "integer", "minimum": 30, "maximum": 3600}}),
                required=False,
            ),
            "responses": {
                "201": ok(
                    "The link: send it to the student.",
                    obj(
                        {
                            "url": {"type": "string", "format": "uri"},
                            "expires_at": TIMESTAMP,
                            "assessment_id": INTEGER,
                            "external_id": EXTERNAL_ID,
                        }
                    ),
                    headers={"Idempotent-Replayed": REPLAYED},
                ),
                **ERRORS_INTEGRATION,
                "404": answer("NotFound"),
            },
        },
    }
)
LINKS["post", "/api/v1/assessments/{assessment_id}/sign-in-link", "201"] = {
    "assessment_id": "$response.body#/assessment_id"
}
