"""The admin webhook pages over HTTP: who may see them, CSRF, escaping, the polled log."""

from __future__ import annotations

import pytest

from tests.support import ADMIN, STUDENT, csrf_token, log_in

URL = "https://hooks.example.invalid/scoreline"

pytestmark = pytest.mark.db


@pytest.fixture()
def admin_browser(app):
    client = app.test_client()
    log_in(client, ADMIN)
    return client


def add(client, **form) -> str:
    """Submit the add form; returns the endpoint page's path."""
    data = {"csrf_token": csrf_token(client, "/admin/webhooks"), "url": URL, **form}
    response = client.post("/admin/webhooks", data=data)
    assert response.status_code == 302, response.get_data(as_text=True)
    return response.headers["Location"]


def test_students_get_403_and_strangers_the_login_page(app):
    stranger = app.test_client()
    assert stranger.get("/admin/webhooks").status_code == 302
    student = app.test_client()
    log_in(student, STUDENT)
    assert student.get("/admin/webhooks").status_code == 403


def test_a_form_without_its_csrf_token_changes_nothing(admin_browser):
    response = admin_browser.post("/admin/webhooks", data={"url": URL})
    assert response.status_code == 400
    assert "Form not accepted" in response.get_data(as_text=True)
    assert "No endpoints yet" in admin_browser.get("/admin/webhooks").get_data(as_text=True)


def test_what_an_admin_typed_is_escaped(admin_browser):
    page = add(admin_browser, description='<script>alert("x")</script>')
    html = admin_browser.get(page).get_data(as_text=True)
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html


def test_the_event_filter_is_saved_from_the_checkboxes(admin_browser, client, tokens):
    page = add(admin_browser, event_types=["assessment.completed", "assessment.failed"])
    endpoint_id = int(page.rsplit("/", 1)[1])
    shown = client.get(
        f"/api/v1/webhook-endpoints/{endpoint_id}",
        headers={"Authorization": f"Bearer {tokens['admin']}"},
    ).get_json()
    assert shown["event_types"] == ["assessment.completed", "assessment.failed"]


def test_a_forbidden_url_is_422_with_the_reason(admin_browser):
    data = {"csrf_token": csrf_token(admin_browser, "/admin/webhooks"), "url": "http://10.0.0.1/"}
    response = admin_browser.post("/admin/webhooks", data=data)
    assert response.status_code == 422
    assert "10.0.0.1 is a private address" in response.get_data(as_text=True)


def test_the_log_partial_stops_polling_when_nothing_waits(admin_browser):
    page = add(admin_browser)
    response = admin_browser.get(f"{page}/deliveries", headers={"HX-Request": "true"})
    assert response.status_code == 286
    assert "No deliveries yet" in response.get_data(as_text=True)


def test_the_log_filters_and_unknown_pages_are_404(admin_browser):
    page = add(admin_browser)
    filtered = admin_browser.get(f"{page}?status=failed&event_type=webhook.test")
    assert filtered.status_code == 200
    assert "No deliveries match these filters" in filtered.get_data(as_text=True)
    assert admin_browser.get("/admin/webhooks/999999").status_code == 404
    assert admin_browser.get("/admin/webhooks/deliveries/999999").status_code == 404
