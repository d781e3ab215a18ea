"""Security headers and the Content-Security-Policy with a per-request nonce."""

from __future__ import annotations

import re


def test_security_headers_are_present(alice_client):
    response = alice_client.get("/")
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    csp = response["Content-Security-Policy"]
    assert "default-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "object-src 'none'" in csp
    assert "'unsafe-inline'" not in csp


def test_the_csp_nonce_changes_per_request_and_matches_the_scripts(alice_client):
    nonces = []
    for _ in range(2):
        response = alice_client.get("/")
        nonce = re.search(r"'nonce-([^']+)'", response["Content-Security-Policy"]).group(1)
        assert f'nonce="{nonce}"'.encode() in response.content
        nonces.append(nonce)
    assert nonces[0] != nonces[1]


def test_pages_have_no_inline_scripts(alice_client):
    for path in ("/", "/ai-chat/", "/api-manager/settings/"):
        html = alice_client.get(path).content.decode()
        for tag in re.findall(r"<script[^>]*>", html):
            assert "src=" in tag, (path, tag)
        assert not re.search(r"\son[a-z]+=", html), path


def test_session_and_csrf_cookies_are_httponly(client, alice):
    from tests.conftest import PASSWORD

    client.get("/login/")
    response = client.post("/login/", {"username": "alice", "password": PASSWORD})
    assert response.cookies["sessionid"]["httponly"]
    assert response.cookies["sessionid"]["samesite"] == "Lax"


def test_every_middleware_runs_in_the_event_loop_under_asgi():
    """A sync-only middleware would make Django pass every request (streams too) through a
    thread; all of ours are async-capable."""
    from django.conf import settings
    from django.utils.module_loading import import_string

    for path in settings.MIDDLEWARE:
        assert getattr(import_string(path), "async_capable", False), path


async def test_static_files_are_served_by_the_async_middleware(async_client):
    response = await async_client.get("/static/css/panel.css")
    assert response.status_code == 200
    # WhiteNoise's file response iterates synchronously.
    assert b"bsepar panel" in b"".join(response.streaming_content)
