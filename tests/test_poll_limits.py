"""The poll limit holds for every poll: the htmx partial counts too, on the app's path and the
WSGI shortcut alike, and several web processes together stop at the limit (within 2%)."""

from __future__ import annotations

import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.support import STUDENT, LiveServer, bearer, live_near_cache, log_in, sibling_app
from webapp.fast_polls import LEASE_SHARE

pytestmark = pytest.mark.db

HTMX = {"HX-Request": "true"}


def limited(app, limit: str, prefix: str | None = None):
    """A sibling app (a process of its own) with this poll limit and counters of its own."""
    return sibling_app(
        app, RATE_LIMIT_POLL=limit, RATELIMIT_KEY_PREFIX=prefix or f"test-{uuid.uuid4().hex}"
    )


@pytest.mark.parametrize("served_from", ["database", "memory"])
def test_the_partial_past_the_poll_limit_is_429_with_retry_after(app, in_progress, served_from):
    site = limited(app, "5/minute")
    if served_from == "memory":
        live_near_cache(site)  # after the first poll, the WSGI shortcut answers from memory
    client = site.test_client()
    log_in(client, STUDENT)
    url = f"/assessments/{in_progress}/progress/live"
    answers = [client.get(url, headers=HTMX) for _ in range(8)]
    assert [a.status_code for a in answers] == [200] * 5 + [429] * 3
    refused = answers[-1]
    assert refused.get_json()["code"] == "RATE_LIMITED"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60


def test_the_partial_and_the_status_poll_share_one_bucket(app, tokens, in_progress):
    site = limited(app, "4/minute")
    live_near_cache(site)
    client = site.test_client()
    log_in(client, STUDENT)
    partial = f"/assessments/{in_progress}/progress/live"
    status = f"/api/v1/assessments/{in_progress}/status"
    polls = [
        client.get(partial, headers=HTMX),
        client.get(status, headers=bearer(tokens["student"])),
        client.get(partial, headers=HTMX),
        client.get(status, headers=bearer(tokens["student"])),
        client.get(partial, headers=HTMX),
        client.get(status, headers=bearer(tokens["student"])),
    ]
    assert [p.status_code for p in polls] == [200, 200, 200, 200, 429, 429]


def test_the_progress_page_itself_is_not_a_poll(app, in_progress):
    site = limited(app, "2/minute")
    client = site.test_client()
    log_in(client, STUDENT)
    pages = [client.get(f"/assessments/{in_progress}/progress") for _ in range(4)]
    assert [p.status_code for p in pages] == [200] * 4


def test_two_web_processes_polling_together_never_pass_the_limit_and_stop_near_it(
    app,
    tokens,
    in_progress,
):
    limit, attempts = 300, 600
    prefix = f"test-two-{uuid.uuid4().hex}"
    sites = [limited(app, f"{limit}/minute", prefix) for _ in range(2)]
    for site in sites:
        live_near_cache(site)  # both answer from memory once warm, as busy processes do
    login = sites[0].test_client()
    log_in(login, STUDENT)
    cookie = login.get_cookie("session").value
    servers = [LiveServer(site) for site in sites]
    kinds = {
        "status": (f"/api/v1/assessments/{in_progress}/status", bearer(tokens["student"])),
        "partial": (
            f"/assessments/{in_progress}/progress/live",
            {**HTMX, "Cookie": f"session={cookie}"},
        ),
    }
    per_poller = attempts // 8

    def poll(server: LiveServer, kind: str) -> Counter[int]:
        path, headers = kinds[kind]
        with requests.Session() as session:
            return Counter(
                session.get(f"{server.url}{path}", headers=headers, timeout=30).status_code
                for _ in range(per_poller)
            )

    pollers = [(server, kind) for server in servers for kind in kinds for _ in range(2)]
    try:
        with ThreadPoolExecutor(len(pollers)) as pool:
            answers = sum(pool.map(lambda args: poll(*args), pollers), Counter())
    finally:
        for server in servers:
            server.stop()
    assert set(answers) <= {200, 429}, answers
    assert sum(answers.values()) == attempts
    # Every answered poll was counted first (fast_polls.Leases): never one over the limit, and
    # short of it by at most what the other process had counted ahead.
    assert limit - limit // LEASE_SHARE <= answers[200] <= limit, answers
