"""Sessions live where every worker sees them (the database, or Redis through cached_db), so a
sign-out, a deactivation or a password change takes effect everywhere at once; signed-in pages
are never stored by a browser or a proxy."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.sessions.models import Session
from django.test import Client

from core.models import SecurityEvent, SecurityEventKind
from tests.conftest import PASSWORD, signed_in

ROOT = Path(__file__).resolve().parents[2]


def _settings_with(**env: str) -> str:
    """The cache backend and session engine production settings choose for this environment."""
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "CACHE_URL", "SECRET_KEY", "ENCRYPTION_KEYS"))
    }
    clean.update(env, DJANGO_SETTINGS_MODULE="bsepar_panel.settings", DJANGO_DEBUG="on")
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.CACHES['default']['BACKEND'], s.SESSION_ENGINE)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_the_default_configuration_shares_everything_between_workers():
    assert _settings_with() == (
        "django.core.cache.backends.db.DatabaseCache django.contrib.sessions.backends.db"
    )


def test_with_redis_sessions_are_read_from_the_shared_cache():
    assert _settings_with(CACHE_URL="redis://127.0.0.1:6379/1") == (
        "django.core.cache.backends.redis.RedisCache django.contrib.sessions.backends.cached_db"
    )


def test_the_database_cache_table_exists_in_a_migrated_database(db):
    from django.core.cache import caches
    from django.test import override_settings

    with override_settings(
        CACHES={
            "shared": {
                "BACKEND": "django.core.cache.backends.db.DatabaseCache",
                "LOCATION": "bsepar_cache",
            }
        }
    ):
        shared = caches["shared"]
        shared.set("probe", 41)
        assert shared.incr("probe") == 42


def test_sign_out_deletes_the_session_for_every_client(alice):
    client = Client()
    assert client.post("/login/", {"username": "alice", "password": PASSWORD}).status_code == 302
    cookie = client.cookies["sessionid"].value
    other = Client()
    other.cookies["sessionid"] = cookie  # the same cookie, as another worker would see it
    assert other.get("/").status_code == 200
    client.post("/logout/")
    assert not Session.objects.filter(session_key=cookie).exists()
    assert other.get("/").status_code == 302


def test_a_deactivated_user_is_signed_out_at_once(alice):
    client = signed_in(alice)
    assert client.get("/").status_code == 200
    alice.is_active = False
    alice.save()
    assert client.get("/").status_code == 302
    assert (
        SecurityEvent.objects.filter(kind=SecurityEventKind.ACCOUNT_CHANGED, user=alice)
        .get()
        .detail
        == "is_active=False"
    )


def test_the_sidebar_links_to_the_password_change_page(alice_client):
    page = alice_client.get("/").content.decode()
    assert 'href="/password/"' in page
    form = alice_client.get("/password/")
    assert form.status_code == 200
    assert b'name="old_password"' in form.content


def test_a_password_change_ends_the_other_sessions_but_not_this_one(alice):
    here, elsewhere = Client(), Client()
    for client in (here, elsewhere):
        client.post("/login/", {"username": "alice", "password": PASSWORD})
        assert client.get("/").status_code == 200
    new = "a different long passphrase 42"
    response = here.post(
        "/password/",
        {"old_password": PASSWORD, "new_password1": new, "new_password2": new},
    )
    assert response.status_code == 302
    page = here.get("/")
    assert page.status_code == 200
    assert "Your other sessions were signed out" in page.content.decode()
    assert elsewhere.get("/").status_code == 302
    event = SecurityEvent.objects.get(kind=SecurityEventKind.PASSWORD_CHANGED)
    assert event.username == "alice"
    assert event.actor == "alice"


def test_a_wrong_old_password_changes_nothing(alice):
    client = signed_in(alice)
    response = client.post(
        "/password/",
        {"old_password": "wrong", "new_password1": "x y z w v u", "new_password2": "x y z w v u"},
    )
    assert response.status_code == 200
    assert b"old password was entered incorrectly" in response.content
    alice.refresh_from_db()
    assert alice.check_password(PASSWORD)
    assert not SecurityEvent.objects.filter(kind=SecurityEventKind.PASSWORD_CHANGED).exists()


def test_pages_are_never_stored_by_a_cache(alice_client):
    for path in ("/", "/ai-chat/", "/api-manager/settings/", "/password/"):
        response = alice_client.get(path)
        directives = {part.strip() for part in response["Cache-Control"].split(",")}
        assert {"no-store", "private"} <= directives, path


@pytest.mark.django_db(transaction=True)
async def test_pages_served_by_the_asgi_application_are_not_stored_either(alice):
    from tests.core.test_security_headers import asgi_client

    async with asgi_client(alice) as client:
        for path in ("/", "/api-manager/settings/"):
            response = await client.get(path)
            assert response.status_code == 200
            directives = {part.strip() for part in response.headers["cache-control"].split(",")}
            assert {"no-store", "private"} <= directives, path
