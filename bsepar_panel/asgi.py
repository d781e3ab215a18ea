"""ASGI entry point: gunicorn runs it with the uvicorn worker (deploy/gunicorn.conf.py)."""

from __future__ import annotations

import asyncio
import functools
import gc
import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import ThreadSensitiveContext
from django.core.asgi import get_asgi_application
from django.urls import get_resolver

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bsepar_panel.settings")

# Django's own handler; the middleware chain is settings.MIDDLEWARE as listed.
django_application = get_asgi_application()

# The URLconf, and with it the views, the SDKs and the Markdown stack, loads as the worker
# starts, not inside its first request (Django imports it lazily: ~185 ms of CPU that the first
# reply of every fresh worker waited for).
get_resolver().url_patterns  # noqa: B018

# Likewise the provider clients' TLS context and HTTP stack, which the first reply's client
# would otherwise build and import (api_manager.providers.warm_up; the apps are loaded now).
from api_manager import providers  # noqa: E402

providers.warm_up()

from ai_chat.turn_gate import TurnStartGate  # noqa: E402

turn_starts = TurnStartGate()

# What a worker has loaded by now lives as long as it does (modules, the URLconf, the SDKs'
# classes: ~280,000 objects). The collector's full passes walked all of it, ~150 ms of CPU
# in which the worker's event loop relayed nothing, once every few hundred replies; frozen, it
# is left out of every pass (the standard advice for long-lived servers, `gc.freeze`). The
# boot's own garbage is collected first, so that nothing unreachable is kept for good.
gc.collect()
gc.freeze()


# Request threads kept for the next requests once a burst is over; beyond this many, a
# returned thread ends. An idle thread costs no CPU, only its stack's address space.
REQUEST_THREADS_KEPT = 64

_request_threads: list[ThreadPoolExecutor] = []


def _lend_request_thread() -> ThreadPoolExecutor:
    """A one-thread executor for one request's thread-sensitive work: a returned one if any,
    else a new one (its thread starts at the request's first thread-sensitive call)."""
    try:
        return _request_threads.pop()
    except IndexError:
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix="request")


def _return_request_thread(executor: ThreadPoolExecutor) -> None:
    if len(_request_threads) < REQUEST_THREADS_KEPT:
        _request_threads.append(executor)
    else:
        executor.shutdown(wait=False)


async def _handle_request(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Django's handler, its thread-sensitive work (sync middleware hooks, request signals, sync
    views) on a thread lent for this request and returned after it.

    Why: Django enters a `ThreadSensitiveContext` per request, for which asgiref starts a new
    thread at the request's first thread-sensitive call and another one at its end to join the
    first: two thread starts per request, thousands when thousands of chat streams start
    together. asgiref's public `ThreadSensitiveContext(executor=...)` runs the request's calls
    on an executor the caller owns instead, and Django's own context, entered inside this one,
    then uses it as it is. Correctness is asgiref's: one thread per request at a time, in the
    order of the calls, and the thread is handed on only after the request has ended.

    A task that outlives its request (a reply job, ai_chat.jobs) must make no thread-sensitive
    call after the request has ended: asgiref raises RuntimeError rather than run it on a
    thread another request now has. The jobs' database work goes to core.db's threads
    (thread_sensitive=False), which is not affected.
    """
    executor = _lend_request_thread()
    try:
        async with ThreadSensitiveContext(executor=executor):
            await django_application(scope, receive, send)
    finally:
        _return_request_thread(executor)


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Django's handler (`_handle_request`; chat turn starts admitted in order of arrival,
    `turn_starts`), and the lifespan protocol it rejects: on shutdown
    (a graceful restart) the worker lets its running replies finish, or saves them as
    interrupted (ai_chat.jobs)."""
    if scope["type"] != "lifespan":
        # A burst of chat turns starts one after another, not all at once (ai_chat.turn_gate).
        async with turn_starts.admit(scope, send) as send_here:
            await _handle_request(scope, receive, send_here)
        return
    from django.conf import settings

    from ai_chat import jobs

    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            _on_exit(
                asyncio.get_running_loop(),
                functools.partial(jobs.begin_shutdown, settings.CHAT_SHUTDOWN_SECONDS),
            )
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await jobs.shutdown(settings.CHAT_SHUTDOWN_SECONDS)
            # The provider clients' connections, closed rather than dropped at exit.
            await providers.close_clients()
            await send({"type": "lifespan.shutdown.complete"})
            return


def _on_exit(loop: asyncio.AbstractEventLoop, begin_shutdown: Any) -> None:
    """Call `begin_shutdown` on the event loop as soon as the server is told to stop.

    Why: uvicorn sends `lifespan.shutdown` only once every open connection has ended, and a
    client attached to a running reply keeps its connection for as long as the reply runs:
    the worker would sit there until gunicorn's graceful timeout killed it, its replies
    neither finished nor saved as interrupted. Counting the replies' grace from the signal
    ends those streams in time (ai_chat.jobs.begin_shutdown). uvicorn's server handles SIGTERM (gunicorn's graceful stop, and
    what a HUP sends the old workers) and SIGINT with `signal.signal` while it serves, which
    is when the lifespan starts; its handler is kept and runs first. Should a uvicorn upgrade
    handle them otherwise, tests/ai_chat/test_replies_served.py
    (test_a_restart_with_a_client_attached_...) fails."""
    if threading.current_thread() is not threading.main_thread():
        return  # signals are the main thread's; a server in another thread is not ours
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(signum)
        if not callable(previous):
            continue  # no server handling it: its default (exit) stays

        def handler(number: int, frame: Any, previous: Any = previous) -> None:
            previous(number, frame)
            loop.call_soon_threadsafe(begin_shutdown)

        signal.signal(signum, handler)
