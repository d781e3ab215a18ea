"""Sign-in, sign-out and the brute-force lockout."""

from __future__ import annotations

import re

import pytest
from django.conf import settings
from django.test import Client

from tests.conftest import PASSWORD


def test_the_login_page_renders(client, db):
    response = client.get("/login/")
    assert response.status_code == 200
    assert b'name="username"' in response.content
    assert b'name="password"' in response.content


def test_login_works_and_follows_next(client, alice):
    response = client.post(
        "/login/?next=/ai-chat/", {"username": "alice", "password": PASSWORD, "next": "/ai-chat/"}
    )
    assert response.status_code == 302
    assert response["Location"] == "/ai-chat/"
    assert client.get("/").status_code == 200


def test_login_redirects_home_by_default(client, alice):
    response = client.post("/login/", {"username": "alice", "password": PASSWORD})
    assert response.status_code == 302
    assert response["Location"] == "/"


def test_it_refuses_a_wrong_password(client, alice):
    response = client.post("/login/", {"username": "alice", "password": "wrong"})
    assert response.status_code == 200
    assert b"correct username and password" in response.content
    assert client.get("/").status_code == 302


def test_it_ignores_an_offsite_next(client, alice):
    response = client.post(
        "/login/", {"username": "alice", "password": PASSWORD, "next": "https://evil.example/"}
    )
    assert response["Location"] == "/"


def test_the_session_key_changes_at_login(alice):
    client = Client()
    client.get("/login/")
    session = client.session
    session["probe"] = 1
    session.save()
    before = client.session.session_key
    client.post("/login/", {"username": "alice", "password": PASSWORD})
    assert client.session.session_key != before


def _fail(client: Client, username: str, times: int):
    response = None
    for _ in range(times):
        response = client.post(
            "/login/", {"username": username, "password": "nope"}, REMOTE_ADDR="10.9.8.7"
        )
    return response


def test_it_locks_out_after_repeated_failures(client, alice):
    limit = settings.AXES_FAILURE_LIMIT
    response = _fail(client, "alice", limit)
    assert response.status_code == 429
    assert b"Too many attempts" in response.content
    # Even the right password is refused while locked out.
    response = client.post(
        "/login/", {"username": "alice", "password": PASSWORD}, REMOTE_ADDR="10.9.8.7"
    )
    assert response.status_code == 429
    assert client.get("/").status_code == 302


def test_a_locked_out_unknown_user_looks_the_same(client, alice):
    limit = settings.AXES_FAILURE_LIMIT
    known = _fail(client, "alice", limit)
    unknown = _fail(Client(), "nobody-here", limit)
    assert known.status_code == unknown.status_code == 429
    strip = re.compile(rb'name="csrfmiddlewaretoken" value="[^"]+"')
    assert strip.sub(b"", known.content) == strip.sub(b"", unknown.content)


def test_logout_is_post_only(alice_client):
    assert alice_client.get("/logout/").status_code == 405
    response = alice_client.post("/logout/")
    assert response.status_code == 302
    assert response["Location"] == "/login/"
    assert alice_client.get("/").status_code == 302


@pytest.mark.parametrize("language,direction", [("fa", "rtl"), ("en", "ltr")])
def test_the_language_switch_flips_the_layout(alice_client, language, direction):
    response = alice_client.post("/i18n/setlang/", {"language": language, "next": "/"})
    assert response.status_code == 302
    page = alice_client.get("/").content.decode()
    assert f'<html lang="{language}" dir="{direction}">' in page
