"""The page service and the stream service behind the shipped nginx site (real nginx over TLS,
two gunicorns on one database): nginx sends the chat stream (POST /ai-chat/stream/ and the
re-attach GET /ai-chat/stream/<id>/) to the stream service and everything else to the page
service; Stop and re-attaching work across the two; with the stream service down, the page
service serves the stream."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import threading
import time

import httpx
import pytest
from django.db import connection

from ai_chat.models import Message
from tests import stack
from tests.conftest import make_key
from tests.deploy.test_scale_out import browser, csrf_token, sign_in

pytestmark = [
    pytest.mark.skipif(
        shutil.which("nginx") is None, reason="nginx is not installed (apt-get install nginx-light)"
    ),
    pytest.mark.django_db(transaction=True),
    # alice's password hashed as the servers' production settings check it.
    pytest.mark.usefixtures("served_alice"),
]


def route_streams(proxy: stack.Nginx, port: int) -> None:
    """Point the site's `upstream bsepar_streams` at `port` (stack.Nginx points it at the page
    upstream at the test servers), then reload nginx."""
    conf = proxy.dir / "nginx.conf"
    head, anchor, tail = conf.read_text().partition("upstream bsepar_streams {")
    assert anchor, "deploy/nginx.conf has no stream upstream"
    tail, found = re.subn(
        r"    server 127\.0\.0\.1:\d+;\n", f"    server 127.0.0.1:{port};\n", tail, count=1
    )
    assert found, "the stream upstream names no server"
    conf.write_text(head + anchor + tail)
    before = _workers(proxy)
    subprocess.run(
        ["nginx", "-c", str(conf), "-p", str(proxy.dir), "-s", "reload"], check=True, timeout=30
    )
    # The reload is a signal: wait until the workers that had the old routing are gone.
    deadline = time.monotonic() + 30
    while _workers(proxy) & before or not _workers(proxy):
        assert time.monotonic() < deadline, "nginx did not reload"
        time.sleep(0.05)


def _workers(proxy: stack.Nginx) -> set[int]:
    out = subprocess.run(
        ["pgrep", "-P", str(proxy.proc.pid)], capture_output=True, text=True
    ).stdout
    return {int(pid) for pid in out.split()}


@pytest.fixture(params=["database", "redis"])
def two_services(request, transactional_db, static_root):
    """The page and the stream service on one database; stop and re-attach go through the
    database (PostgreSQL's NOTIFY, SQLite's poll) or through Redis (db 3)."""
    cache = None
    if request.param == "redis":
        cache = stack.redis_url(3)
        if cache is None:
            pytest.skip("no Redis server on 127.0.0.1:6379")
    env = stack.panel_env(stack.database_url(connection.settings_dict), cache, static_root)
    started: list[stack.Process] = []
    try:
        pages = stack.Panel(env)
        started.append(pages)
        streams = stack.Panel(env)
        started.append(streams)
        proxy = stack.Nginx([pages.port], static_root)
        started.append(proxy)
        route_streams(proxy, streams.port)
        yield pages, streams, proxy
    finally:
        for process in reversed(started):
            process.stop()


def requests_in(log: str) -> list[str]:
    """The request lines ("METHOD /path") of a gunicorn access log."""
    return re.findall(r'"([A-Z]+ /[^ "]*) HTTP/1\.1"', log)


class Reader(threading.Thread):
    """Reads one event stream in the background; `events` holds (name, data) as they come."""

    def __init__(self, client: httpx.Client, method: str, path: str, **kwargs) -> None:
        super().__init__(daemon=True)
        self.client, self.method, self.path, self.kwargs = client, method, path, kwargs
        self.events: list[tuple[str, dict]] = []
        self.status = 0

    def run(self) -> None:
        with self.client.stream(self.method, self.path, **self.kwargs) as response:
            self.status = response.status_code
            name = ""
            for line in response.iter_lines():
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    self.events.append((name, json.loads(line[5:])))

    def names(self) -> list[str]:
        return [name for name, _ in self.events]


def wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_streams_go_to_the_stream_service_and_pages_to_the_page_service(two_services, alice, fake):
    pages, streams, proxy = two_services
    key = make_key(alice, fake)
    fake.word_delay = 0.02
    fake.long_words = 1500  # 30 s at this pace: it is stopped long before
    with browser(proxy.url) as posting, browser(proxy.url) as attaching:
        assert sign_in(posting).status_code == 302
        token = csrf_token(posting, "/ai-chat/")
        assert posting.get("/").status_code == 200
        assert posting.get("/api-manager/settings/").status_code == 200
        first = Reader(
            posting,
            "POST",
            "/ai-chat/stream/",
            data={"message": "[[long]]", "key": key.pk},
            headers={"X-CSRFToken": token},
        )
        first.start()
        wait_for(lambda: "delta" in first.names())
        reply = first.events[0][1]["message"]

        # A second tab re-attaches (as after a reload) from the first 5 characters on.
        attaching.cookies = posting.cookies
        second = Reader(
            attaching, "GET", f"/ai-chat/stream/{reply}/", headers={"Last-Event-ID": "5"}
        )
        second.start()
        wait_for(lambda: second.names().count("delta") >= 2)

        # Stop, sent to the page service, ends the reply generated by the stream service.
        stopped = posting.post(f"/ai-chat/messages/{reply}/stop/", headers={"X-CSRFToken": token})
        assert stopped.status_code == 200 and stopped.json() == {"ok": True}
        first.join(30)
        second.join(30)
    assert not first.is_alive() and not second.is_alive()
    assert first.status == 200 and second.status == 200
    for reader in (first, second):
        assert reader.names()[-1] == "done", reader.events[-3:]
        assert reader.events[-1][1]["status"] == "stopped"
    saved = Message.objects.get(pk=reply)
    assert saved.status == "stopped"
    # Both tabs saw the same text: the re-attached one from character 5 on.
    text = "".join(data["text"] for name, data in first.events if name == "delta")
    rejoined = "".join(data["text"] for name, data in second.events if name == "delta")
    assert text == saved.content and rejoined == saved.content[5:]

    on_pages, on_streams = requests_in(pages.output()), requests_in(streams.output())
    assert "POST /ai-chat/stream/" in on_streams
    assert f"GET /ai-chat/stream/{reply}/" in on_streams
    assert {"GET /", "GET /ai-chat/", "GET /api-manager/settings/", "POST /login/"} <= set(on_pages)
    assert f"POST /ai-chat/messages/{reply}/stop/" in on_pages
    assert not [line for line in on_pages if "/ai-chat/stream/" in line], on_pages
    # (and the health check stack.Panel waits on at its start)
    assert not [r for r in on_streams if "/ai-chat/stream/" not in r and r != "GET /healthz"]


def test_the_page_service_serves_streams_while_the_stream_service_is_down(
    two_services, alice, fake
):
    pages, streams, proxy = two_services
    key = make_key(alice, fake)
    streams.stop()
    with browser(proxy.url) as client:
        assert sign_in(client).status_code == 302
        token = csrf_token(client, "/ai-chat/")
        # A body nginx keeps in a temporary file (over 16 KB) is sent again, whole, to the page
        # service: the reply echoes the message's length.
        message = "x" * 30_000
        with client.stream(
            "POST",
            "/ai-chat/stream/",
            data={"message": message, "key": key.pk},
            headers={"X-CSRFToken": token},
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            body = response.read().decode()
    assert "event: done" in body
    assert message in json.dumps(fake.requests[-1].body)
    assert "POST /ai-chat/stream/" in requests_in(pages.output())


class Vanishing(threading.Thread):
    """A stream service that dies with a request in hand: it reads what it is sent, then
    closes the connection without answering (a worker killed mid-request)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.received: list[bytes] = []

    def run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    self.received.append(conn.recv(65536))
                except OSError:
                    continue
                self.answer(conn)

    def answer(self, conn: socket.socket) -> None:
        """What is sent back once a request is read: nothing (subclasses may answer)."""


def test_a_stream_the_stream_service_received_is_never_sent_again(two_services, alice, fake):
    """The page service is the stream upstream's fallback only for a connection that failed:
    a POST the stream service got and then lost is nginx's 502, not a second turn."""
    pages, _, proxy = two_services
    key = make_key(alice, fake)
    vanishing = Vanishing()
    vanishing.start()
    try:
        route_streams(proxy, vanishing.port)
        with browser(proxy.url) as client:
            assert sign_in(client).status_code == 302
            token = csrf_token(client, "/ai-chat/")
            response = client.post(
                "/ai-chat/stream/",
                data={"message": "only once", "key": key.pk},
                headers={"X-CSRFToken": token},
            )
    finally:
        vanishing.sock.close()
    assert response.status_code == 502
    assert any(b"POST /ai-chat/stream/" in got for got in vanishing.received)
    assert "POST /ai-chat/stream/" not in requests_in(pages.output())
    assert not Message.objects.filter(content="only once").exists()
    assert not fake.requests
