"""Database work from async code, on a few shared threads.

Under ASGI Django runs each request's synchronous code in a thread of its own. A chat turn's
database work (loading the user, saving the user's message, saving the reply) runs here
instead, on `DATABASE_THREADS` threads per worker process, so that thousands of streams
starting together do not make thousands of threads contend for the GIL while one of them holds
SQLite's write lock (bench/RESULTS.md). The rest of Django (sync views, request signals) is
unchanged.

This is `sync_to_async(thread_sensitive=False)` with an executor of our own, both public
asgiref API. Thread sensitivity is not needed: each job opens (or reuses) the connection of the
thread it runs on and commits before it returns, so it shares no transaction with its caller.
One consequence is documented rather than detected: a caller's own open transaction (a sync
test case's, or `ATOMIC_REQUESTS`, which the panel does not use) is not visible to a job, so
tests that drive these paths use `django_db(transaction=True)`.

After each job the thread's connections are closed (on PostgreSQL: returned to the pool), so
nothing is held between jobs; SQLite connections stay open, as SQLite has no server to tie up
and reopening one costs a WAL checkpoint when it was the last.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
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


async def run(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run `func(*args, **kwargs)` on a database thread and return its result.

    The context (the active language, for one) goes with it, as `sync_to_async` copies it.
    """
    return await sync_to_async(_job, thread_sensitive=False, executor=_get_executor())(
        func, *args, **kwargs
    )
