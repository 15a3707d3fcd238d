"""Browser headers on every answer (pages, API, static files, errors, the WSGI poll shortcut),
Secure cookies and HTTPS when configured, and proxy headers trusted only when configured."""

from __future__ import annotations

import re

import pytest

from tests.support import STUDENT, bearer, get_noting_flask, live_near_cache, log_in, sibling_app
from webapp.config import PROJECT_ROOT, Config

pytestmark = pytest.mark.db

EXPECTED = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def assert_browser_headers(response) -> None:
    """The CSP allows this origin only, no inline script, no eval, no framing; and the rest."""
    for name, value in EXPECTED.items():
        assert response.headers.get(name) == value, (name, dict(response.headers))
    policy = dict(
        directive.strip().split(" ", 1)
        for directive in response.headers["Content-Security-Policy"].split(";")
    )
    assert policy["default-src"] == "'self'"
    assert policy["script-src"] == "'self'"  # no 'unsafe-inline', no 'unsafe-eval'
    assert policy["style-src"] == "'self'"
    assert policy["style-src-attr"] == "'unsafe-inline'"  # progress widths, nothing else
    assert policy["frame-ancestors"] == "'none'"
    assert policy["object-src"] == "'none'"
    assert "unsafe-eval" not in response.headers["Content-Security-Policy"]


@pytest.fixture()
def boom_app(app):
    """An app with one route that raises, for the 500 page."""
    boom = sibling_app(app, PROPAGATE_EXCEPTIONS=False)

    def explode():
        raise RuntimeError("boom")

    boom.add_url_rule("/api/v1/boom", "api_boom", explode)
    boom.add_url_rule("/boom", "boom", explode)
    return boom


def test_pages_api_static_files_and_redirects_carry_the_headers(client, tokens):
    for path, headers, status in [
        ("/login", {}, 200),
        ("/api/v1/question-sets", bearer(tokens["student"]), 200),
        ("/api/v1/openapi.json", {}, 200),
        ("/static/css/app.css", {}, 200),
        ("/static/js/select-on-focus.js", {}, 200),
        ("/account", {}, 302),  # to the login page
        ("/healthz", {}, 200),
    ]:
        response = client.get(path, headers=headers)
        assert response.status_code == status, path
        assert_browser_headers(response)


def test_error_answers_carry_the_headers(client, tokens, boom_app):
    answers = [
        client.get("/no-such-page"),
        client.get("/api/v1/no-such-thing", headers=bearer(tokens["student"])),
        client.get("/api/v1/assessments"),  # 401
        client.delete("/api/v1/question-sets", headers=bearer(tokens["student"])),  # 405
        client.post("/api/v1/assessments", data="{", headers=bearer(tokens["student"])),  # 400
    ]
    answers += [boom_app.test_client().get("/boom"), boom_app.test_client().get("/api/v1/boom")]
    assert [a.status_code for a in answers] == [404, 404, 401, 405, 400, 500, 500]
    for answer in answers:
        assert_browser_headers(answer)


def test_the_poll_shortcut_answers_with_the_same_headers(app, client, tokens, in_progress):
    live_near_cache(app)
    url = f"/api/v1/assessments/{in_progress}/status"
    client.get(url, headers=bearer(tokens["student"]))  # built and kept
    cached, through_flask = get_noting_flask(app, client, url, headers=bearer(tokens["student"]))
    assert not through_flask
    assert_browser_headers(cached)

    log_in(client, STUDENT)
    partial_url = f"/assessments/{in_progress}/progress/live"
    client.get(partial_url, headers={"HX-Request": "true"})
    partial, through_flask = get_noting_flask(
        app, client, partial_url, headers={"HX-Request": "true"}
    )
    assert not through_flask and partial.status_code == 200
    assert_browser_headers(partial)


# --- HTTPS deployments --------------------------------------------------------------------------


def test_make_run_defaults_keep_plain_http_working(monkeypatch, client):
    for name in ("FORCE_HTTPS", "SESSION_COOKIE_SECURE", "PROXY_FIX_X_FOR", "PROXY_FIX_X_PROTO"):
        monkeypatch.delenv(name, raising=False)
    config = Config()
    assert config.FORCE_HTTPS is False and config.SESSION_COOKIE_SECURE is False
    assert config.PROXY_FIX_X_FOR == 0 and config.PROXY_FIX_X_PROTO == 0
    response = client.get("/login")
    assert response.status_code == 200
    assert "Strict-Transport-Security" not in response.headers
    assert "Secure" not in response.headers.get("Set-Cookie", "")


def test_forcing_https_makes_cookies_secure_unless_told_otherwise(monkeypatch):
    monkeypatch.setenv("FORCE_HTTPS", "true")
    assert Config().SESSION_COOKIE_SECURE is True
    assert Config().REMEMBER_COOKIE_SECURE is True
    monkeypatch.setenv("SESSION_COOKIE_SECURE", "false")  # TLS ends elsewhere, say
    assert Config().SESSION_COOKIE_SECURE is False


@pytest.fixture()
def https_app(app):
    return sibling_app(app, FORCE_HTTPS=True, SESSION_COOKIE_SECURE=True)


def test_forced_https_redirects_http_and_sends_hsts(https_app):
    plain = https_app.test_client().get("/login")
    assert plain.status_code == 302
    assert plain.headers["Location"] == "https://localhost/login"
    secure = https_app.test_client().get("/login", base_url="https://localhost")
    assert secure.status_code == 200
    assert secure.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    assert_browser_headers(secure)


def test_session_cookies_are_secure_when_configured(https_app):
    browser = https_app.test_client()
    page = browser.get("/login", base_url="https://localhost").get_data(as_text=True)
    token = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)
    logged_in = browser.post(
        "/login",
        data={"csrf_token": token, "email": STUDENT[0], "password": STUDENT[1]},
        base_url="https://localhost",
        headers={"Referer": "https://localhost/login"},
    )
    assert logged_in.status_code == 302
    cookies = logged_in.headers.getlist("Set-Cookie")
    assert cookies and all("; Secure" in cookie for cookie in cookies), cookies
    assert all("HttpOnly" in cookie and "SameSite=Lax" in cookie for cookie in cookies)


def test_the_poll_shortcut_follows_forced_https(app, https_app, tokens, in_progress):
    live_near_cache(https_app)
    client = https_app.test_client()
    url = f"/api/v1/assessments/{in_progress}/status"
    kwargs = {"headers": bearer(tokens["student"]), "base_url": "https://localhost"}
    built, _ = get_noting_flask(https_app, client, url, **kwargs)
    get_noting_flask(https_app, client, url, **kwargs)
    cached, through_flask = get_noting_flask(https_app, client, url, **kwargs)
    assert not through_flask

    def same_for_every_request(answer):  # the request id is each request's own
        return sorted((k, v) for k, v in answer.headers.items() if k != "X-Request-ID")

    assert same_for_every_request(cached) == same_for_every_request(built)
    assert "Strict-Transport-Security" in cached.headers
    plain, through_flask = get_noting_flask(https_app, client, url, headers=kwargs["headers"])
    assert not through_flask and plain.status_code == 302  # redirected before anything answers
    assert plain.headers["Location"] == f"https://localhost{url}"


def test_proxy_headers_are_trusted_only_when_configured(app, tokens):
    forwarded = {**bearer(tokens["admin"]), "X-Forwarded-For": "203.0.113.9, 10.0.0.2"}

    def audited_ip(site) -> str:
        client = site.test_client()
        created = client.post(
            "/api/v1/webhook-endpoints", json={"url": "https://example.com/h"}, headers=forwarded
        )
        assert created.status_code == 201
        entries = client.get("/api/v1/audit?action=webhook_endpoint.created", headers=forwarded)
        return entries.get_json()["entries"][0]["ip"]

    assert audited_ip(sibling_app(app)) == "127.0.0.1"  # a client cannot claim an address
    behind_one_proxy = sibling_app(app, PROXY_FIX_X_FOR=1, PROXY_FIX_X_PROTO=1)
    assert audited_ip(behind_one_proxy) == "10.0.0.2"  # the address our one proxy saw


def test_behind_a_proxy_the_redirect_to_https_keeps_the_public_host(app):
    headers = {"X-Forwarded-Host": "scoreline.example"}
    direct = sibling_app(app, FORCE_HTTPS=True).test_client().get("/login", headers=headers)
    assert direct.headers["Location"] == "https://localhost/login"  # the header is ignored
    proxied = sibling_app(app, FORCE_HTTPS=True, PROXY_FIX_X_HOST=1)
    answer = proxied.test_client().get("/login", headers=headers)
    assert answer.headers["Location"] == "https://scoreline.example/login"


# --- templates ------------------------------------------------------------------------------------

INLINE_SCRIPT = re.compile(
    r"<script(?![^>]*\bsrc=)[^>]*>|\son[a-z]+\s*=|\bhx-on|javascript:|\bjs:", re.IGNORECASE
)


def test_templates_hold_no_inline_script_or_handler():
    found = [
        f"{path.relative_to(PROJECT_ROOT)}: {match.group(0)}"
        for path in (PROJECT_ROOT / "templates").rglob("*.html")
        for match in INLINE_SCRIPT.finditer(path.read_text())
    ]
    assert found == []


def test_htmx_is_configured_for_the_policy(client):
    page = client.get("/login").get_data(as_text=True)
    config = re.search(r"<meta name=\"htmx-config\" content='([^']+)'", page).group(1)
    assert '"includeIndicatorStyles": false' in config  # no inline <style> injected
    assert '"allowEval": false' in config


def test_api_answers_showing_a_secret_are_never_stored_by_a_cache(client, tokens):
    """An endpoint's secret and an account's signing secret travel in API answers: no browser
    or proxy cache may keep them (`no-store`, as the account and endpoint pages say)."""
    admin, student = bearer(tokens["admin"]), bearer(tokens["student"])
    made = client.post(
        "/api/v1/webhook-endpoints", json={"url": "https://hooks.example.com/n"}, headers=admin
    )
    endpoint = f"/api/v1/webhook-endpoints/{made.get_json()['id']}"
    assessment = client.post(
        "/api/v1/assessments", json={"question_set": "web-apis"}, headers=student
    ).get_json()
    answers = [
        made,
        client.get(endpoint, headers=admin),
        client.get("/api/v1/webhook-endpoints", headers=admin),
        client.post(f"{endpoint}/rotate-secret", headers=admin),
        client.post(
            f"/api/v1/assessments/{assessment['id']}/webhook",
            json={"webhook_url": "https://hooks.example.com/cb"},
            headers=student,
        ),
    ]
    for answer in answers:
        assert "whsec_" in answer.get_data(as_text=True)
        assert answer.headers.get("Cache-Control") == "no-store", answer.request.path
    # Answers that choose their own caching keep it: status polls revalidate.
    status = client.get(f"/api/v1/assessments/{assessment['id']}/status", headers=student)
    assert status.headers["Cache-Control"] == "private, no-cache"
    assert client.delete(endpoint, headers=admin).status_code == 204


def test_an_address_too_long_for_the_audit_log_is_cut_not_a_lost_entry(app, tokens):
    """Trusting more proxies than there are lets a client write X-Forwarded-For; whatever it
    writes, the audit entry is kept (PostgreSQL refused the row over 64 characters)."""
    claimed = "2001:db8::" + "f" * 120
    site = sibling_app(app, PROXY_FIX_X_FOR=2)
    client = site.test_client()
    headers = {**bearer(tokens["admin"]), "X-Forwarded-For": f"{claimed}, 10.0.0.2"}
    created = client.post(
        "/api/v1/webhook-endpoints", json={"url": "https://example.com/long"}, headers=headers
    )
    assert created.status_code == 201
    entries = client.get(
        "/api/v1/audit?action=webhook_endpoint.created", headers=bearer(tokens["admin"])
    ).get_json()["entries"]
    mine = [e for e in entries if e["entity_id"] == str(created.get_json()["id"])]
    assert mine and mine[0]["ip"] == claimed[:64]
    endpoint = f"/api/v1/webhook-endpoints/{created.get_json()['id']}"
    assert client.delete(endpoint, headers=bearer(tokens["admin"])).status_code == 204
