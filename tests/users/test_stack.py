"""The sign-in lockout and sessions through the real serving stack: gunicorn with uvicorn
workers (deploy/gunicorn.conf.py) behind the shipped nginx site (deploy/nginx.conf), with the
default shared cache (the database's)."""

from __future__ import annotations

import itertools
import re
import shutil
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from core.models import SecurityEvent, SecurityEventKind
from tests import stack
from tests.conftest import PASSWORD

pytestmark = [
    pytest.mark.skipif(
        shutil.which("nginx") is None, reason="nginx is not installed (apt-get install nginx-light)"
    ),
    pytest.mark.django_db(transaction=True),
    # alice's password hashed as the servers' production settings check it.
    pytest.mark.usefixtures("served_alice"),
]

LIMIT = 3


@pytest.fixture
def site(transactional_db, static_root):
    # No Redis here on purpose: the default configuration must hold across workers.
    with stack.served(static_root, workers=2, AXES_FAILURE_LIMIT=str(LIMIT)) as site:
        yield site


@pytest.fixture
def panel(site):
    return site.panel


@pytest.fixture
def proxy(site):
    return site.proxy


def client(base: str, **headers: str) -> httpx.Client:
    return httpx.Client(
        base_url=base,
        verify=False,
        timeout=30,
        headers={
            "Host": stack.HOST,
            "X-Forwarded-Proto": "https",
            "Referer": f"https://{stack.HOST}/",
            **headers,
        },
    )


def cookie_header(cookies: dict[str, str]) -> dict[str, str]:
    # The panel's cookies are Secure: over a plain-HTTP hop they are sent explicitly.
    return {"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())}


def sign_in(
    http: httpx.Client, password: str, cookies: dict[str, str], **headers: str
) -> httpx.Response:
    page = http.get("/login/", headers={**cookie_header(cookies), **headers})
    cookies.update(page.cookies)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    response = http.post(
        "/login/",
        data={"username": "alice", "password": password, "csrfmiddlewaretoken": token},
        headers={**cookie_header(cookies), **headers},
    )
    cookies.update(response.cookies)
    return response


def test_through_nginx_a_forged_address_gives_no_extra_guesses(proxy, alice):
    fakes = (f"192.0.2.{n}" for n in itertools.count(1))
    with client(proxy.url) as http:
        cookies: dict[str, str] = {}
        statuses = []
        for _ in range(LIMIT):
            forged = next(fakes)
            response = sign_in(
                http, "wrong", cookies, **{"X-Forwarded-For": forged, "X-Real-IP": forged}
            )
            statuses.append(response.status_code)
        # The failure that reaches the limit is answered with the lockout already.
        assert statuses == [200] * (LIMIT - 1) + [429]
        forged = next(fakes)
        refused = sign_in(
            http, PASSWORD, cookies, **{"X-Forwarded-For": forged, "X-Real-IP": forged}
        )
    assert refused.status_code == 429
    # Every attempt is recorded with the address nginx saw, none with a forged one.
    addresses = set(
        SecurityEvent.objects.filter(
            kind__in=[SecurityEventKind.LOGIN_FAILED, SecurityEventKind.LOCKED_OUT]
        ).values_list("address", flat=True)
    )
    assert addresses == {"127.0.0.1"}
    assert SecurityEvent.objects.filter(kind=SecurityEventKind.LOCKED_OUT).exists()


def test_straight_to_gunicorn_two_honest_clients_do_not_share_a_bucket(panel, alice):
    """With the headers nginx sends: the attacker's address is locked, alice's is not."""
    attacker = {"X-Forwarded-For": "203.0.113.9", "X-Real-IP": "203.0.113.9"}
    owner = {"X-Forwarded-For": "198.51.100.7", "X-Real-IP": "198.51.100.7"}
    with client(panel.url) as http:
        cookies: dict[str, str] = {}
        for _ in range(LIMIT):
            sign_in(http, "wrong", cookies, **attacker)
        assert sign_in(http, PASSWORD, cookies, **attacker).status_code == 429
        # The attacker adding alice's address to its own header changes nothing either: nginx
        # overwrites the header with the one address it saw.
        mine: dict[str, str] = {}
        assert sign_in(http, PASSWORD, mine, **owner).status_code == 302
        assert http.get("/", headers={**cookie_header(mine), **owner}).status_code == 200


def test_after_sign_out_every_worker_refuses_the_old_cookie(panel, alice):
    """Two workers, no Redis. Many fresh connections spread over both workers; before the
    sign-out every one serves the session (so each worker has seen it), after it none does."""
    cookies: dict[str, str] = {}
    with client(panel.url) as http:
        assert sign_in(http, PASSWORD, cookies).status_code == 302
    old = dict(cookies)

    def get_home(_: int) -> int:
        with client(panel.url) as fresh:  # a new connection each time
            return fresh.get("/", headers=cookie_header(old)).status_code

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(get_home, range(48))) == {200}
    with client(panel.url) as http:
        page = http.get("/", headers=cookie_header(cookies))
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        out = http.post(
            "/logout/", data={"csrfmiddlewaretoken": token}, headers=cookie_header(cookies)
        )
        assert out.status_code == 302
    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(get_home, range(96))) == {302}
