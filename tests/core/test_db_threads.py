"""core.db: the database work of async requests runs on a few shared threads."""

from __future__ import annotations

import threading

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import User
from django.db import connection

from core import db

pytestmark = pytest.mark.django_db(transaction=True)


def where() -> tuple[str, bool]:
    User.objects.exists()  # open this thread's connection
    return threading.current_thread().name, connection.connection is not None


async def test_async_code_runs_its_database_work_on_a_database_thread(settings):
    names = {(await db.run(where))[0] for _ in range(20)}
    assert all(name.startswith("db_") for name in names), names
    assert len(names) <= settings.DATABASE_THREADS


async def test_no_connection_is_held_between_jobs_except_sqlites():
    await db.run(where)
    held = await db.run(lambda: connection.connection is not None)
    # PostgreSQL: back to the pool (or closed) after every job; SQLite: kept open.
    assert held == (connection.vendor == "sqlite")


def test_sync_callers_use_the_database_threads_too():
    """Under a sync caller (WSGI, Django's sync test client) the work runs on a database
    thread as well: nothing looks at who is waiting (core/db.py says what that means for a
    caller's open transaction)."""
    name, _ = async_to_sync(db.run)(where)
    assert name.startswith("db_"), name


async def test_an_error_in_a_job_reaches_the_caller():
    def fails():
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await db.run(fails)
