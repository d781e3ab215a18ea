"""The sign-in lockout keys on the real client address (core.client_ip) and the username, and
an address that fails too often is refused whatever the username (users/throttle.py).

These requests carry the headers nginx sends (deploy/nginx.conf): the connection comes from the
proxy (127.0.0.1) and X-Real-IP / X-Forwarded-For hold the address nginx saw. A client's own
X-Forwarded-For never survives nginx; here it is added on top to show it is not believed."""

from __future__ import annotations

import itertools

from django.conf import settings
from django.test import Client, RequestFactory, override_settings

from core.client_ip import client_ip
from tests.conftest import PASSWORD

_fake = (f"192.0.2.{n}" for n in itertools.count(1))


def via_proxy(real: str, **extra: str) -> dict[str, str]:
    """The request metadata of a request nginx forwarded for a client at `real`."""
    return {
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_X_REAL_IP": real,
        "HTTP_X_FORWARDED_FOR": real,
        **extra,
    }


def sign_in(client: Client, username: str, password: str, **meta: str):
    return client.post("/login/", {"username": username, "password": password}, **meta)


def test_the_address_is_the_one_the_trusted_proxy_saw():
    factory = RequestFactory()
    request = factory.get("/", **via_proxy("198.51.100.7", HTTP_X_FORWARDED_FOR="1.2.3.4"))
    assert client_ip(request) == "198.51.100.7"


def test_headers_from_an_untrusted_peer_are_ignored():
    factory = RequestFactory()
    request = factory.get(
        "/", REMOTE_ADDR="203.0.113.9", HTTP_X_REAL_IP="10.0.0.1", HTTP_X_FORWARDED_FOR="10.0.0.1"
    )
    assert client_ip(request) == "203.0.113.9"


def test_garbage_in_the_header_falls_back_to_the_connection():
    factory = RequestFactory()
    request = factory.get("/", REMOTE_ADDR="127.0.0.1", HTTP_X_REAL_IP="not-an-address")
    assert client_ip(request) == "127.0.0.1"


@override_settings(TRUSTED_PROXIES=["10.1.0.0/16"])
def test_the_trusted_proxies_are_a_setting():
    factory = RequestFactory()
    trusted = factory.get("/", REMOTE_ADDR="10.1.2.3", HTTP_X_REAL_IP="198.51.100.7")
    loopback = factory.get("/", REMOTE_ADDR="127.0.0.1", HTTP_X_REAL_IP="198.51.100.7")
    assert client_ip(trusted) == "198.51.100.7"
    assert client_ip(loopback) == "127.0.0.1"


def test_a_new_forged_forwarded_for_per_guess_gives_no_extra_guesses(client, alice):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        meta = via_proxy("198.51.100.7")
        # What a client adds itself; nginx replaces it, and even if it did not, it is unused.
        meta["HTTP_X_FORWARDED_FOR"] = f"{next(_fake)}, 198.51.100.7"
        sign_in(client, "alice", "wrong", **meta)
    meta = via_proxy("198.51.100.7", HTTP_X_FORWARDED_FOR=next(_fake))
    assert sign_in(client, "alice", "wrong", **meta).status_code == 429


def test_a_locked_out_account_cannot_sign_in_by_adding_the_header(client, alice):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        sign_in(client, "alice", "wrong", **via_proxy("198.51.100.7"))
    # What the old nginx line ($proxy_add_x_forwarded_for) passed on: the client's own value first.
    forged = via_proxy("198.51.100.7", HTTP_X_FORWARDED_FOR="192.0.2.200, 198.51.100.7")
    response = sign_in(client, "alice", PASSWORD, **forged)
    assert response.status_code == 429
    assert client.get("/", **forged).status_code == 302


def test_an_attacker_elsewhere_cannot_lock_the_real_user_out(alice):
    attacker, owner = Client(), Client()
    for _ in range(settings.AXES_FAILURE_LIMIT + 2):
        sign_in(attacker, "alice", "wrong", **via_proxy("203.0.113.9"))
    assert sign_in(attacker, "alice", PASSWORD, **via_proxy("203.0.113.9")).status_code == 429
    response = sign_in(owner, "alice", PASSWORD, **via_proxy("198.51.100.7"))
    assert response.status_code == 302
    assert owner.get("/", **via_proxy("198.51.100.7")).status_code == 200


@override_settings(LOGIN_ADDRESS_FAILURE_LIMIT=8)
def test_one_address_trying_many_usernames_is_refused(alice):
    spray = Client()
    # Fewer failures per username than the lockout needs, over many usernames.
    names = [f"user{i}" for i in range(4)]
    for name in names:
        for _ in range(2):
            assert sign_in(spray, name, "wrong", **via_proxy("203.0.113.9")).status_code == 200
    # The address is past its limit: even a right password is refused, as a lockout is.
    refused = sign_in(spray, "alice", PASSWORD, **via_proxy("203.0.113.9"))
    assert refused.status_code == 429
    assert b"Too many attempts" in refused.content
    # The admin's sign-in form is behind the same backend.
    admin = spray.post(
        "/admin/login/?next=/admin/",
        {"username": "alice", "password": PASSWORD, "next": "/admin/"},
        **via_proxy("203.0.113.9"),
    )
    assert admin.status_code == 200  # the form again, not a redirect: nobody signed in
    assert spray.get("/", **via_proxy("203.0.113.9")).status_code == 302
    # Another address is not affected.
    assert sign_in(Client(), "alice", PASSWORD, **via_proxy("198.51.100.7")).status_code == 302


def test_behind_a_unix_socket_the_proxys_header_is_used():
    # A Unix socket has no peer address; only the proxy on this machine can reach it.
    request = RequestFactory().get("/", REMOTE_ADDR="", HTTP_X_REAL_IP="198.51.100.7")
    assert client_ip(request) == "198.51.100.7"
