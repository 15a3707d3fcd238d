"""Every HTTP request, observed once: given an id, counted, timed and (mostly) logged.

`HttpObserver` wraps the whole WSGI stack, the poll shortcut included, so polls answered from
memory before Flask runs are counted like any other request. It is on the hot path of polling:
requests are added up in memory and written out once a second (webapp.request_metrics).
"""

from __future__ import annotations

import logging
import time

from flask import Flask, request

from webapp import correlation, metrics, request_metrics

log = logging.getLogger("webapp.http")

# environ keys: the poll shortcut's (kind, endpoint) of a poll it answered from memory, and the
# (endpoint, route) Flask matched.
POLL_HIT = "scoreline.poll_hit"
ROUTE = "scoreline.route"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Answered often and cheaply: logged only when they fail (they are counted either way).
QUIET_ENDPOINTS = frozenset(
    {"api.status", "progress.live", "health.healthz", "health.readyz", "metrics.scrape", "static"}
)


class HttpObserver:
    """WSGI middleware: request id in and out, request metrics, one log line per request."""

    def __init__(self, app: Flask, wsgi_app) -> None:
        self.app = app
        self.wsgi_app = wsgi_app
        self._poll_routes: dict[str, str] | None = None  # endpoint -> route template

    def __call__(self, environ, start_response):
        started = time.perf_counter()
        request_id = correlation.request_id_from(environ.get("HTTP_X_REQUEST_ID"))
        seen: list[str] = []

        def start(status: str, headers: list, exc_info=None):
            seen.append(status)
            headers.append(("X-Request-ID", request_id))
            return start_response(status, headers, exc_info)

        token = correlation.enter(request_id=request_id)
        try:
            body = self.wsgi_app(environ, start)
        except BaseException:
            self._observe(environ, "500", started)
            raise
        else:
            self._observe(environ, seen[-1][:3] if seen else "500", started)
        finally:
            correlation.leave(token)
        return body

    def _observe(self, environ, status: str, started: float) -> None:
        """Count and time the request; log it unless it is a quiet success (inside the request's
        correlation scope, so the line carries what the app bound)."""
        seconds = time.perf_counter() - started
        method = environ.get("REQUEST_METHOD", "")
        method = method if method in METHODS else "other"
        hit = environ.get(POLL_HIT)
        matched = environ.get(ROUTE)
        if hit is not None:
            endpoint = hit[1]
            route = self._poll_route(endpoint)
        elif matched is not None:
            endpoint, route = matched
        else:  # no route matched (a 404, or a 405 on a known path): one label for all of them
            endpoint, route = None, "unmatched"
        try:
            self._count(method, route, status, hit, seconds)
        except OSError as exc:  # the metrics folder is gone or full: answer anyway
            log.error("metrics: cannot record a request (%s)", exc)
        if endpoint in QUIET_ENDPOINTS and status < "400":
            return
        level = logging.ERROR if status >= "500" else logging.INFO
        log.log(
            level,
            "%s %s %s %.1f ms",
            method,
            environ.get("PATH_INFO", ""),
            status,
            seconds * 1000,
            extra={
                "http": {
                    "method": method,
                    "path": environ.get("PATH_INFO", ""),
                    "route": route,
                    "status": int(status) if status.isdigit() else status,
                    "duration_ms": round(seconds * 1000, 2),
                    "remote_addr": environ.get("REMOTE_ADDR"),
                },
            },
        )

    def _count(self, method: str, route: str, status: str, hit, seconds: float) -> None:
        """Add the request to this process's totals (see webapp.request_metrics)."""
        folder = metrics.directory()
        if folder is not None:
            stats = request_metrics.stats(folder)
            stats.record((method, route, status), seconds, hit[0] if hit else None)

    def _poll_route(self, endpoint: str) -> str:
        """The route template of a poll endpoint the shortcut answered."""
        if self._poll_routes is None:
            self._poll_routes = {r.endpoint: r.rule for r in self.app.url_map.iter_rules()}
        return self._poll_routes.get(endpoint, "unmatched")


def init_app(app: Flask) -> None:
    """Wrap the whole WSGI stack (call last, after every other middleware); note the matched
    route, and bind the ids in the URL (assessment, operation) for the request's logs and jobs."""
    app.wsgi_app = HttpObserver(app, app.wsgi_app)

    @app.url_value_preprocessor
    def _bind_ids(_endpoint, values):
        rule = request.url_rule
        if rule is not None:  # Flask forgets its request at the end; the observer needs this
            request.environ[ROUTE] = (rule.endpoint, rule.rule)
        if values:
            correlation.bind(
                assessment_id=values.get("assessment_id"), operation_id=values.get("operation_id")
            )
