"""Two panel processes behind the shipped nginx site, sharing the database (and Redis when it
runs): streams are not buffered by nginx, and a session, a lockout, a key's budget and a
conversation hold across both servers."""

from __future__ import annotations

import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from ai_chat.models import Message
from api_manager.models import ProviderKey
from tests import stack
from tests.conftest import PASSWORD, make_key

pytestmark = [
    pytest.mark.skipif(
        shutil.which("nginx") is None, reason="nginx is not installed (apt-get install nginx-light)"
    ),
    pytest.mark.django_db(transaction=True),
    # alice's password hashed as the servers' production settings check it.
    pytest.mark.usefixtures("served_alice"),
]


@pytest.fixture
def servers(transactional_db, static_root):
    with stack.served(static_root, servers=2, cache=stack.redis_url()) as site:
        yield site.panels, site.proxy


def browser(base: str, **kwargs) -> httpx.Client:
    return httpx.Client(
        base_url=base,
        verify=False,
        headers={
            "Host": stack.HOST,
            "X-Forwarded-Proto": "https",
            "Referer": f"https://{stack.HOST}/",
        },
        timeout=30,
        **kwargs,
    )


def csrf_token(client: httpx.Client | Direct, path: str) -> str:
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', client.get(path).text).group(1)


def sign_in(
    client: httpx.Client, username: str = "alice", password: str = PASSWORD
) -> httpx.Response:
    token = csrf_token(client, "/login/")
    return client.post(
        "/login/", data={"username": username, "password": password, "csrfmiddlewaretoken": token}
    )


def stream(client: httpx.Client, token: str, **data) -> tuple[list[tuple[float, str]], float]:
    """POST a chat message; return the (arrival time, line) of each `event:` line and the end."""
    started = time.monotonic()
    events = []
    with client.stream(
        "POST", "/ai-chat/stream/", data=data, headers={"X-CSRFToken": token}
    ) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line.startswith("event:"):
                events.append((time.monotonic() - started, line[6:].strip()))
    return events, time.monotonic() - started


def test_nginx_passes_the_stream_through_without_buffering(servers, alice, fake):
    _, proxy = servers
    key = make_key(alice, fake)
    fake.word_delay = 0.02
    fake.long_words = 100  # about two seconds of reply
    with browser(proxy.url) as client:
        assert sign_in(client).status_code == 302
        token = csrf_token(client, "/ai-chat/")
        events, total = stream(client, token, message="[[long]]", key=key.pk)
    first_delta = next(at for at, name in events if name == "delta")
    assert [name for _, name in events][-1] == "done"
    assert total > 1.5
    # Unbuffered: the first words arrive while the provider is still writing the rest (about
    # two seconds of them), not with the end. (Timed from the first delta, not from the POST:
    # a loaded machine's turn start does not make nginx look buffered.)
    assert total - first_delta > 1.2, (first_delta, total)
    # Static files are nginx's own: immutable caching, precompressed.
    with browser(proxy.url) as client:
        page = client.get("/login/").text
        css_url = re.search(r'href="(/static/css/panel\.[0-9a-f]+\.css)"', page).group(1)
        css = client.get(css_url, headers={"Accept-Encoding": "gzip"})
    assert css.status_code == 200
    assert "immutable" in css.headers["cache-control"]
    assert css.headers.get("content-encoding") == "gzip"


class Direct:
    """A client for one app server, bypassing nginx. The panel's cookies are Secure, so over
    this plain-HTTP hop (as nginx would) they are sent as an explicit Cookie header."""

    def __init__(
        self, server: stack.Panel, cookies: dict[str, str] | None = None, ip: str = "198.51.100.7"
    ) -> None:
        self.cookies = dict(cookies or {})
        self.client = browser(server.url)
        self.client.headers["X-Forwarded-For"] = ip

    def _headers(self) -> dict[str, str]:
        return {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}

    def _keep(self, response: httpx.Response) -> httpx.Response:
        for name, value in response.cookies.items():
            self.cookies[name] = value
        return response

    def get(self, path: str) -> httpx.Response:
        return self._keep(self.client.get(path, headers=self._headers()))

    def post_form(self, page: str, path: str, data: dict) -> httpx.Response:
        token = csrf_token(self, page)
        return self._keep(
            self.client.post(
                path, data=dict(data, csrfmiddlewaretoken=token), headers=self._headers()
            )
        )

    def sign_in(self, username: str = "alice", password: str = PASSWORD) -> httpx.Response:
        return self.post_form("/login/", "/login/", {"username": username, "password": password})

    def close(self) -> None:
        self.client.close()


def test_a_session_lockout_budget_and_conversation_hold_across_two_servers(
    servers, alice, fake, settings
):
    (one, two), proxy = servers
    key = make_key(alice, fake)

    # Sign in on server one; the session is good on server two.
    first = Direct(one)
    assert first.sign_in().status_code == 302
    second = Direct(two, first.cookies)
    assert second.get("/").status_code == 200

    # A conversation streamed through server one is read through server two.
    reply = first.post_form(
        "/ai-chat/", "/ai-chat/stream/", {"message": "hello from server one", "key": key.pk}
    )
    assert reply.status_code == 200
    assert "event: done" in reply.text
    page = second.get("/ai-chat/")
    conversation = re.search(r'href="/ai-chat/c/(\d+)/"', page.text).group(1)
    assert (
        "Hello! You said: hello from server one" in second.get(f"/ai-chat/c/{conversation}/").text
    )

    # A key's budget used up through server one is refused by server two before any call.
    ProviderKey.objects.filter(pk=key.pk).update(monthly_token_budget=5)
    calls = len(fake.requests)
    refused = second.post_form(
        "/ai-chat/", "/ai-chat/stream/", {"message": "one more", "key": key.pk}
    )
    assert refused.status_code == 429
    assert "budget" in refused.json()["error"]
    assert len(fake.requests) == calls

    # A lockout earned half on one server and half on the other holds on both.
    attackers = [Direct(one, ip="203.0.113.9"), Direct(two, ip="203.0.113.9")]
    for attempt in range(settings.AXES_FAILURE_LIMIT):
        attackers[attempt % 2].sign_in(password="wrong")
    for attacker in attackers:
        assert attacker.sign_in().status_code == 429
        attacker.close()
    first.close()
    second.close()
    assert Message.objects.filter(
        content="Hello! You said: hello from server one", status="complete"
    ).exists()


def test_open_streams_hold_no_database_connection(transactional_db, static_root, alice, fake):
    """Twelve streams waiting for a slow first token, through one server whose pool has three
    connections (on PostgreSQL): each turn takes a connection to start and one to end, none
    while it streams, so all twelve reach the provider at once and all finish."""
    key = make_key(alice, fake)
    fake.slow_first_token = 4.0
    count = 12
    with stack.served(
        static_root,
        cache=stack.redis_url(),
        proxy=False,
        DATABASE_POOL_MIN="1",
        DATABASE_POOL_MAX="3",
        DATABASE_POOL_TIMEOUT="2",
        # Twelve replies of one user at once: above the per-user cap (issue #11), lifted here.
        CHAT_MAX_RUNNING_REPLIES="100",
    ) as site:
        panel = site.panel
        first = Direct(panel)
        assert first.sign_in().status_code == 302
        token = csrf_token(first, "/ai-chat/")

        def one(_: int) -> str:
            with browser(panel.url) as client:
                response = client.post(
                    "/ai-chat/stream/",
                    data={"message": "[[slow]] wait", "key": key.pk},
                    headers={"X-CSRFToken": token, **first._headers()},
                )
                return response.text

        with ThreadPoolExecutor(count) as pool:
            replies = pool.map(one, range(count))
            deadline = time.monotonic() + 3.5
            while fake.open_streams < count and time.monotonic() < deadline:
                time.sleep(0.05)
            opened = fake.open_streams
            replies = list(replies)
        assert opened == count, panel.output()[-2000:]
        assert all("event: done" in reply for reply in replies), replies[0][-500:]
        first.close()
