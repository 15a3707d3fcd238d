"""Serving metrics: who may read them, the web's `/metrics`, and a worker's own metrics port.

Access (the same rule on the web and on workers): every check that is configured must pass.
`METRICS_TOKEN` asks for `Authorization: Bearer <token>`; `METRICS_ALLOWED_CIDRS` asks for a
client address inside one of the ranges (the TCP peer, never a forwarded header). With neither
set, metrics are closed to everyone: a production deployment that forgot to choose is not
world-readable. `make run` allows 127.0.0.0/8.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from flask import Blueprint, Flask, Response, current_app, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from webapp import metrics, request_metrics
from webapp.metrics_state import DeploymentState

log = logging.getLogger(__name__)
bp = Blueprint("metrics", __name__)


@dataclass(frozen=True)
class Refusal:
    """Why a scrape was refused: 401 (token missing or wrong) or 403 (address not allowed)."""

    status: int
    code: str
    detail: str


class MetricsAccess:
    """The METRICS_TOKEN / METRICS_ALLOWED_CIDRS rule."""

    def __init__(self, token: str, cidrs: list[str]) -> None:
        self.token = token.encode()
        self.networks = tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)

    def refusal(self, remote_addr: str | None, authorization: str | None) -> Refusal | None:
        """None when this client may read metrics, else why not."""
        if not self.token and not self.networks:
            return Refusal(
                403,
                "METRICS_CLOSED",
                "Metrics are closed: set METRICS_TOKEN or METRICS_ALLOWED_CIDRS to open them.",
            )
        if self.networks and not self._inside(remote_addr):
            return Refusal(403, "FORBIDDEN", f"{remote_addr} is not in METRICS_ALLOWED_CIDRS.")
        if self.token:
            scheme, _, given = (authorization or "").partition(" ")
            given = given.strip().encode()
            if scheme.lower() != "bearer" or not hmac.compare_digest(given, self.token):
                return Refusal(401, "UNAUTHORIZED", "A valid METRICS_TOKEN bearer is required.")
        return None

    def _inside(self, remote_addr: str | None) -> bool:
        try:
            ip = ipaddress.ip_address((remote_addr or "").split("%")[0])
        except ValueError:
            return False
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.networks)


@lru_cache(maxsize=8)
def _access(token: str, cidrs: tuple[str, ...]) -> MetricsAccess:
    return MetricsAccess(token, list(cidrs))


def access_for(app: Flask) -> MetricsAccess:
    """The access rule from the app's settings."""
    return _access(app.config["METRICS_TOKEN"], tuple(app.config["METRICS_ALLOWED_CIDRS"]))


def exposition(directory: Path, *extra) -> bytes:
    """The text exposition of every process writing to `directory`, plus `extra` collectors."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    for collector in extra:
        registry.register(collector)
    return generate_latest(registry)


def _refused(refusal: Refusal) -> tuple[str, list[tuple[str, str]], bytes]:
    """A problem+json answer for a refused scrape."""
    body = json.dumps(
        {
            "type": "https://scoreline.dev/problems/" + refusal.code.lower().replace("_", "-"),
            "title": "Metrics are not readable from here",
            "status": refusal.status,
            "detail": refusal.detail,
            "code": refusal.code,
        }
    ).encode()
    headers = [("Content-Type", "application/problem+json"), ("Content-Length", str(len(body)))]
    if refusal.status == 401:
        headers.append(("WWW-Authenticate", 'Bearer realm="metrics"'))
    reason = "Unauthorized" if refusal.status == 401 else "Forbidden"
    return f"{refusal.status} {reason}", headers, body


@bp.get("/metrics")
def scrape():
    """The web's metrics (every gunicorn worker's) and the deployment's state, if allowed."""
    refusal = access_for(current_app).refusal(
        request.remote_addr, request.headers.get("Authorization")
    )
    if refusal is not None:
        _status, headers, body = _refused(refusal)
        return Response(body, status=refusal.status, headers=headers)
    directory = metrics.directory()
    if directory is None:
        return Response(b"", mimetype=CONTENT_TYPE_LATEST)
    request_metrics.stats(directory).flush()  # this process's latest requests, at least
    requests_seen = request_metrics.RequestCollector(directory)
    body = exposition(directory, requests_seen, DeploymentState(current_app._get_current_object()))
    return Response(
        body, headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"}
    )


# --- a worker's own port ------------------------------------------------------------------------


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args) -> None:
        """Scrapes every 15 s would fill the log; refusals are logged by the app below."""


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _DualStackServer(_ThreadingServer):
    address_family = socket.AF_INET6


def worker_metrics_app(access: MetricsAccess, read: Callable[[], bytes]):
    """The WSGI app a worker serves: GET /metrics (any other path is 404)."""

    def app(environ, start_response):
        if environ.get("PATH_INFO") not in ("/metrics", "/"):
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found: try /metrics\n"]
        refusal = access.refusal(environ.get("REMOTE_ADDR"), environ.get("HTTP_AUTHORIZATION"))
        if refusal is not None:
            log.warning("metrics: refused %s: %s", environ.get("REMOTE_ADDR"), refusal.detail)
            status, headers, body = _refused(refusal)
            start_response(status, headers)
            return [body]
        body = read()
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
        return [body]

    return app


def serve_worker_metrics(app: Flask, directory: Path) -> WSGIServer | None:
    """Serve this worker's metrics on WORKER_METRICS_HOST:WORKER_METRICS_PORT in a daemon thread.

    Port 0 turns it off. A port already in use is logged and skipped: the worker still works.
    """
    port = app.config["WORKER_METRICS_PORT"]
    if port <= 0:
        return None
    host = app.config["WORKER_METRICS_HOST"]
    server_class = _DualStackServer if ":" in host else _ThreadingServer
    wsgi = worker_metrics_app(access_for(app), lambda: exposition(directory))
    try:
        server = make_server(host, port, wsgi, server_class, handler_class=_QuietHandler)
    except OSError as exc:
        log.error("worker metrics: cannot listen on %s:%s (%s); serving none", host, port, exc)
        return None
    thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    log.info("worker metrics on http://%s:%s/metrics", host, server.server_port)
    return server


# Set by gunicorn's master (gunicorn.conf.py) for its workers: the folder they all write to.
WEB_DIR_VARIABLE = "SCORELINE_WEB_METRICS_DIR"


def init_app(app: Flask) -> None:
    """Write this process's metrics to its gunicorn master's folder (else METRICS_DIR/web),
    unless the process chose already, as a worker does; serve /metrics."""
    folder = os.environ.get(WEB_DIR_VARIABLE) or Path(app.config["METRICS_DIR"]) / "web"
    metrics.configure(Path(folder))
    app.register_blueprint(bp)
