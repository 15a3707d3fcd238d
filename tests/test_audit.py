"""The audit log: entries for actions, admin-only reading, and never blocking the action."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from webapp.extensions import db

pytestmark = pytest.mark.db


def test_submission_is_audited(api, api_as):
    assessment = api.start()
    submitted = api.post(f"/assessments/{assessment['id']}/submit").json()
    entries = api_as("admin").get("/audit?action=assessment.submitted").json()["entries"]
    [entry] = [e for e in entries if e["entity_id"] == str(assessment["id"])]
    assert entry["actor"]["email"] == "student@example.com"
    assert entry["entity_type"] == "assessment"
    assert entry["details"]["operation_id"] == submitted["operation"]["id"]
    assert entry["ip"] == "127.0.0.1"


def test_audit_filters_by_actor_and_entity(api, api_as):
    mine = api.start()
    theirs = api_as("other").start()
    api.post(f"/assessments/{mine['id']}/submit")
    api_as("other").post(f"/assessments/{theirs['id']}/submit")
    admin = api_as("admin")
    by_actor = admin.get("/audit?actor=other@").json()["entries"]
    assert {e["entity_id"] for e in by_actor} == {str(theirs["id"])}
    by_entity = admin.get(f"/audit?entity_type=assessment&entity_id={mine['id']}").json()
    assert [e["actor"]["email"] for e in by_entity["entries"]] == ["student@example.com"]


def test_audit_log_is_admin_only(api):
    response = api.get("/audit")
    assert response.status_code == 403
    assert response.json()["code"] == "FORBIDDEN"


def test_a_broken_audit_log_does_not_fail_the_action(app, api):
    assessment = api.start()
    with app.app_context():
        with db.engine.begin() as conn:
            conn.execute(text("ALTER TABLE audit_entries RENAME TO audit_entries_away"))
        try:
            response = api.post(f"/assessments/{assessment['id']}/submit")
        finally:
            with db.engine.begin() as conn:
                conn.execute(text("ALTER TABLE audit_entries_away RENAME TO audit_entries"))
    assert response.status_code == 202
    assert api.get(f"/assessments/{assessment['id']}").json()["status"] != "draft"


def test_logins_and_logouts_are_audited(app, api_as):
    client = app.test_client()
    app.config["WTF_CSRF_ENABLED"] = False
    try:
        client.post("/login", data={"email": "student@example.com", "password": "nope-nope"})
        client.post("/login", data={"email": "student@example.com", "password": "student-password"})
        client.post("/logout")
    finally:
        app.config["WTF_CSRF_ENABLED"] = True
    admin = api_as("admin")
    actions = [e["action"] for e in admin.get("/audit").json()["entries"]]
    assert actions[:3] == ["logout", "login", "login_failed"]
    failed = admin.get("/audit?action=login_failed").json()["entries"][0]
    assert failed["details"] == {"email": "student@example.com"}
