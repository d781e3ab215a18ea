"""Security headers and the Content-Security-Policy with a per-request nonce."""

from __future__ import annotations

import re
from contextlib import asynccontextmanager

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient


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


def test_every_middleware_is_async_capable():
    """A sync-only middleware would make Django pass every request (streams too) through a
    thread."""
    from django.conf import settings
    from django.utils.module_loading import import_string

    for path in settings.MIDDLEWARE:
        assert getattr(import_string(path), "async_capable", False), path


async def take_csrf_token(client: httpx.AsyncClient, path: str) -> None:
    page = await client.get(path)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    client.headers.update({"X-CSRFToken": token, "Referer": "https://testserver/"})


@asynccontextmanager
async def asgi_client(user=None):
    """A client of the real ASGI application (bsepar_panel/asgi.py), signed in as `user`,
    with a CSRF token in its headers."""
    from bsepar_panel.asgi import application

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=application), base_url="https://testserver"
    ) as client:
        if user is not None:
            django_client = AsyncClient()
            await django_client.aforce_login(user)
            client.cookies.set("sessionid", django_client.cookies["sessionid"].value)
        await take_csrf_token(client, "/ai-chat/" if user else "/login/")
        yield client


@pytest.mark.django_db(transaction=True)
async def test_sign_in_sessions_csrf_and_messages_work_under_the_asgi_application(alice):
    """The session is saved (in a thread) when it changed; CSRF is enforced; a message is
    stored, shown once and gone."""
    from tests.conftest import PASSWORD, make_key

    async with asgi_client() as client:
        response = await client.post(
            "/login/", data={"username": "alice", "password": PASSWORD}, headers={"X-CSRFToken": ""}
        )
        assert response.status_code == 403  # no CSRF token
        response = await client.post("/login/", data={"username": "alice", "password": PASSWORD})
        assert response.status_code == 302, response.text[:300]
        assert client.cookies.get("sessionid")
        await take_csrf_token(client, "/ai-chat/")  # a new token comes with the new session
        key = await sync_to_async(make_key)(alice, label="Team key")
        response = await client.post(f"/api-manager/keys/{key.pk}/toggle/")
        assert response.status_code == 302
        page = await client.get("/api-manager/settings/")
        assert page.status_code == 200
        assert "Key “Team key” disabled." in page.text
        page = await client.get("/api-manager/settings/")
        assert "Key “Team key” disabled." not in page.text
        await client.post("/logout/")
        response = await client.get("/api-manager/settings/")
        assert response.status_code == 302
        assert "/login/" in response.headers["location"]


async def test_static_files_are_served_by_the_async_middleware(async_client):
    response = await async_client.get("/static/css/panel.css")
    assert response.status_code == 200
    # WhiteNoise's file response iterates synchronously.
    assert b"bsepar panel" in b"".join(response.streaming_content)
