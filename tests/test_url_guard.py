"""The SSRF guard: forbidden URLs are refused at registration, and at send time the host is
resolved once, checked, and that very address is the one dialled."""

from __future__ import annotations

import socket

import pytest

from webapp.services.webhooks import signing
from webapp.services.webhooks.sending import send
from webapp.services.webhooks.url_guard import (
    AddressGuard,
    InvalidWebhookUrl,
    forbidden_reason,
    validate_url,
)

pytestmark = pytest.mark.db

FORBIDDEN = {
    "loopback": "http://127.0.0.1/hook",
    "loopback-range": "http://127.10.0.1:8080/hook",
    "localhost": "http://localhost:5000/hook",
    "localhost-subdomain": "http://api.localhost/hook",
    "private-10": "http://10.0.0.5/hook",
    "private-172": "https://172.16.3.4/hook",
    "private-192": "http://192.168.1.1/hook",
    "link-local-metadata": "http://169.254.169.254/latest/meta-data/",
    "cgnat": "http://100.64.0.1/hook",
    "unspecified": "http://0.0.0.0:8000/hook",
    "multicast": "http://224.0.0.251/hook",
    "reserved": "http://240.0.0.1/hook",
    "ipv6-loopback": "http://[::1]:8000/hook",
    "ipv6-unique-local": "http://[fd12:3456::1]/hook",
    "ipv6-link-local": "http://[fe80::1]/hook",
    "ipv4-mapped-ipv6": "http://[::ffff:127.0.0.1]/hook",
    "ipv4-mapped-ipv6-hex": "http://[::ffff:a9fe:a9fe]/hook",
    "nat64-of-private": "http://[64:ff9b::a00:1]/hook",
    "6to4-of-loopback": "http://[2002:7f00:1::]/hook",
    "decimal-ip": "http://2130706433/hook",
    "hex-ip": "http://0x7f000001/hook",
    "octal-ip": "http://0177.0.0.1/hook",
    "short-ip": "http://127.1/hook",
    "ftp-scheme": "ftp://example.invalid/hook",
    "file-scheme": "file:///etc/passwd",
    "javascript-scheme": "javascript:alert(1)",
    "credentials": "https://user:secret@example.invalid/hook",
    "user-only": "https://token@example.invalid/hook",
    "no-host": "http:///hook",
    "bad-port": "http://example.invalid:99999/hook",
    "whitespace": "http://example.invalid/ho ok",
}


@pytest.fixture()
def admin(client, tokens):
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {tokens['admin']}"
    return client


@pytest.mark.parametrize("url", FORBIDDEN.values(), ids=FORBIDDEN.keys())
def test_forbidden_urls_are_refused_at_registration(admin, url):
    response = admin.post("/api/v1/webhook-endpoints", json={"url": url})
    assert response.status_code == 422, response.get_json()
    body = response.get_json()
    assert body["code"] == "INVALID_WEBHOOK_URL"
    assert body["errors"][0]["field"] == "url" and body["detail"]
    assert admin.get("/api/v1/webhook-endpoints").get_json()["endpoints"] == []


def test_changing_the_url_to_a_forbidden_one_is_refused(admin):
    created = admin.post(
        "/api/v1/webhook-endpoints", json={"url": "https://hooks.example.invalid/x"}
    ).get_json()
    response = admin.patch(
        f"/api/v1/webhook-endpoints/{created['id']}", json={"url": "http://10.1.2.3/"}
    )
    assert response.status_code == 422 and response.get_json()["code"] == "INVALID_WEBHOOK_URL"
    shown = admin.get(f"/api/v1/webhook-endpoints/{created['id']}").get_json()
    assert shown["url"] == "https://hooks.example.invalid/x"


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.invalid/x",  # does not resolve yet: checked before every attempt
        "https://93.184.215.14/webhooks",
        "http://[2606:4700:4700::1111]:8443/hook",
    ],
)
def test_public_urls_are_accepted(url):
    assert validate_url(url, AddressGuard()) == url


def test_the_allow_list_is_the_only_way_through():
    guard = AddressGuard.from_cidrs(["127.0.0.0/8"])
    assert validate_url("http://127.0.0.1:9000/hook", guard)
    assert validate_url("http://localhost:9000/hook", guard)
    assert validate_url("http://[::ffff:127.0.0.1]:9000/hook", guard)
    with pytest.raises(InvalidWebhookUrl):
        validate_url("http://10.0.0.1/hook", guard)
    with pytest.raises(InvalidWebhookUrl):
        validate_url("http://2130706433/hook", guard)  # odd IP forms stay refused


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("10.1.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("100.100.100.100", "shared (CGNAT)"),
        ("239.255.255.250", "multicast"),
        ("::ffff:10.0.0.1", "IPv6-wrapped private"),
        ("8.8.8.8", None),
        ("2606:4700::1111", None),
    ],
)
def test_forbidden_reason_names_the_range(address, reason):
    import ipaddress

    assert forbidden_reason(ipaddress.ip_address(address)) == reason


class Resolver:
    """A DNS answer that changes after the first lookup, like a rebinding attacker's."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.calls = 0

    def __call__(self, host, port, *args, **kwargs):
        address = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        return [(family, socket.SOCK_STREAM, 6, "", (address, port))]


def _headers(body: bytes) -> dict:
    return signing.headers(body, webhook_id="msg_test", timestamp=1, keys=["whsec_" + "A" * 44])


def test_a_name_that_rebinds_to_loopback_at_send_time_is_refused(receivers):
    receiver = receivers()
    port = int(receiver.url.split(":")[2].split("/")[0])
    resolver = Resolver("93.184.215.14", "127.0.0.1")
    guard = AddressGuard(resolver=resolver)
    url = f"http://rebind.example:{port}/hook"
    assert validate_url(url, guard) == url  # public when registered

    outcome = send(url, b"{}", _headers(b"{}"), timeout=1, guard=guard)

    assert outcome.error == "blocked"
    assert "127.0.0.1" in outcome.detail and "loopback" in outcome.detail
    assert outcome.status is None and receiver.received == []


def test_the_checked_address_is_the_one_dialled_with_the_host_name_kept(receivers):
    receiver = receivers()
    port = int(receiver.url.split(":")[2].split("/")[0])
    # No resolver anywhere knows `pinned.example`: reaching the receiver at all proves the
    # connection went to the address the guard checked, not to a second lookup.
    resolver = Resolver("127.0.0.1", "10.9.9.9")
    guard = AddressGuard.from_cidrs(["127.0.0.0/8"], resolver=resolver)
    outcome = send(
        f"http://pinned.example:{port}/hook", b"{}", _headers(b"{}"), timeout=2, guard=guard
    )

    assert outcome.succeeded, outcome
    assert resolver.calls == 1
    [request] = receiver.received
    assert request.headers["host"] == f"pinned.example:{port}"


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_proxies_from_the_environment_are_ignored(receivers, monkeypatch):
    receiver = receivers()
    dead_proxy = f"http://127.0.0.1:{closed_port()}"  # were it used, the request would fail
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, dead_proxy)
    guard = AddressGuard.from_cidrs(["127.0.0.0/8"])
    outcome = send(receiver.url, b"{}", _headers(b"{}"), timeout=2, guard=guard)
    assert outcome.succeeded and len(receiver.received) == 1


def test_connection_errors_are_classified(receivers):
    guard = AddressGuard.from_cidrs(["127.0.0.0/8"])
    refused = send(
        f"http://127.0.0.1:{closed_port()}/", b"{}", _headers(b"{}"), timeout=1, guard=guard
    )
    assert refused.error == "connection"
    unknown = send("http://no-such-host.invalid/", b"{}", _headers(b"{}"), timeout=1, guard=guard)
    assert unknown.error == "dns"
    receiver = receivers()
    tls = send(
        receiver.url.replace("http://", "https://"), b"{}", _headers(b"{}"), timeout=1, guard=guard
    )
    assert tls.error == "tls", tls
