"""Property-based checks (hypothesis): whatever a client sends, the answer is never a 5xx.

The parsers either return a value the database can hold or refuse with ValidationFailed; the
API answers problem+json for every refusal; the pages answer a page. Generated input includes
lone surrogates, NUL, Unicode digits, huge numbers, extreme time zones and broken brackets.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import ADMIN, log_in_without_form
from webapp.errors import ValidationFailed
from webapp.request_values import (
    MAX_ID,
    parse_date,
    parse_id,
    parse_moment,
    parse_text,
    parse_whole_number,
)
from webapp.services.webhooks.url_guard import AddressGuard, InvalidWebhookUrl, validate_url

pytestmark = pytest.mark.db

FAST = settings(max_examples=150, deadline=None)
OVER_HTTP = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Text as scanners send it: any code point, surrogates included, plus the tricky ones often.
odd_text = st.one_of(
    st.text(),
    st.text(alphabet=st.characters(codec=None, categories=None)),
    st.sampled_from(["\ud800", "\x00", "²", "٣", "1_000", " 12 ", "-0", "0x1f", "1e9", "∞"]),
    st.integers().map(str),
    st.integers(min_value=10**15, max_value=10**40).map(str),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | odd_text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(odd_text, children, max_size=4)
    ),
    max_leaves=12,
)
offsets = st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59).map(
    lambda minutes: f"{'+' if minutes >= 0 else '-'}{abs(minutes) // 60:02}:{abs(minutes) % 60:02}"
)
# Days at both ends of what datetime holds, where a time zone can push a moment past the end.
datetimes = st.one_of(
    st.datetimes(),
    st.datetimes(max_value=datetime(1, 1, 2)),
    st.datetimes(min_value=datetime(9999, 12, 30)),
)
moments = st.one_of(
    odd_text,
    st.builds(lambda d, o: d.isoformat() + o, datetimes, offsets),
    st.builds(lambda d: d.isoformat(), st.datetimes()),
    json_values,
)
urls = st.one_of(
    odd_text,
    st.builds(
        lambda scheme, host, rest: f"{scheme}://{host}{rest}",
        st.sampled_from(["http", "https", "HTTP", "ftp", "javascript", ""]),
        st.one_of(
            odd_text,
            st.builds(lambda inner: f"[{inner}]", odd_text),
            st.builds(lambda inner: f"[{inner}", odd_text),
            st.ip_addresses().map(str),
            st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
        ),
        st.one_of(st.just("/"), odd_text, st.builds(lambda p: f":{p}/", odd_text)),
    ),
)


# --- the parsers ------------------------------------------------------------------------------


@FAST
@given(raw=st.one_of(st.none(), odd_text))
def test_whole_numbers_are_in_range_or_refused(raw):
    try:
        value = parse_whole_number(raw, "n", minimum=1, maximum=720)
    except ValidationFailed as exc:
        assert exc.errors == [{"field": "n", "message": "must be a whole number from 1 to 720"}]
        return
    assert value is None or 1 <= value <= 720


@FAST
@given(raw=st.one_of(st.none(), odd_text))
def test_ids_fit_the_integer_columns_or_are_refused(raw):
    try:
        value = parse_id(raw, "before")
    except ValidationFailed:
        return
    assert value is None or 1 <= value <= MAX_ID


@FAST
@given(raw=moments)
def test_moments_are_aware_utc_or_refused(raw):
    try:
        moment = parse_moment(raw, "since")
    except ValidationFailed as exc:
        assert exc.errors[0]["field"] == "since"
        return
    assert moment.tzinfo is UTC
    assert datetime.min.replace(tzinfo=UTC) <= moment


@FAST
@given(raw=st.one_of(st.none(), odd_text, st.dates().map(date.isoformat)))
def test_dates_are_whole_days_or_refused(raw):
    try:
        day = parse_date(raw, "created_to")
    except ValidationFailed:
        return
    assert day is None or day < date.max


@FAST
@given(raw=st.one_of(st.none(), odd_text))
def test_free_text_is_storable_or_refused(raw):
    try:
        text = parse_text(raw, "actor")
    except ValidationFailed:
        return
    assert text is None or text.encode("utf-8").find(b"\x00") == -1


@FAST
@given(url=urls)
def test_webhook_urls_are_accepted_or_refused_with_a_reason(url):
    try:
        accepted = validate_url(url, AddressGuard([]))
    except InvalidWebhookUrl as exc:
        assert exc.errors and exc.errors[0]["field"] == "url"
        return
    assert accepted.lower().startswith(("http://", "https://"))


# --- over HTTP: the API -----------------------------------------------------------------------


def assert_no_server_error(response) -> None:
    """Below 500, and every API refusal is problem+json in the documented shape."""
    assert response.status_code < 500, response.get_data(as_text=True)
    if response.status_code >= 400 and response.request.path.startswith("/api/"):
        assert response.headers["Content-Type"] == "application/problem+json"
        body = response.get_json()
        assert {"type", "title", "status", "detail", "code"} <= set(body)
        assert body["status"] == response.status_code


@pytest.fixture()
def draft(admin_api) -> dict:
    created = admin_api.post("/api/v1/assessments", json={"question_set": "python-basics"})
    return created.get_json()


def query(**params: str) -> str:
    """A query string as raw bytes would make it: a lone surrogate becomes invalid UTF-8."""
    return urlencode({k: v.encode("utf-8", "surrogatepass") for k, v in params.items()})


def send(client, method: str, path: str, body: object):
    """`body` as JSON text, surrogates escaped as \\udXXX the way a client would write them."""
    text = json.dumps(body, ensure_ascii=True)
    return client.open(path, method=method, data=text, content_type="application/json")


@OVER_HTTP
@given(before=odd_text, status=odd_text, hours=odd_text, actor=odd_text, entity_id=odd_text)
def test_api_query_parameters_never_give_a_5xx(
    admin_api,
    endpoint_id,
    before,
    status,
    hours,
    actor,
    entity_id,
):
    for path, params in [
        (f"/api/v1/webhook-endpoints/{endpoint_id}/deliveries", {"before": before}),
        (f"/api/v1/webhook-endpoints/{endpoint_id}/deliveries", {"status": status}),
        ("/api/v1/events/recent", {"hours": hours}),
        ("/api/v1/audit", {"actor": actor, "entity_id": entity_id}),
        ("/api/v1/assessments", {"status": status}),
    ]:
        assert_no_server_error(admin_api.get(f"{path}?{query(**params)}"))


@OVER_HTTP
@given(body=json_values, question_set=json_values, responses=json_values)
def test_assessment_bodies_never_give_a_5xx(admin_api, draft, body, question_set, responses):
    path = f"/api/v1/assessments/{draft['id']}"
    qid = draft["questions"][0]["id"]
    assert_no_server_error(send(admin_api, "POST", "/api/v1/assessments", body))
    assert_no_server_error(
        send(admin_api, "POST", "/api/v1/assessments", {"question_set": question_set})
    )
    assert_no_server_error(send(admin_api, "PUT", f"{path}/responses", {"responses": responses}))
    answer = {"responses": [{"question_id": qid, "answer": question_set}]}
    assert_no_server_error(send(admin_api, "PUT", f"{path}/responses", answer))
    assert_no_server_error(send(admin_api, "POST", f"{path}/webhook", {"webhook_url": body}))


@OVER_HTTP
@given(responses=json_values)
def test_submit_bodies_never_give_a_5xx(admin_api, responses):
    created = admin_api.post("/api/v1/assessments", json={"question_set": "python-basics"})
    path = f"/api/v1/assessments/{created.get_json()['id']}/submit"
    assert_no_server_error(send(admin_api, "POST", path, {"responses": responses}))


@OVER_HTTP
@given(url=urls, description=json_values, event_types=json_values, enabled=json_values)
def test_webhook_endpoint_bodies_never_give_a_5xx(
    admin_api,
    endpoint_id,
    url,
    description,
    event_types,
    enabled,
):
    body = {"url": url, "description": description, "event_types": event_types}
    assert_no_server_error(send(admin_api, "POST", "/api/v1/webhook-endpoints", body))
    path = f"/api/v1/webhook-endpoints/{endpoint_id}"
    assert_no_server_error(send(admin_api, "PATCH", path, {**body, "enabled": enabled}))
    assert_no_server_error(send(admin_api, "PATCH", path, {"url": url}))


@OVER_HTTP
@given(since=moments, body=json_values)
def test_recover_and_operation_bodies_never_give_a_5xx(admin_api, endpoint_id, since, body):
    path = f"/api/v1/webhook-endpoints/{endpoint_id}/recover"
    assert_no_server_error(send(admin_api, "POST", path, {"since": since}))
    assert_no_server_error(send(admin_api, "POST", "/api/v1/operations", body))
    generation = {"operation_type": "question_generation", "params": body}
    assert_no_server_error(send(admin_api, "POST", "/api/v1/operations", generation))


# --- over HTTP: the pages ---------------------------------------------------------------------


@OVER_HTTP
@given(value=odd_text, name=st.sampled_from(["question_set", "created_from", "created_to",
                                             "status", "degraded"]))  # fmt: skip
def test_page_query_parameters_never_give_a_5xx(site, endpoint_id, value, name):
    browser = site.test_client()
    log_in_without_form(site, browser, ADMIN)
    for path, params in [
        ("/admin/operations", {name: value}),
        (f"/admin/webhooks/{endpoint_id}", {"before": value, "status": value}),
        (f"/admin/webhooks/{endpoint_id}/deliveries", {"before": value}),
        ("/admin/audit", {"actor": value, "entity_id": value, "action": value}),
    ]:
        assert_no_server_error(browser.get(f"{path}?{query(**params)}"))


# --- over HTTP: headers -------------------------------------------------------------------------

# What a header can carry: Latin-1, no line breaks.
header_values = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=80,
) | st.sampled_from(["http://[::1/", "Bearer ", "Bearer \xe9", '"', "W/", "*", "bearer x y"])


@OVER_HTTP
@given(
    authorization=header_values,
    if_none_match=header_values,
    idempotency_key=header_values,
    current_url=header_values,
    accept=header_values,
)
def test_request_headers_never_give_a_5xx(
    site,
    authorization,
    if_none_match,
    idempotency_key,
    current_url,
    accept,
):
    client = site.test_client()
    odd = {"If-None-Match": if_none_match, "Accept": accept, "HX-Current-URL": current_url}
    for method, path, headers in [
        ("GET", "/api/v1/assessments/1/status", {"Authorization": authorization, **odd}),
        ("POST", "/api/v1/assessments", {"Authorization": authorization,
                                         "Idempotency-Key": idempotency_key}),
        ("GET", "/assessments/1/progress/live", {"HX-Request": "true", **odd}),
        ("GET", "/login", odd),
    ]:  # fmt: skip
        assert_no_server_error(client.open(path, method=method, headers=headers, json={}))
