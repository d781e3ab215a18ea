"""A page request that meets an app worker as it shuts down (an upgrade's HUP, a restart) is
sent again by nginx, not answered 502: the shipped site lists the page service a second time,
as its own backup, so an idempotent request whose connection failed (the worker closed it with
the request unanswered) gets another connection. A POST is never sent twice."""

from __future__ import annotations

import shutil
import socket

import httpx
import pytest

from tests import stack
from tests.deploy.test_stream_service import Vanishing

pytestmark = pytest.mark.skipif(
    shutil.which("nginx") is None, reason="nginx is not installed (apt-get install nginx-light)"
)


class ClosesFirst(Vanishing):
    """An app server whose first connection after `close_next()` is closed with its request
    read and unanswered (a worker stopping with a keep-alive connection in hand); every other
    request gets a 200."""

    def __init__(self) -> None:
        super().__init__()
        self._close = False

    def close_next(self) -> None:
        self._close = True

    @property
    def requests(self) -> list[str]:
        return [got.decode("latin-1").split("\r\n", 1)[0] for got in self.received]

    def answer(self, conn: socket.socket) -> None:
        if self._close:
            self._close = False
            return
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n"
            b"Connection: close\r\n\r\nok"
        )


@pytest.fixture
def site(tmp_path):
    server = ClosesFirst()
    server.start()
    proxy = stack.Nginx([server.port], str(tmp_path))
    server.received.clear()  # nginx's start was awaited with a /healthz
    try:
        yield server, proxy
    finally:
        proxy.stop()
        server.sock.close()


def get(proxy: stack.Nginx, method: str, path: str) -> httpx.Response:
    return httpx.request(
        method, f"{proxy.url}{path}", headers={"Host": stack.HOST}, verify=False, timeout=30
    )


def test_a_page_request_the_worker_dropped_is_sent_again(site):
    server, proxy = site
    server.close_next()
    response = get(proxy, "GET", "/login/")
    assert response.status_code == 200, response.text[:300]
    assert response.text == "ok"
    assert server.requests == ["GET /login/ HTTP/1.1", "GET /login/ HTTP/1.1"]


def test_a_post_the_worker_dropped_is_not_sent_again(site):
    server, proxy = site
    server.close_next()
    response = get(proxy, "POST", "/login/")
    assert response.status_code == 502
    assert server.requests == ["POST /login/ HTTP/1.1"]
