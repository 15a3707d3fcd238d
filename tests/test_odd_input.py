"""Odd input gets a clear 4xx, never a 500: the cases a scanner found (issue 13, rows 9 and 10)."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import requests

from tests.support import ADMIN, LiveServer, log_in, log_in_without_form
from webapp import create_app
from webapp.services import audit
from webapp.services.audit import Action

pytestmark = pytest.mark.db

SHOWN_ACTOR = re.compile(r'data-testid="audit-actor">([^ ]*?)</span>')


def same_database(app) -> dict:
    """The config another app needs to share the session's database, key and rate limits."""
    names = ("TESTING", "SQLALCHEMY_DATABASE_URI", "SECRET_KEY")
    return {
        name: value
        for name, value in app.config.items()
        if name.startswith("RATE_LIMIT_") or name in names
    }


def assert_problem(response, status: int, code: str) -> dict:
    """The response is problem+json with this status and code; returns its body."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.headers["Content-Type"] == "application/problem+json"
    body = response.get_json()
    assert body["status"] == status and body["code"] == code
    assert {"type", "title", "detail"} <= set(body)
    return body


def raw_json(client, method: str, path: str, text: str):
    """Send `text` as the JSON body, byte for byte (escapes such as \\ud800 stay as written)."""
    return client.open(path, method=method, data=text.encode(), content_type="application/json")


# --- JSON bodies ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", "/api/v1/assessments", '{"question_set": "\\ud800"}', "body.question_set"),
        ("POST", "/api/v1/assessments", '{"\\udfff": 1}', "body.'\\udfff'"),
        ("POST", "/api/v1/webhook-endpoints", '{"url": "https://e.com/\\ud800"}', "body.url"),
        (
            "POST",
            "/api/v1/operations",
            '{"operation_type": "question_generation", "params": {"topic": "x\\udbff"}}',
            "body.params.topic",
        ),
    ],
)
def test_a_lone_surrogate_in_any_json_string_is_422(admin_api, method, path, body, field):
    problem = assert_problem(raw_json(admin_api, method, path, body), 422, "VALIDATION_ERROR")
    assert problem["errors"][0]["field"] == field
    assert "surrogate" in problem["errors"][0]["message"]


def test_a_surrogate_pair_is_an_ordinary_character(admin_api):
    created = raw_json(
        admin_api,
        "POST",
        "/api/v1/webhook-endpoints",
        '{"url": "https://example.com/h", "description": "ok \\ud83d\\ude00"}',
    )
    assert created.status_code == 201
    assert created.get_json()["description"] == "ok \U0001f600"


def test_a_lone_surrogate_in_answers_is_422(site, admin_api):
    assessment = admin_api.post("/api/v1/assessments", json={"question_set": "python-basics"})
    qid = assessment.get_json()["questions"][0]["id"]
    path = f"/api/v1/assessments/{assessment.get_json()['id']}/responses"
    body = f'{{"responses": [{{"question_id": {qid}, "answer": "a\\ud800b"}}]}}'
    problem = assert_problem(raw_json(admin_api, "PUT", path, body), 422, "VALIDATION_ERROR")
    assert problem["errors"][0]["field"] == "body.responses[0].answer"


# --- webhook URLs -----------------------------------------------------------------------------

MALFORMED_URLS = [
    "http://[::1/",
    "http://[zz]/",
    "https://[::1]]/",
    "http://[/",
    "http://]/",
    "http://[1.2.3.4]/",
    "http://[v1.x]/",
]


@pytest.mark.parametrize("url", MALFORMED_URLS)
def test_malformed_webhook_urls_are_invalid_webhook_url(admin_api, endpoint_id, url):
    created = admin_api.post("/api/v1/webhook-endpoints", json={"url": url})
    assert_problem(created, 422, "INVALID_WEBHOOK_URL")
    patched = admin_api.patch(f"/api/v1/webhook-endpoints/{endpoint_id}", json={"url": url})
    assert_problem(patched, 422, "INVALID_WEBHOOK_URL")


def test_a_malformed_callback_url_is_invalid_webhook_url(admin_api):
    assessment = admin_api.post("/api/v1/assessments", json={"question_set": "python-basics"})
    path = f"/api/v1/assessments/{assessment.get_json()['id']}/webhook"
    answer = admin_api.post(path, json={"webhook_url": "http://[::1/"})
    assert_problem(answer, 422, "INVALID_WEBHOOK_URL")


def test_a_malformed_url_in_the_settings_form_is_said_on_the_page(site):
    browser = site.test_client()
    token = log_in(browser, ADMIN)
    page = browser.post(
        "/admin/webhooks",
        data={"csrf_token": token, "url": "http://[zz]/", "description": ""},
    )
    assert page.status_code == 422
    assert "malformed" in page.get_data(as_text=True)


# --- query parameters -------------------------------------------------------------------------

BAD_IDS = ["99999999999999999999999", "2147483648", "%C2%B2", "%D9%A3", "-1", "0", "1.5", "1e3"]


@pytest.mark.parametrize("before", BAD_IDS)
def test_a_bad_before_on_the_delivery_log_is_422(admin_api, endpoint_id, before):
    answer = admin_api.get(f"/api/v1/webhook-endpoints/{endpoint_id}/deliveries?before={before}")
    problem = assert_problem(answer, 422, "VALIDATION_ERROR")
    assert problem["errors"] == [
        {"field": "before", "message": "must be a whole number from 1 to 2147483647"}
    ]


def test_a_good_before_pages_the_delivery_log(admin_api, endpoint_id):
    answer = admin_api.get(f"/api/v1/webhook-endpoints/{endpoint_id}/deliveries?before=2147483647")
    assert answer.status_code == 200
    assert answer.get_json()["deliveries"] == []


@pytest.mark.parametrize("before", BAD_IDS)
def test_a_bad_before_on_the_admin_webhook_pages_shows_the_newest(site, endpoint_id, before):
    browser = site.test_client()
    log_in_without_form(site, browser, ADMIN)
    page = browser.get(f"/admin/webhooks/{endpoint_id}?before={before}")
    assert page.status_code == 200
    partial = browser.get(
        f"/admin/webhooks/{endpoint_id}/deliveries?before={before}",
        headers={"HX-Request": "true"},
    )
    assert partial.status_code in (200, 286)


@pytest.mark.parametrize("hours", ["%C2%B2", "%D9%A3", "99999999999999999999999", "0", "721", "x"])
def test_a_bad_hours_on_recent_events_is_422(admin_api, hours):
    answer = admin_api.get(f"/api/v1/events/recent?hours={hours}")
    assert_problem(answer, 422, "VALIDATION_ERROR")


def test_recent_events_take_whole_hours(admin_api):
    assert admin_api.get("/api/v1/events/recent").get_json()["hours"] == 24
    assert admin_api.get("/api/v1/events/recent?hours=%2048%20").get_json()["hours"] == 48


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("question_set=%C2%B2", "No such question set"),
        ("question_set=99999999999999999999999", "No such question set"),
        ("created_to=9999-12-31", "is not a date"),
        ("created_from=0001-13-01", "is not a date"),
        ("created_from=%C2%B2", "is not a date"),
    ],
)
def test_bad_filters_on_the_operations_page_are_explained(site, query, message):
    browser = site.test_client()
    log_in_without_form(site, browser, ADMIN)
    page = browser.get(f"/admin/operations?{query}")
    assert page.status_code == 200
    assert message in page.get_data(as_text=True)


# --- recover since ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("since", "message"),
    [
        ("0001-01-01T00:00:00+14:00", "is out of range (years 1 to 9999 in UTC)"),
        ("9999-12-31T23:59:59-14:00", "is out of range (years 1 to 9999 in UTC)"),
        ("2024-02-30T00:00:00Z", "must be an ISO 8601 timestamp"),
        ("²", "must be an ISO 8601 timestamp"),
        (12, "is required: an ISO 8601 timestamp, e.g. 2025-01-31T12:00:00Z"),
    ],
)
def test_an_impossible_since_on_recover_is_422(admin_api, endpoint_id, since, message):
    answer = admin_api.post(
        f"/api/v1/webhook-endpoints/{endpoint_id}/recover", json={"since": since}
    )
    problem = assert_problem(answer, 422, "VALIDATION_ERROR")
    assert problem["errors"] == [{"field": "since", "message": message}]


def test_the_first_moment_of_year_one_in_utc_is_a_fine_since(admin_api, endpoint_id):
    answer = admin_api.post(
        f"/api/v1/webhook-endpoints/{endpoint_id}/recover",
        json={"since": "0001-01-01T10:00:00+10:00"},
    )
    assert answer.status_code == 202
    assert answer.get_json()["since"] == "0001-01-01T00:00:00.000Z"


# --- NUL in forms and pages -------------------------------------------------------------------


def test_nul_in_a_form_answer_is_refused_with_a_message_on_the_page(site):
    browser = site.test_client()
    token = log_in(browser)
    started = browser.post(
        "/assessments", data={"csrf_token": token, "question_set": "python-basics"}
    )
    assessment_path = started.headers["Location"]
    html = browser.get(assessment_path).get_data(as_text=True)
    essay = re.search(r'<textarea[^>]*name="(q-\d+)"', html).group(1)
    page = browser.post(assessment_path, data={"csrf_token": token, essay: "half\x00way"})
    assert page.status_code == 422
    text = page.get_data(as_text=True)
    assert "the answer contains a NUL character; remove it." in text
    assert 'name="csrf_token"' in text  # the form again, to fix and resend


@pytest.mark.parametrize("name", ["actor", "action", "entity_type", "entity_id"])
def test_nul_in_an_audit_page_filter_is_explained_and_ignored(site, actors, name):
    browser = site.test_client()
    log_in_without_form(site, browser, ADMIN)
    page = browser.get(f"/admin/audit?{name}=a%00b")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert f"The {name.replace('_', ' ')} filter contains a NUL character; ignored." in text
    assert len(SHOWN_ACTOR.findall(text)) == 3  # unfiltered


def test_nul_in_a_settings_form_is_a_422_page(site, endpoint_id):
    browser = site.test_client()
    token = log_in(browser, ADMIN)
    page = browser.post(
        f"/admin/webhooks/{endpoint_id}",
        data={"csrf_token": token, "url": "https://example.com/h", "description": "a\x00b"},
    )
    assert page.status_code == 422
    assert "description contains a NUL character" in page.get_data(as_text=True)


# --- bodies of unknown length -----------------------------------------------------------------


@pytest.fixture(scope="module")
def small_limit_server(site):
    """A live server (real HTTP, chunked bodies and all) for an app taking bodies up to 4 KB."""
    server = LiveServer(create_app({**same_database(site), "MAX_CONTENT_LENGTH": 4096}))
    yield server
    server.stop()


def post(server: LiveServer, token: str, body, path: str = "/api/v1/assessments"):
    """POST `body` as JSON; a generator is sent chunked (no Content-Length), bytes are not."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    return requests.post(f"{server.url}{path}", data=body, headers=headers, timeout=30)


def chunked(body: bytes, size: int = 1000):
    """The body as a generator: requests sends it chunked, with no Content-Length."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


def test_a_chunked_body_over_the_limit_is_413(small_limit_server, tokens):
    body = b'{"question_set": "python-basics", "padding": "' + b"x" * 8000 + b'"}'
    answer = post(small_limit_server, tokens["student"], chunked(body))
    assert answer.request.headers.get("Transfer-Encoding") == "chunked"
    assert "Content-Length" not in answer.request.headers
    assert answer.status_code == 413, answer.text
    assert answer.json()["code"] == "PAYLOAD_TOO_LARGE"


def test_a_chunked_body_within_the_limit_arrives_whole(small_limit_server, tokens):
    # Exactly at the limit: every byte must arrive, or the JSON would be cut and refused.
    head, tail = b'{"question_set": "python-basics", "x": "', b'"}'
    body = head + b"y" * (4096 - len(head) - len(tail)) + tail
    answer = post(small_limit_server, tokens["student"], chunked(body))
    assert answer.status_code == 201, answer.text


def test_a_sized_body_over_the_limit_is_413_too(small_limit_server, tokens):
    answer = post(small_limit_server, tokens["student"], b"{" + b" " * 5000 + b"}")
    assert answer.status_code == 413
    assert answer.json()["code"] == "PAYLOAD_TOO_LARGE"


# --- the audit actor filter -------------------------------------------------------------------


@pytest.fixture()
def actors(site):
    """Entries by three actors whose emails differ where LIKE would see wildcards."""
    with site.app_context():
        for email in ("a_b@example.com", "axb@example.com", "100%@example.com"):
            audit.record(Action.LOGIN, actor=SimpleNamespace(id=None, email=email))


@pytest.mark.parametrize(
    ("actor", "expected"),
    [
        ("a_b", {"a_b@example.com"}),
        ("%", {"100%@example.com"}),
        ("_", {"a_b@example.com"}),
        ("a%b", set()),
        ("axb@", {"axb@example.com"}),
    ],
)
def test_the_audit_actor_filter_matches_literally(site, admin_api, actors, actor, expected):
    found = admin_api.get("/api/v1/audit", query_string={"actor": actor}).get_json()["entries"]
    assert {e["actor"]["email"] for e in found} == expected
    browser = site.test_client()
    log_in_without_form(site, browser, ADMIN)
    page = browser.get("/admin/audit", query_string={"actor": actor}).get_data(as_text=True)
    shown = {cell.replace("<wbr>", "") for cell in SHOWN_ACTOR.findall(page)}
    assert shown == expected


# --- path segments ----------------------------------------------------------------------------


@pytest.mark.parametrize("job_id", ["a%20b", "%00", "%C2%B2", "x:y", "a.b"])
def test_an_odd_job_id_to_requeue_is_explained_not_a_500(site, job_id):
    browser = site.test_client()
    token = log_in(browser, ADMIN)
    answer = browser.post(
        f"/admin/operations/queues/scoring/jobs/{job_id}/requeue",
        data={"csrf_token": token},
        follow_redirects=True,
    )
    assert answer.status_code == 200
    assert "is no longer in the failed list" in answer.get_data(as_text=True)


# --- headers --------------------------------------------------------------------------------


@pytest.mark.parametrize("current_url", ["http://[::1/", "http://[zz]/x", "\x7f"])
def test_an_odd_htmx_current_url_still_sends_a_logged_out_poll_to_the_login(site, current_url):
    answer = site.test_client().get(
        "/assessments/1/progress/live",
        headers={"HX-Request": "true", "HX-Current-URL": current_url},
    )
    assert answer.status_code == 200
    assert answer.headers["HX-Redirect"].startswith("/login")


def test_a_logged_out_tab_comes_back_to_its_page_after_login(client):
    answer = client.get(
        "/", headers={"HX-Request": "true", "HX-Current-URL": "http://localhost/assessments/7"}
    )
    assert answer.headers["HX-Redirect"] == "/login?next=/assessments/7"
