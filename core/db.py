"""Database work from async code, on a few shared threads.

Under ASGI Django runs each request's synchronous code in a thread of its own. A chat turn's
database work (loading the user, saving the user's message, saving the reply) used to run
there: 2,000 streams starting together made 2,000 threads contend for the GIL, and a turn
holding SQLite's write lock waited its turn for the GIL among all of them. The async hot paths
run their database work here instead, on `DATABASE_THREADS` threads; the rest of Django
(sync views, request signals) is unchanged.

After each job the thread's connections are closed (on PostgreSQL: returned to the pool), so
nothing is held between jobs; SQLite connections stay open, as SQLite has no server to tie up
and reopening one costs a WAL checkpoint when it was the last.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from asgiref.sync import AsyncToSync, sync_to_async
from django.conf import settings
from django.db import connections

T = TypeVar("T")

_executor: ThreadPoolExecutor | None = None
_executor_guard = threading.Lock()


def _get_executor() -> ThreadPoolExecutor:
    global _executor
    with _executor_guard:
        if _executor is None:
            _executor = ThreadPoolExecutor(
                max_workers=settings.DATABASE_THREADS, thread_name_prefix="db"
            )
        return _executor


def _release_connections() -> None:
    """Close this thread's database connections (back to the pool, on PostgreSQL), except a
    usable SQLite one and one inside a transaction (a test's own)."""
    for connection in connections.all(initialized_only=True):
        if connection.in_atomic_block:
            continue
        if connection.vendor == "sqlite" and (
            not connection.errors_occurred or connection.is_usable()
        ):
            connection.errors_occurred = False
            continue
        connection.close()


def _job(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    try:
        return func(*args, **kwargs)
    finally:
        _release_connections()


def _called_from_sync_code() -> bool:
    """True when synchronous code is waiting on this async code through `async_to_sync` (a
    WSGI server, Django's synchronous test client): Django then runs sync work on that thread,
    with its connection and open transaction, and so does `run`."""
    return (
        getattr(AsyncToSync.executors, "current", None) is not None
        or asyncio.get_running_loop() in AsyncToSync.loop_thread_executors
    )


async def run(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run `func(*args, **kwargs)` on a database thread and return its result."""
    if _called_from_sync_code():
        return await sync_to_async(func)(*args, **kwargs)
    return await sync_to_async(_job, thread_sensitive=False, executor=_get_executor())(
        func, *args, **kwargs
    )
