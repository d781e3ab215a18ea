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


def _printed_by_a_fresh_worker(code: str) -> str:
    """What `code` prints in a fresh interpreter that has imported the ASGI entry point, as a
    gunicorn worker does as it boots."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "DJANGO_DEBUG": "on", "DJANGO_SETTINGS_MODULE": "bsepar_panel.settings"}
    done = subprocess.run(
        [sys.executable, "-c", "import bsepar_panel.asgi\n" + code],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_the_worker_loads_the_urlconf_when_it_starts_not_in_its_first_request():
    """Importing the ASGI entry point (what a gunicorn worker does as it boots) imports the
    URLconf and the views: Django would import them in the first request, ~185 ms of CPU that
    the first reply of every fresh worker waited for."""
    code = "import sys; print(all(m in sys.modules for m in ('ai_chat.views', 'ai_chat.jobs', 'openai')))"
    assert _printed_by_a_fresh_worker(code) == "True"


def test_a_worker_prepares_for_its_first_reply_and_freezes_what_it_loaded_as_it_starts():
    """What the first reply of a fresh worker would otherwise wait for (~40 ms of CPU, measured
    in bench/RESULTS.md): the shared TLS context and anyio's asyncio backend, loaded by
    importing the ASGI module; and what it loaded is out of the collector's full passes
    (gc.freeze: each pass over it cost ~150 ms with the event loop stopped)."""
    code = (
        "import gc, sys\n"
        "from api_manager.providers import netguard\n"
        "print(netguard.shared_ssl_context.cache_info().currsize == 1,"
        " 'anyio._backends._asyncio' in sys.modules, 'httpcore2._async' in sys.modules,"
        " gc.get_freeze_count() > 100_000)"
    )
    assert _printed_by_a_fresh_worker(code) == "True True True True"
