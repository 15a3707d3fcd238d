"""The OpenAPI document: public, valid, every route in it; schemathesis against a live server."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from openapi_spec_validator import validate
from rq import Queue

from webapp.queues import QUEUE_NAMES, get_redis

HTTP_METHODS = {"get", "put", "post", "delete", "patch"}


def url_map_routes(app) -> set[tuple[str, str]]:
    """(method, path) of every rule under /api/v1 plus the health checks, from the URL map."""
    found = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/v1/") or rule.rule in ("/healthz", "/readyz"):
            path = re.sub(r"<(?:\w+(?:\([^)]*\))?:)?(\w+)>", r"{\1}", rule.rule)
            for method in rule.methods - {"HEAD", "OPTIONS"}:
                found.add((method.lower(), path))
    return found


def documented(document: dict) -> set[tuple[str, str]]:
    return {
        (method, path)
        for path, item in document["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


def test_the_document_is_public_and_valid_openapi(client):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    document = response.get_json()
    assert document["openapi"].startswith("3.1")
    validate(document)


def test_every_route_is_documented_and_nothing_else(app, client):
    document = client.get("/api/v1/openapi.json").get_json()
    assert documented(document) == url_map_routes(app)


def test_every_operation_documents_its_errors(client):
    document = client.get("/api/v1/openapi.json").get_json()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            assert "default" in responses, (method, path)
            if path.startswith("/api/v1/") and operation.get("security") != []:
                assert "401" in responses and "429" in responses, (method, path)
            if method == "post":
                names = [p.get("$ref", "").rsplit("/", 1)[-1] for p in operation["parameters"]]
                assert "IdempotencyKey" in names, (method, path)
                assert {"400", "409", "422"} <= set(responses), (method, path)


def test_problem_responses_match_the_problem_schema(client, tokens):
    document = client.get("/api/v1/openapi.json").get_json()
    problem = document["components"]["schemas"]["Problem"]
    body = client.get(
        "/api/v1/assessments/999999", headers={"Authorization": f"Bearer {tokens['student']}"}
    ).get_json()
    assert set(problem["required"]) <= set(body)


# --- what schemathesis found once, kept fixed ---------------------------------------------------


@pytest.mark.db
@pytest.mark.parametrize(
    "path",
    ["/assessments/2147483648", f"/assessments/{2**63}/status", f"/operations/{10**30}"],
)
def test_ids_beyond_the_integer_columns_are_404(client, tokens, path):
    headers = {"Authorization": f"Bearer {tokens['student']}"}
    response = client.get(f"/api/v1{path}", headers=headers)
    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/problem+json"


@pytest.mark.db
def test_nul_characters_are_refused_with_422(client, tokens):
    headers = {"Authorization": f"Bearer {tokens['admin']}"}
    created = client.post(
        "/api/v1/assessments", json={"question_set": "python\u0000basics"}, headers=headers
    )
    assert created.status_code == 422
    assert created.get_json()["errors"] == [
        {"field": "body.question_set", "message": "contains a NUL character"}
    ]
    searched = client.get("/api/v1/audit?actor=a%00b", headers=headers)
    assert searched.status_code == 422
    assert searched.get_json()["code"] == "VALIDATION_ERROR"


@pytest.mark.db
def test_json_nested_too_deep_is_400_not_500(client, tokens):
    response = client.post(
        "/api/v1/assessments",
        data="[" * 100_000 + "]" * 100_000,
        headers={"Authorization": f"Bearer {tokens['student']}", "Idempotency-Key": "deep"},
        content_type="application/json",
    )
    assert response.status_code == 400
    assert response.get_json()["code"] == "MALFORMED_JSON"


# Generated data must never aim outgoing webhooks (or their DNS look-ups) anywhere, so the
# operations that register a URL are left to the webhook tests and their loopback receivers.
REGISTERS_URLS = (
    "POST /api/v1/webhook-endpoints",
    "PATCH /api/v1/webhook-endpoints/{endpoint_id}",
    "POST /api/v1/assessments/{assessment_id}/webhook",
)


def test_the_operations_kept_from_schemathesis_exist(app):
    names = {f"{method.upper()} {path}" for method, path in url_map_routes(app)}
    if any("webhook" in name for name in names):
        assert set(REGISTERS_URLS) <= names, "a route that registers URLs was renamed"


@pytest.mark.db
def test_schemathesis_finds_no_server_errors_and_no_schema_violations(
    app, live_server, tokens, tmp_path, worker
):
    """Property-based requests from the document, as an admin, against the live server.

    A real worker runs meanwhile, as in any deployment: without one /readyz rightly answers 503,
    which this check would count as a server error.
    """
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    assert st, "schemathesis is not installed (requirements-dev.txt)"
    command = [
        st,
        "run",
        f"{live_server.url}/api/v1/openapi.json",
        "--url",
        live_server.url,
        "--header",
        f"Authorization: Bearer {tokens['admin']}",
        "--checks",
        "not_a_server_error,response_schema_conformance,content_type_conformance,"
        "status_code_conformance",
        "--max-examples",
        "25",
        "--seed",
        "20261124",
        "--workers",
        "1",  # hypothesis' lambda descriptions are not thread-safe on Python 3.11
        "--generation-database",
        "none",
        "--request-timeout",
        "20",
        "--no-color",
        *(arg for name in REGISTERS_URLS for arg in ("--exclude-name", name)),
    ]
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=240, cwd=tmp_path, check=False
        )
    finally:
        # Submits and rescoring enqueued real work; no worker should find it later.
        with app.app_context():
            for name in QUEUE_NAMES:
                Queue(name, connection=get_redis(app)).empty()
    assert result.returncode == 0, result.stdout[-15000:] + result.stderr[-3000:]
