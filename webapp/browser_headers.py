"""What browsers are told about every answer: content policy, framing, sniffing, referrers, HTTPS.

`BrowserHeaders`, WSGI middleware around the app and the poll shortcut (webapp/fast_polls), puts
the same headers on every answer, whoever built it (pages, API, static files, error pages,
polls answered from memory), and with FORCE_HTTPS redirects plain HTTP and sends HSTS. One
builder, so the two paths cannot drift apart.

The policy: everything from this origin only; no inline script and no eval (htmx runs with
`allowEval: false` and no indicator style of its own, see templates/base.html); inline style
*attributes* only (`style-src-attr 'unsafe-inline'`), because progress bars are drawn with
`style="width: N%"`, while style elements and sheets must come from here; no framing at all.
"""

from __future__ import annotations

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.utils import redirect
from werkzeug.wsgi import get_current_url

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "style-src-attr 'unsafe-inline'",
        "img-src 'self' data:",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
# Same-origin: a link out (a recommended resource, a webhook URL) carries no Referer at all,
# while the site's own requests keep theirs, which Flask-WTF checks on HTTPS.
REFERRER_POLICY = "same-origin"
PERMISSIONS_POLICY = "browsing-topics=(), camera=(), geolocation=(), microphone=()"
HSTS_MAX_AGE = 365 * 24 * 3600
HSTS = f"max-age={HSTS_MAX_AGE}; includeSubDomains"
HEADERS = [
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", REFERRER_POLICY),
    ("Permissions-Policy", PERMISSIONS_POLICY),
]
PROXY_FIX_SETTINGS = ("x_for", "x_proto", "x_host", "x_port", "x_prefix")


def init_app(app: Flask) -> None:
    """Browser headers on every answer, and HTTPS when FORCE_HTTPS; call after the poll
    shortcut is installed, so this wraps it."""
    app.wsgi_app = BrowserHeaders(app, app.wsgi_app)


class BrowserHeaders:
    """WSGI middleware: the headers on every answer; plain HTTP redirected when FORCE_HTTPS."""

    def __init__(self, app: Flask, wsgi_app) -> None:
        self.app = app
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        # An HTTPS request: the scheme (ProxyFix's word, when trusted), or the proxy's header.
        secure = "https" in (environ["wsgi.url_scheme"], environ.get("HTTP_X_FORWARDED_PROTO"))
        force_https = self.app.config["FORCE_HTTPS"] and not self.app.debug
        headers = HEADERS
        if force_https and secure:
            headers = [*HEADERS, ("Strict-Transport-Security", HSTS)]

        def start(status: str, response_headers: list, exc_info=None):
            return start_response(status, response_headers + headers, exc_info)

        if force_https and not secure:
            url = get_current_url(environ).replace("http://", "https://", 1)
            return redirect(url, 302)(environ, start)
        return self.wsgi_app(environ, start)


def trust_proxies(app: Flask) -> None:
    """Read the client's address and scheme from the PROXY_FIX_* hops of X-Forwarded-* headers;
    call last, so every other layer sees them."""
    hops = {name: app.config[f"PROXY_FIX_{name.upper()}"] for name in PROXY_FIX_SETTINGS}
    if any(hops.values()):
        app.wsgi_app = ProxyFix(app.wsgi_app, **hops)
