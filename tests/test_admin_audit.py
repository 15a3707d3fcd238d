"""The admin audit page: entries, filters, escaping, admins only."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from tests.support import ADMIN, STUDENT, log_in_without_form
from webapp.extensions import db
from webapp.models import User
from webapp.services import audit
from webapp.services.audit import Action

ACTION = re.compile(r'data-testid="audit-action">([^<]+)<')


def record(app, action: Action, email: str, entity_type: str, entity_id, **details) -> None:
    with app.app_context():
        actor = db.session.scalar(select(User).where(User.email == email))
        audit.record(
            action, actor=actor, entity_type=entity_type, entity_id=entity_id, details=details
        )


@pytest.fixture()
def admin_client(app, client):
    log_in_without_form(app, client, ADMIN)
    return client


@pytest.fixture()
def entries(app):
    record(app, Action.ASSESSMENT_SUBMITTED, STUDENT[0], "assessment", 11, operation_id=5)
    record(app, Action.LOGIN, STUDENT[0], "user", 2)
    record(app, Action.ASSESSMENT_RESCORED, ADMIN[0], "assessment", 12, operation_id=6)


def rows(response) -> int:
    return len(ACTION.findall(response.get_data(as_text=True)))


def test_the_page_lists_entries_newest_first(admin_client, entries):
    response = admin_client.get("/admin/audit")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert ACTION.findall(html) == ["assessment.rescored", "login", "assessment.submitted"]
    assert "<dt>Operation id</dt><dd>5</dd>" in html
    assert '<a href="/assessments/11/progress">assessment #11</a>' in html


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("actor=student@", 2),
        ("actor=admin", 1),
        ("action=login", 1),
        ("action=assessment.submitted", 1),
        ("entity_type=assessment", 2),
        ("entity_type=assessment&entity_id=12", 1),
        ("actor=student&action=assessment.rescored", 0),
        ("action=no.such.action", 0),
    ],
)
def test_filters_narrow_the_entries(admin_client, entries, query, expected):
    response = admin_client.get(f"/admin/audit?{query}")
    assert response.status_code == 200
    assert rows(response) == expected
    if expected == 0:
        assert "No entries match these filters." in response.get_data(as_text=True)


def test_details_read_as_words_and_entities_link_to_their_pages(app, admin_client):
    events = ["assessment.completed", "assessment.failed"]
    changed = {"enabled": True}
    record(
        app, Action.WEBHOOK_ENDPOINT_UPDATED, ADMIN[0], "webhook_endpoint", 3,
        changed=changed, event_types=events,
    )  # fmt: skip
    html = admin_client.get("/admin/audit").get_data(as_text=True)
    assert "{'enabled': True}" not in html and "[" not in html.split("audit-details")[1][:300]
    assert "<dt>Changed</dt><dd>Enabled yes</dd>" in html
    assert "<dd>assessment.completed, assessment.failed</dd>" in html
    assert '<a href="/admin/webhooks/3">webhook_endpoint #3</a>' in html


def test_older_entries_page_back_past_the_newest_200(app, admin_client):
    for number in range(205):
        record(app, Action.LOGIN, STUDENT[0], "user", number)
    first = admin_client.get("/admin/audit").get_data(as_text=True)
    assert len(ACTION.findall(first)) == 200
    older = re.search(r'href="([^"]+)" data-testid="audit-older"', first).group(1)
    second = admin_client.get(older.replace("&amp;", "&")).get_data(as_text=True)
    assert len(ACTION.findall(second)) == 5
    assert "user #0<" in second and "user #204<" not in second
    assert 'data-testid="audit-older"' not in second


def test_filters_are_kept_in_the_form(admin_client, entries):
    html = admin_client.get("/admin/audit?action=login&actor=stud").get_data(as_text=True)
    assert '<option value="login" selected>' in html
    assert 'value="stud"' in html


def test_what_people_typed_is_escaped(app, admin_client):
    with app.app_context():
        audit.record(
            Action.LOGIN_FAILED,
            entity_type="user",
            entity_id="<img src=x onerror=alert(2)>",
            details={"email": "<script>alert(1)</script>"},
        )
    response = admin_client.get('/admin/audit?actor="><script>alert(3)</script>')
    html = response.get_data(as_text=True)
    assert "<script>alert" not in html
    assert "<img src=x" not in html
    assert "&lt;script&gt;alert(3)&lt;/script&gt;" in html  # the filter value, escaped
    html = admin_client.get("/admin/audit").get_data(as_text=True)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(2)&gt;" in html
    assert "system" in html  # no actor


def test_an_empty_log_says_so(admin_client):
    html = admin_client.get("/admin/audit").get_data(as_text=True)
    assert "Nothing has been recorded yet." in html


def test_students_get_403(app, client):
    log_in_without_form(app, client, STUDENT)
    assert client.get("/admin/audit").status_code == 403


def test_anonymous_visitors_are_sent_to_log_in(client):
    response = client.get("/admin/audit")
    assert response.status_code == 302
    assert "/login" in response.headers["Location"]


def test_the_page_fits_a_phone(admin_client, entries):
    html = admin_client.get("/admin/audit").get_data(as_text=True)
    assert 'name="viewport"' in html  # base.html
    assert 'class="table-wrap"' in html  # the table scrolls inside the page, never the page
    assert "student<wbr>@example.com" in html  # long emails may break after the local part


@pytest.mark.db
def test_the_audited_actions_of_the_api_are_recorded(api, api_as, worker):
    """Submitting, rescoring and starting an operation each leave an entry naming who and what."""
    from webapp.services.generation import QUESTION_TYPES, topics

    admin = api_as("admin")
    assessment = api.start()
    submitted = api.post(f"/assessments/{assessment['id']}/submit").json()
    api.wait_finished(assessment["id"])
    rescored = admin.post(f"/assessments/{assessment['id']}/rescore").json()
    params = {"topic": topics()[0], "question_type": QUESTION_TYPES[0]}
    created = admin.post(
        "/operations", json={"operation_type": "question_generation", "params": params}
    ).json()

    entries = admin.get("/audit").json()["entries"]
    seen = {(e["action"], e["entity_type"], e["entity_id"], e["actor"]["email"]) for e in entries}
    assert ("assessment.submitted", "assessment", str(assessment["id"]), STUDENT[0]) in seen
    assert ("assessment.rescored", "assessment", str(assessment["id"]), ADMIN[0]) in seen
    assert ("operation.created", "operation", str(created["id"]), ADMIN[0]) in seen
    details = {e["action"]: e["details"] for e in entries}
    assert details["assessment.submitted"]["operation_id"] == submitted["operation"]["id"]
    assert details["assessment.rescored"]["operation_id"] == rescored["id"]
