"""Every admin page is reachable from the navigation, and the current one is marked."""

from __future__ import annotations

import re

import pytest

from tests.support import ADMIN, STUDENT, log_in

pytestmark = pytest.mark.db

NAV = re.compile(r'<nav class="subnav" aria-label="Admin".*?</nav>', re.DOTALL)
LINK = re.compile(r'<a href="([^"]+)"( aria-current="page")?>([^<]+)</a>')


def test_every_admin_page_is_one_click_from_the_admin_link(app):
    client = app.test_client()
    log_in(client, ADMIN)
    dashboard = client.get("/").get_data(as_text=True)
    admin_href = re.search(r'<a href="([^"]+)">Admin</a>', dashboard).group(1)
    assert admin_href == "/admin/"
    index = client.get(admin_href)
    assert index.status_code == 200
    links = {name: href for href, _, name in LINK.findall(NAV.search(index.text).group(0))}
    assert links == {
        "Operations": "/admin/operations",
        "Webhooks": "/admin/webhooks",
        "Question sets": "/admin/question-sets",
        "Integrations": "/admin/integrations",
        "Audit log": "/admin/audit",
    }
    for name, href in links.items():
        page = client.get(href)
        assert page.status_code == 200, href
        current = [n for _, marked, n in LINK.findall(NAV.search(page.text).group(0)) if marked]
        assert current == [name], (href, current)


def test_students_see_no_admin_link(app):
    client = app.test_client()
    log_in(client, STUDENT)
    assert ">Admin</a>" not in client.get("/").get_data(as_text=True)
    assert client.get("/admin/").status_code == 403
