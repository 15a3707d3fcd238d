"""The admin webhook settings page in Chromium: add an endpoint, send a test event, read the
attempt in the log, redeliver, rotate the secret; every received signature verified."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect
from standardwebhooks import Webhook

from tests.e2e.support import log_in, screenshot
from tests.support import LiveServer

pytestmark = [pytest.mark.e2e, pytest.mark.db]


@pytest.fixture()
def settings_site(webhook_site):
    """A live site whose worker may deliver to loopback receivers."""
    site = webhook_site()
    server = LiveServer(site.app)
    yield server.url
    server.stop()


def revealed_secret(page: Page) -> str:
    """Open the secret's disclosure and read it."""
    secret = page.get_by_test_id("endpoint-secret")
    if not secret.is_visible():
        page.get_by_text("Reveal secret").click()
    expect(secret).to_be_visible()
    return secret.input_value()


def test_admin_adds_tests_redelivers_and_rotates(new_page, settings_site, receivers):
    receiver = receivers()
    page = new_page(settings_site)
    log_in(page, "admin")

    page.goto("/admin/webhooks")
    expect(page.get_by_role("heading", name="Webhooks", exact=True)).to_be_visible()
    expect(page.get_by_text("No endpoints yet")).to_be_visible()
    page.get_by_label("Endpoint URL").fill(receiver.url)
    page.get_by_label("Description").fill("<b>Grading</b> CRM")
    page.get_by_label("assessment.completed").check()
    page.get_by_role("button", name="Add endpoint").click()

    expect(page.get_by_test_id("flash")).to_contain_text("Endpoint added")
    expect(page.get_by_test_id("endpoint-url")).to_have_text(receiver.url)
    expect(page.get_by_text("<b>Grading</b> CRM").first).to_be_visible()  # escaped, not bold
    first_secret = revealed_secret(page)
    assert first_secret.startswith("whsec_")

    page.get_by_role("button", name="Send test event").click()
    expect(page.get_by_test_id("flash")).to_contain_text("Test event")
    status = page.get_by_test_id("delivery-log").get_by_test_id("delivery-status").first
    expect(status).to_have_text("Delivered")  # the log polls until the attempt is in
    expect(page.get_by_test_id("delivery-result").first).to_have_text("HTTP 200")
    [first] = receiver.wait_for(1)
    assert Webhook(first_secret).verify(first.body, first.headers)["type"] == "webhook.test"
    screenshot(page, "webhook-endpoint")

    page.get_by_test_id("delivery-link").first.click()
    expect(page.get_by_test_id("attempt-1")).to_contain_text("HTTP 200")
    expect(page.get_by_test_id("attempt-1")).to_contain_text("v1,[redacted]")
    expect(page.get_by_test_id("webhook-id")).to_have_text(first.webhook_id)
    page.get_by_role("button", name="Redeliver").click()
    expect(page.get_by_test_id("attempt-2")).to_contain_text("manual")
    expect(page.get_by_test_id("attempt-2")).to_contain_text("HTTP 200")
    second = receiver.wait_for(2)[1]
    assert second.webhook_id == first.webhook_id and second.body == first.body
    Webhook(first_secret).verify(second.body, second.headers)
    screenshot(page, "webhook-delivery")

    page.get_by_role("link", name="Endpoint #").click()
    page.once("dialog", lambda dialog: dialog.accept())  # it asks first
    page.get_by_role("button", name="Rotate secret").click()
    expect(page.get_by_test_id("flash")).to_contain_text("Secret rotated")
    expect(page.get_by_test_id("rotation-grace")).to_be_visible()
    new_secret = revealed_secret(page)
    assert new_secret != first_secret
    page.get_by_role("button", name="Send test event").click()
    third = receiver.wait_for(3)[2]
    assert len(third.signatures) == 2
    for secret, signature in zip((new_secret, first_secret), third.signatures, strict=True):
        Webhook(secret).verify(third.body, {**third.headers, "webhook-signature": signature})

    page.goto("/admin/webhooks")
    card = page.get_by_test_id("endpoints").locator("li").first
    expect(card.get_by_test_id("health-last")).to_contain_text("HTTP 200")
    expect(card.get_by_test_id("health-rate")).to_contain_text("100%")
    screenshot(page, "webhooks")


def test_a_disabled_endpoint_shows_a_banner_with_its_reason(new_page, settings_site, receivers):
    receiver = receivers()
    page = new_page(settings_site)
    log_in(page, "admin")
    page.goto("/admin/webhooks")
    page.get_by_label("Endpoint URL").fill(receiver.url)
    page.get_by_role("button", name="Add endpoint").click()
    page.once("dialog", lambda dialog: dialog.accept())  # it asks first
    page.get_by_role("button", name="Disable").click()

    banner = page.get_by_test_id("disabled-banner")
    expect(banner).to_contain_text("Disabled by admin@example.com")
    page.goto("/admin/webhooks")
    expect(page.get_by_test_id("disabled-banner")).to_contain_text(receiver.url)
    screenshot(page, "webhooks-disabled")

    page.get_by_role("link", name="Review and re-enable").click()
    page.get_by_role("button", name="Enable endpoint").click()
    expect(page.get_by_test_id("disabled-banner")).to_have_count(0)
    expect(page.get_by_test_id("endpoint-state")).to_have_text("Enabled")


def test_a_forbidden_url_is_refused_with_the_reason_in_the_form(new_page, live_server):
    page = new_page(live_server.url)  # the session's site: no allow-list
    log_in(page, "admin")
    page.goto("/admin/webhooks")
    page.get_by_label("Endpoint URL").fill("http://169.254.169.254/latest/meta-data/")
    page.get_by_role("button", name="Add endpoint").click()
    expect(page.get_by_test_id("url-error")).to_contain_text("link-local")
    expect(page.get_by_label("Endpoint URL")).to_have_value(
        "http://169.254.169.254/latest/meta-data/"
    )
    screenshot(page, "webhooks-invalid-url")


def test_destructive_actions_ask_first_and_cancel_changes_nothing(
    new_page, settings_site, receivers
):
    receiver = receivers()
    page = new_page(settings_site)
    log_in(page, "admin")
    page.goto("/admin/webhooks")
    page.get_by_label("Endpoint URL").fill(receiver.url)
    page.get_by_role("button", name="Add endpoint").click()
    endpoint_page = page.url
    secret = revealed_secret(page)

    asked: list[str] = []

    def answer(accept: bool):
        def handle(dialog) -> None:
            asked.append(dialog.message)
            dialog.accept() if accept else dialog.dismiss()

        return handle

    for button in ("Rotate secret", "Disable", "Delete endpoint"):
        page.once("dialog", answer(False))
        page.get_by_role("button", name=button).click()
        page.wait_for_timeout(300)
        assert page.url == endpoint_page, f"{button} went ahead without a yes"
    assert [m.split("?")[0] for m in asked] == [
        "Rotate the signing secret",
        "Disable this endpoint",
        "Delete this endpoint and its whole delivery log",
    ]
    page.reload()
    expect(page.get_by_test_id("endpoint-state")).to_have_text("Enabled")
    assert revealed_secret(page) == secret

    page.once("dialog", answer(True))
    page.get_by_role("button", name="Delete endpoint").click()
    expect(page.get_by_test_id("flash")).to_contain_text("deleted with its delivery log")
    expect(page.get_by_text("No endpoints yet")).to_be_visible()
