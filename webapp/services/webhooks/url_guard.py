"""The SSRF guard: which webhook URLs may be registered, and which addresses may be connected to.

A URL is checked twice. At registration its shape is checked and its host resolved; an address
that is private, loopback, link-local, CGNAT, multicast, reserved or unspecified (or an IPv6
form wrapping one) is refused. At send time `GuardedAdapter` resolves the host once, checks
every address, and connects to a checked address itself, so a name that re-resolves elsewhere
in between (DNS rebinding) gains nothing. The Host header, TLS SNI and certificate check still
use the host name. `WEBHOOK_ALLOWED_CIDRS` is the only way to reach a refused range.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import socket
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import SplitResult, urlsplit

from flask import current_app
from requests.adapters import HTTPAdapter
from urllib3 import PoolManager
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util import connection as urllib3_connection

from webapp.errors import ScorelineError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_URL_LENGTH = 2048
# RFC 6761: these names are loopback by definition, whatever a resolver says.
LOOPBACK_NAMES = ("localhost", "localhost.localdomain")
LOOPBACK_ADDRESSES = ("127.0.0.1", "::1")
_NAMED_RANGES: tuple[tuple[str, str], ...] = (
    ("100.64.0.0/10", "shared (CGNAT)"),
    ("192.0.0.0/24", "IETF protocol"),
    ("192.0.2.0/24", "documentation"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("0.0.0.0/8", "unspecified"),
    ("240.0.0.0/4", "reserved"),
    ("2001:db8::/32", "documentation"),
)
_RANGES = tuple((ipaddress.ip_network(net), label) for net, label in _NAMED_RANGES)
# IPv6 prefixes that carry an IPv4 address in their last 32 bits (NAT64).
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


class InvalidWebhookUrl(ScorelineError):
    """A webhook URL that is malformed or points somewhere the guard refuses (422)."""

    status, code, title = 422, "INVALID_WEBHOOK_URL", "Invalid webhook URL"


class BlockedAddress(Exception):
    """At send time the host resolved to an address the guard refuses; nothing was sent."""


def forbidden_reason(ip: IPAddress) -> str | None:
    """Why an address may not be a webhook target (e.g. "loopback"), or None when it may."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            inner = forbidden_reason(embedded)
            return f"IPv6-wrapped {inner}" if inner else None
    checks = (
        (ip.is_unspecified, "unspecified"),
        (ip.is_loopback, "loopback"),
        (ip.is_link_local, "link-local"),
        (ip.is_multicast, "multicast"),
    )
    for hit, label in checks:
        if hit:
            return label
    for network, label in _RANGES:
        if ip.version == network.version and ip in network:
            return label
    if ip.is_private:
        return "private"
    if ip.is_reserved:
        return "reserved"
    if not ip.is_global:
        return "not globally routable"
    return None


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one wraps: mapped (::ffff:a.b.c.d), 6to4 or NAT64."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if any(ip in net for net in _NAT64):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


Resolver = Callable[..., list]


@dataclass(frozen=True)
class AddressGuard:
    """Decides which addresses webhooks may reach; `resolver` is `socket.getaddrinfo`'s shape."""

    allowed: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    resolver: Resolver = field(default=socket.getaddrinfo, compare=False)

    @classmethod
    def from_cidrs(cls, cidrs: Iterable[str], resolver: Resolver | None = None) -> AddressGuard:
        """A guard allowing these CIDRs (WEBHOOK_ALLOWED_CIDRS) through."""
        allowed = tuple(ipaddress.ip_network(c.strip(), strict=False) for c in cidrs if c.strip())
        return cls(allowed, resolver or socket.getaddrinfo)

    def is_allowed_range(self, ip: IPAddress) -> bool:
        """True when an allow-listed CIDR contains the address (or the IPv4 it wraps)."""
        candidates = [ip]
        if isinstance(ip, ipaddress.IPv6Address) and (inner := _embedded_ipv4(ip)):
            candidates.append(inner)
        return any(c.version == n.version and c in n for c in candidates for n in self.allowed)

    def refusal(self, ip: IPAddress) -> str | None:
        """Why the guard refuses this address, or None."""
        if self.is_allowed_range(ip):
            return None
        return forbidden_reason(ip)

    def resolve(self, host: str, port: int) -> list[tuple[int, str]]:
        """Resolve `host` once and check every address; return (family, address) to connect to.

        Raises BlockedAddress when any address is refused, socket.gaierror when the name does
        not resolve.
        """
        host = host.rstrip(".").strip("[]")
        if host.lower() in LOOPBACK_NAMES or host.lower().endswith(".localhost"):
            # Loopback by definition; usable only where an allow-listed range covers it.
            infos = [
                (_family(a), a)
                for a in LOOPBACK_ADDRESSES
                if self.is_allowed_range(ipaddress.ip_address(a))
            ]
            if not infos:
                raise BlockedAddress(f"{host} is a loopback name")
        else:
            infos = [
                (family, sockaddr[0])
                for family, _, _, _, sockaddr in self.resolver(host, port, type=socket.SOCK_STREAM)
            ]
        addresses: list[tuple[int, str]] = []
        for family, address in infos:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
            reason = self.refusal(ip)
            if reason:
                where = host if host == str(ip) else f"{host} resolves to {ip}, which"
                raise BlockedAddress(f"{where} is {_a(reason)} address")
            if (family, address) not in addresses:
                addresses.append((family, address))
        if not addresses:
            raise socket.gaierror(socket.EAI_NONAME, f"{host} has no address")
        return addresses


def configured_guard() -> AddressGuard:
    """The guard for this app's WEBHOOK_ALLOWED_CIDRS: one per setting, so the connections it
    made are reused."""
    return _guard_for(tuple(current_app.config["WEBHOOK_ALLOWED_CIDRS"]))


@functools.lru_cache(maxsize=8)
def _guard_for(cidrs: tuple[str, ...]) -> AddressGuard:
    return AddressGuard.from_cidrs(cidrs)


def _a(label: str) -> str:
    """The label with its article: "a private", "an unspecified"."""
    return f"an {label}" if label[0] in "aeiou" else f"a {label}"


def _family(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def parse_url(url: object, field: str = "url") -> SplitResult:
    """Check a webhook URL's shape, without DNS: http(s), a host, no credentials, no IP tricks.

    Raises InvalidWebhookUrl saying what is wrong.
    """
    if not isinstance(url, str) or not url.strip():
        raise _invalid("A webhook URL is required.", field)
    url = url.strip()
    if len(url) > MAX_URL_LENGTH:
        raise _invalid(f"The URL is longer than {MAX_URL_LENGTH} characters.", field)
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        raise _invalid("The URL contains spaces or control characters.", field)
    if any(0xD800 <= ord(ch) <= 0xDFFF for ch in url):  # no encoding can send these
        raise _invalid("The URL contains unpaired surrogates (invalid Unicode).", field)
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # "http://[::1/", "http://[zz]/": brackets that hold no address
        raise _invalid(f"The URL is malformed: {exc}.", field) from exc
    if parts.scheme.lower() not in ("http", "https"):
        raise _invalid("Only http:// and https:// URLs can receive webhooks.", field)
    if "@" in parts.netloc:
        raise _invalid(
            "Credentials in the URL are not allowed; authenticate with the signature.", field
        )
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise _invalid("The URL has no host.", field)
    try:
        parts.port  # noqa: B018  (raises ValueError for a port out of range or not a number)
    except ValueError as exc:
        raise _invalid("The URL's port is not valid.", field) from exc
    if "%" in host:
        raise _invalid("IPv6 zone identifiers are not allowed.", field)
    if "[" in parts.netloc and not _is_ipv6(host):  # "[v1.x]": an IPvFuture no client dials
        raise _invalid("Square brackets in a URL hold an IPv6 address only.", field)
    if _is_odd_ipv4(host):
        raise _invalid("Write IPv4 addresses as four decimal numbers (e.g. 203.0.113.7).", field)
    try:
        host.encode("idna")
    except UnicodeError as exc:
        raise _invalid("The host name is not valid.", field) from exc
    return parts


def _is_ipv6(host: str) -> bool:
    """True for an IPv6 address literal (without its brackets)."""
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return False
    return True


def _is_odd_ipv4(host: str) -> bool:
    """True for IPv4 in forms other than dotted decimal: 2130706433, 0x7f.1, 0177.0.0.1, 127.1."""
    try:
        socket.inet_aton(host)
    except OSError:
        return False
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return True
    return False


def validate_url(url: object, guard: AddressGuard, field: str = "url") -> str:
    """The URL, stripped, if it may be registered; else InvalidWebhookUrl saying why.

    A host that does not resolve yet is accepted: it is checked again before every attempt.
    """
    parts = parse_url(url, field)
    host = parts.hostname.rstrip(".")
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        reason = guard.refusal(literal)
        if reason:
            raise _invalid(
                f"{literal} is {_a(reason)} address; webhooks go to public addresses.", field
            )
        return url.strip()
    try:
        guard.resolve(host, parts.port or (443 if parts.scheme.lower() == "https" else 80))
    except BlockedAddress as exc:
        raise _invalid(f"{exc}; webhooks go to public addresses.", field) from exc
    except (OSError, UnicodeError):
        pass  # not resolvable now; the send-time check decides
    return url.strip()


def _invalid(detail: str, field: str = "url") -> InvalidWebhookUrl:
    return InvalidWebhookUrl(detail, errors=[{"field": field, "message": detail}])


# --- connect time: requests -> urllib3 connections that dial only checked addresses -------------


class _GuardedConnectionMixin:
    """Resolve once, check, and dial a checked address; the host name stays for Host and SNI."""

    def __init__(self, *args, address_guard: AddressGuard, **kwargs) -> None:
        self._address_guard = address_guard
        super().__init__(*args, **kwargs)

    def _new_conn(self) -> socket.socket:
        try:
            addresses = self._address_guard.resolve(self.host, self.port)
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc
        error: Exception | None = None
        for _family, address in addresses:
            try:
                return urllib3_connection.create_connection(
                    (address, self.port),
                    self.timeout,
                    source_address=self.source_address,
                    socket_options=self.socket_options,
                )
            except TimeoutError as exc:
                error = ConnectTimeoutError(
                    self, f"Connection to {self.host} ({address}) timed out."
                )
                error.__cause__ = exc
            except OSError as exc:
                error = NewConnectionError(self, f"Failed to connect to {address}: {exc}")
                error.__cause__ = exc
        raise error  # addresses is never empty, so an error was set


class _GuardedHTTPConnection(_GuardedConnectionMixin, HTTPConnection):
    pass


class _GuardedHTTPSConnection(_GuardedConnectionMixin, HTTPSConnection):
    pass


class _GuardedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


class _GuardedPoolManager(PoolManager):
    """A pool manager whose every connection goes through the guard."""

    def __init__(self, *args, address_guard: AddressGuard, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._address_guard = address_guard
        self.pool_classes_by_scheme = {"http": _GuardedHTTPPool, "https": _GuardedHTTPSPool}

    def _new_pool(self, scheme, host, port, request_context=None):
        pool = super()._new_pool(scheme, host, port, request_context)
        pool.conn_kw["address_guard"] = self._address_guard
        return pool


class GuardedAdapter(HTTPAdapter):
    """A requests adapter that only ever connects to addresses the guard checked; no proxies."""

    def __init__(self, guard: AddressGuard, **kwargs) -> None:
        self._address_guard = guard
        super().__init__(max_retries=0, **kwargs)

    def init_poolmanager(self, connections, maxsize, block=False, **pool_kwargs) -> None:
        self.poolmanager = _GuardedPoolManager(
            num_pools=connections,
            maxsize=maxsize,
            block=block,
            address_guard=self._address_guard,
            **pool_kwargs,
        )

    def proxy_manager_for(self, proxy, **proxy_kwargs):
        raise BlockedAddress("webhooks are never sent through a proxy")


def guarded_session(guard: AddressGuard, adapters: Sequence[str] = ("http://", "https://")):
    """A requests.Session that ignores proxy/netrc environment and dials only checked addresses."""
    import requests

    session = requests.Session()
    session.trust_env = False
    adapter = GuardedAdapter(guard)
    for prefix in adapters:
        session.mount(prefix, adapter)
    return session


_shared = threading.local()


def shared_session(guard: AddressGuard):
    """This thread's guarded session for `guard`, kept between attempts so connections are reused.

    A kept-alive connection stays on the address the guard checked when it was opened; a new
    connection resolves and checks again. A forked process starts its own (no shared sockets).
    """
    pid = os.getpid()
    if getattr(_shared, "pid", None) != pid:
        _shared.pid, _shared.sessions = pid, {}
    key = (guard.allowed, guard.resolver)
    session = _shared.sessions.get(key)
    if session is None:
        session = _shared.sessions[key] = guarded_session(guard)
    return session
