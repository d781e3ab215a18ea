"""The threads of a request's thread-sensitive work (bsepar_panel.asgi._handle_request).

Django's handler gives each request a `ThreadSensitiveContext`, for which asgiref starts a thread
at the request's first thread-sensitive call and another one at its end to join it. The entry
point lends each request a thread kept from earlier requests instead.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from unittest import mock

import pytest
from asgiref.sync import sync_to_async

from bsepar_panel import asgi
from tests.core.test_middleware import client_of


@contextmanager
def threads_started() -> Iterator[list[str]]:
    """The names of the threads started in the block, in any thread."""
    names: list[str] = []
    start = threading.Thread.start

    def counting(thread: threading.Thread) -> None:
        names.append(thread.name)
        start(thread)

    with mock.patch.object(threading.Thread, "start", counting):
        yield names


@pytest.mark.django_db(transaction=True)
async def test_requests_start_no_threads_of_their_own(alice):
    """Before: two threads per request (its executor's, and the one that joined it)."""
    async with client_of(asgi.application, alice) as client:

        async def requests() -> None:
            for _ in range(5):
                response = await client.get("/api-manager/settings/")
                assert response.status_code == 200
                response = await client.post("/ai-chat/stream/", data={"message": "   "})
                assert response.status_code == 400

        await requests()  # the shared pools (core.db's, the loop's default) start theirs
        with threads_started() as started:
            await requests()
    # A shared pool may still add a thread of its own (up to its size) when a job is handed to
    # it just before the last one's thread counts as idle: theirs are not the requests' threads.
    shared = ("db_", "asyncio_")
    assert [name for name in started if not name.startswith(shared)] == [], started


async def _two_trips(record: list[tuple[str, int]], name: str, meet: threading.Barrier) -> None:
    """A stand-in for Django's handler: two thread-sensitive calls, the first of which only
    returns once the other request's first call runs at the same time."""

    def first() -> int:
        meet.wait(timeout=5)
        return threading.get_ident()

    record.append((name, await sync_to_async(first)()))
    record.append((name, await sync_to_async(threading.get_ident)()))


async def test_each_request_has_one_thread_and_requests_at_once_have_different_ones():
    """asgiref's guarantee is kept: the thread-sensitive calls of a request run on one thread,
    and two requests at once do not wait for each other's thread (the barrier needs both)."""
    record: list[tuple[str, int]] = []
    meet = threading.Barrier(2)

    def app(name: str):  # type: ignore[no-untyped-def]
        async def handler(scope, receive, send):  # type: ignore[no-untyped-def]
            await _two_trips(record, name, meet)

        return handler

    async def request(name: str) -> None:
        with mock.patch.object(asgi, "django_application", app(name)):
            await asgi._handle_request({"type": "http"}, None, None)

    # Each request patches the module in turn: run them as tasks that patch before they start.
    first = asyncio.create_task(request("a"))
    second = asyncio.create_task(request("b"))
    await asyncio.wait_for(asyncio.gather(first, second), 10)
    threads = {name: {ident for n, ident in record if n == name} for name in ("a", "b")}
    assert len(threads["a"]) == 1 and len(threads["b"]) == 1, record
    assert threads["a"] != threads["b"], record


async def test_a_returned_thread_serves_the_next_request_and_idle_ones_are_bounded():
    idents: list[int] = []

    async def handler(scope, receive, send):  # type: ignore[no-untyped-def]
        idents.append(await sync_to_async(threading.get_ident)())
        await asyncio.sleep(0.01)

    with mock.patch.object(asgi, "django_application", handler):
        await asgi._handle_request({"type": "http"}, None, None)
        await asgi._handle_request({"type": "http"}, None, None)
        assert idents[0] == idents[1]
        many = asgi.REQUEST_THREADS_KEPT + 20
        await asyncio.gather(
            *(asgi._handle_request({"type": "http"}, None, None) for _ in range(many))
        )
    assert len(set(idents[2:])) == many  # at once: each its own thread
    assert len(asgi._request_threads) == asgi.REQUEST_THREADS_KEPT


async def test_a_task_that_outlives_its_request_may_not_use_the_requests_thread():
    """What a reply job (ai_chat.jobs) must not do: asgiref refuses, rather than run the call
    on a thread that another request may have by then."""
    ended = asyncio.Event()
    outcome: list[BaseException | int] = []

    async def late() -> None:
        await ended.wait()
        try:
            outcome.append(await sync_to_async(threading.get_ident)())
        except RuntimeError as exc:
            outcome.append(exc)

    tasks = []

    async def handler(scope, receive, send):  # type: ignore[no-untyped-def]
        tasks.append(asyncio.get_running_loop().create_task(late()))

    with mock.patch.object(asgi, "django_application", handler):
        await asgi._handle_request({"type": "http"}, None, None)
    ended.set()
    await tasks[0]
    assert isinstance(outcome[0], RuntimeError), outcome


@pytest.mark.django_db(transaction=True)
async def test_a_kept_thread_holds_no_database_connection_between_requests(alice):
    """A request thread now outlives its request: the connection the request used on it is
    closed when the request ends (Django's request_finished; on PostgreSQL: back to the pool),
    not held by an idle thread until the next request."""
    from django.db import connections

    def holds_connection() -> bool:
        return any(c.connection is not None for c in connections.all(initialized_only=True))

    async with client_of(asgi.application, alice) as client:
        responses = await asyncio.gather(*(client.get("/api-manager/settings/") for _ in range(3)))
    assert [r.status_code for r in responses] == [200] * 3
    assert asgi._request_threads
    held = [executor.submit(holds_connection).result() for executor in asgi._request_threads]
    assert not any(held), held
