"""Every page but the public ones needs sign-in."""

from __future__ import annotations

import re

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

PUBLIC = {"/login/", "/healthz", "/i18n/setlang/"}


def _patterns(resolver: URLResolver, prefix: str = ""):
    for entry in resolver.url_patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            yield from _patterns(entry, route)
        elif isinstance(entry, URLPattern):
            yield route, entry


def _own_paths():
    for route, entry in _patterns(get_resolver()):
        if route.startswith("admin/"):
            continue
        path = "/" + re.sub(r"<(?:\w+:)?\w+>", "1", route).lstrip("^").rstrip("$")
        yield path, entry


@pytest.mark.parametrize("path", [p for p, _ in _own_paths() if p not in PUBLIC])
def test_every_page_redirects_an_anonymous_user_to_login(client, db, path):
    for method in (client.get, client.post):
        response = method(path)
        assert response.status_code == 302, (path, response.status_code)
        assert response["Location"].startswith("/login/?next="), path


def test_the_admin_needs_sign_in_too(client, db):
    response = client.get("/admin/")
    assert response.status_code == 302
    assert "login" in response["Location"]
