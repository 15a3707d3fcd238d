"""The OpenAPI document: public, valid, built from every route's models; schemathesis against a
live server."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from flask_openapi3 import APIBlueprint
from hypothesis import given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate
from pydantic import BaseModel, ConfigDict
from rq import Queue

from webapp import create_app
from webapp.queues import QUEUE_NAMES, get_redis
from webapp.services import idempotency

HTTP_METHODS = {"get", "put", "post", "delete", "patch"}
READ_ONLY = {"/api/v1/openapi.json"}  # answers a document, not a model


@pytest.fixture()
def document(client) -> dict:
    return client.get("/api/v1/openapi.json").get_json()


def operations(document: dict):
    """(method, path, operation) of every documented operation."""
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield method, path, operation


def test_the_document_is_public_and_valid_openapi(client):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    document = response.get_json()
    assert document["openapi"].startswith("3.1")
    validate(document)


# --- drift: the document is built from the routes' models, so these catch a route or a field
# that escaped them ------------------------------------------------------------------------------


def test_every_api_route_is_declared_with_its_models(app, document):
    """A route added with plain Flask (`add_url_rule`, `doc_ui=False`) is missing here."""
    documented = {(method, path) for method, path, _ in operations(document)}
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/v1/") or rule.rule in ("/healthz", "/readyz"):
            path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
            for method in rule.methods - {"HEAD", "OPTIONS"}:
                assert (method.lower(), path) in documented, f"{method} {rule.rule}"


def test_every_operation_declares_its_parameters_and_answers(document):
    for method, path, operation in operations(document):
        declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
        assert declared == set(re.findall(r"{(\w+)}", path)), (method, path)
        success = {s: r for s, r in operation["responses"].items() if s.startswith("2")}
        assert success, (method, path)
        if path not in READ_ONLY:
            for status, response in success.items():
                if status != "204":
                    schema = response["content"]["application/json"]["schema"]
                    assert "$ref" in schema, (method, path, status)


def test_every_body_says_what_a_schema_can(document):
    """Strings are bounded and NUL-free, extra fields are NUL-free too, or refused."""
    schemas = document["components"]["schemas"]
    bodies = {
        op["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
        for _, _, op in operations(document)
        if "requestBody" in op
    }
    assert bodies
    for name in bodies:
        schema = schemas[name]
        assert schema.get("propertyNames") == {"pattern": "^[^\\x00]*$"}, name
        assert schema.get("additionalProperties") in (
            False,
            {"$ref": "#/components/schemas/NulFreeJson"},
        ), name


def test_every_operation_documents_its_errors(document):
    for method, path, operation in operations(document):
        responses = operation["responses"]
        assert "default" in responses, (method, path)
        if path.startswith("/api/v1/"):
            assert {"401", "422", "429"} <= set(responses), (method, path)
        if method == "post":
            names = [p["name"] for p in operation["parameters"]]
            assert "Idempotency-Key" in names, (method, path)
            assert "409" in responses, (method, path)


def test_the_idempotency_key_pattern_is_what_the_service_accepts(document):
    (header,) = [
        p
        for _, _, op in operations(document)
        for p in op.get("parameters", [])
        if p["name"] == "Idempotency-Key"
    ][:1]
    pattern = re.compile(header["schema"]["pattern"])

    @given(st.text(st.characters(max_codepoint=0x7F), max_size=258))
    @settings(max_examples=300, deadline=None)
    def agrees(key):
        try:
            accepted = idempotency.parse_key(key) is not None
        except idempotency.InvalidIdempotencyKey:
            accepted = False
        if pattern.match(key):
            assert accepted, key
        elif key == key.strip() and not (len(key) >= 2 and key[0] == key[-1] == '"'):
            assert not accepted, key  # bare keys: exactly the pattern

    agrees()


def test_a_field_served_but_not_declared_is_caught(app):
    """Tests run with response validation: an answer with a field its model lacks is a 500."""
    probe = create_app({**app.config, "TESTING": True})
    bp = APIBlueprint("drift_probe", __name__, url_prefix="/probe")

    class Thing(BaseModel):
        model_config = ConfigDict(extra="forbid")
        id: int

    @bp.get("/thing", responses={200: Thing})
    def thing():
        return {"id": 1, "secret": "not in the model"}

    @bp.get("/fine", responses={200: Thing})
    def fine():
        return {"id": 1}

    probe.register_api(bp)
    client = probe.test_client()
    assert client.get("/probe/fine").status_code == 200
    assert client.get("/probe/thing").status_code == 500


def test_problem_responses_match_the_problem_schema(client, tokens, document):
    problem = document["components"]["schemas"]["Problem"]
    body = client.get(
        "/api/v1/assessments/999999", headers={"Authorization": f"Bearer {tokens['student']}"}
    ).get_json()
    assert set(problem["required"]) <= set(body)


# --- answers every route shares -------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("delete", "/api/v1/question-sets", {"GET"}),
        ("put", "/api/v1/operations/1", {"GET"}),
        ("post", "/api/v1/assessments/1", {"GET"}),
    ],
)
def test_an_undeclared_method_is_405_problem_with_allow(client, tokens, method, path, allowed):
    headers = {"Authorization": f"Bearer {tokens['admin']}"}
    response = getattr(client, method)(path, headers=headers)
    assert response.status_code == 405
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.get_json()["code"] == "METHOD_NOT_ALLOWED"
    assert allowed <= {m.strip() for m in response.headers["Allow"].split(",")}


def test_a_page_answers_405_with_allow_too(client):
    response = client.open("/healthz", method="TRACE")
    assert response.status_code == 405
    assert "GET" in response.headers["Allow"]


def test_a_validation_error_lists_every_field_problem(client, tokens):
    response = client.post(
        "/api/v1/webhook-endpoints",
        json={
            "url": "https://example.com/hook",
            "description": "x" * 501,
            "enabled": "yes",
            "event_types": "assessment.completed",
            "colour": "blue",
        },
        headers={"Authorization": f"Bearer {tokens['admin']}"},
    )
    assert response.status_code == 422
    problem = response.get_json()
    assert problem["code"] == "VALIDATION_ERROR"
    fields = [error["field"] for error in problem["errors"]]
    assert sorted(fields) == ["colour", "description", "enabled", "event_types"]
    assert all(error["message"] for error in problem["errors"])


def test_a_json_body_sent_as_another_type_is_415(client, tokens):
    response = client.post(
        "/api/v1/assessments",
        data='{"question_set": "python-basics"}',
        content_type="text/plain",
        headers={"Authorization": f"Bearer {tokens['student']}"},
    )
    assert response.status_code == 415
    assert response.headers["Content-Type"] == "application/problem+json"


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


def test_the_operations_kept_from_schemathesis_exist(document):
    names = {f"{method.upper()} {path}" for method, path, _ in operations(document)}
    assert set(REGISTERS_URLS) <= names, "a route that registers URLs was renamed"


@pytest.mark.db
@pytest.mark.timeout(900)
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
        "--config-file",
        str(Path(__file__).with_name("schemathesis.toml")),
        "run",
        f"{live_server.url}/api/v1/openapi.json",
        "--url",
        live_server.url,
        "--header",
        f"Authorization: Bearer {tokens['admin']}",
        "--checks",
        "all",
        "--mode",
        "all",  # schema-valid data must be accepted, schema-violating data refused
        "--max-examples",
        "5",  # per operation and mode; CI runs this twice (SQLite and PostgreSQL)
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
            command,
            capture_output=True,
            text=True,
            timeout=840,
            cwd=tmp_path,
            check=False,
            env={
                **os.environ,
                "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks",
                "PYTHONPATH": str(Path(__file__).parent.parent),
            },
        )
    finally:
        # Submits and rescoring enqueued real work; no worker should find it later.
        with app.app_context():
            for name in QUEUE_NAMES:
                Queue(name, connection=get_redis(app)).empty()
    assert result.returncode == 0, result.stdout[-15000:] + result.stderr[-3000:]
