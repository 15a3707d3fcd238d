"""What browsers are told about every answer: content policy, framing, sniffing, referrers, HTTPS.

Flask-Talisman sets these headers on every answer the app builds (pages, API, static files,
error pages) and, with FORCE_HTTPS, redirects plain HTTP and sends HSTS. The WSGI poll shortcut
(webapp/fast_polls.PollShortcut) answers some polls before Flask runs, so `shortcut_headers`
gives it the very same headers from the same policy; tests compare the two paths header by
header.

The policy: everything from this origin only; no inline script and no eval (htmx runs with
`allowEval: false` and no indicator style of its own, see templates/base.html); inline style
*attributes* only (`style-src-attr 'unsafe-inline'`), because progress bars are drawn with
`style="width: N%"`, while style elements and sheets must come from here; no framing at all.
"""

from __future__ import annotations

from flask import Flask
from flask_talisman import DENY, Talisman
from werkzeug.middleware.proxy_fix import ProxyFix

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
# What Talisman sets on every answer with the settings below (the shortcut adds these).
SHORTCUT_HEADERS = [
    ("Permissions-Policy", PERMISSIONS_POLICY),
    ("X-Frame-Options", DENY),
    ("X-Content-Type-Options", "nosniff"),
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("Referrer-Policy", REFERRER_POLICY),
]
PROXY_FIX_SETTINGS = ("x_for", "x_proto", "x_host", "x_port", "x_prefix")


def init_app(app: Flask) -> None:
    """Security headers on every answer, and HTTPS when FORCE_HTTPS; call before any other
    before-request hook, so a plain-HTTP request is redirected before anything answers it."""
    force_https = app.config["FORCE_HTTPS"]
    Talisman(
        app,
        force_https=force_https,
        strict_transport_security=force_https,
        strict_transport_security_max_age=HSTS_MAX_AGE,
        session_cookie_secure=app.config["SESSION_COOKIE_SECURE"],
        session_cookie_samesite=app.config["SESSION_COOKIE_SAMESITE"],
        frame_options=DENY,
        content_security_policy=CONTENT_SECURITY_POLICY,
        referrer_policy=REFERRER_POLICY,
        permissions_policy=PERMISSIONS_POLICY,
    )


def trust_proxies(app: Flask) -> None:
    """Read the client's address and scheme from the PROXY_FIX_* hops of X-Forwarded-* headers;
    call last, so the WSGI poll shortcut sees them too."""
    hops = {name: app.config[f"PROXY_FIX_{name.upper()}"] for name in PROXY_FIX_SETTINGS}
    if any(hops.values()):
        app.wsgi_app = ProxyFix(app.wsgi_app, **hops)


def shortcut_headers(app: Flask, environ: dict) -> list[tuple[str, str]] | None:
    """The headers Talisman puts on the app's answers, for an answer built outside Flask; None
    when the app must answer itself (a plain-HTTP request FORCE_HTTPS redirects)."""
    # Talisman's own test for an HTTPS request: the scheme, or the proxy's word for it.
    secure = "https" in (environ.get("wsgi.url_scheme"), environ.get("HTTP_X_FORWARDED_PROTO"))
    if app.config["FORCE_HTTPS"] and not secure and not app.debug:
        return None
    if app.config["FORCE_HTTPS"] and secure:
        return [*SHORTCUT_HEADERS, ("Strict-Transport-Security", HSTS)]
    return SHORTCUT_HEADERS
