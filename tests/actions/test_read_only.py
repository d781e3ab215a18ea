"""Queries run on a read-only connection of their own that never blocks writers (issue #8.3).

These tests commit their data (transactional): the query connection is a second connection
and only sees committed rows, as in production.
"""

from __future__ import annotations

import threading
import time

import pytest
from django.db import DatabaseError, connection, connections, transaction

from ai_chat.actions import query, service
from ai_chat.models import Conversation, Message, Role
from tests.conftest import user_with_permissions

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "readonly"])


def slow_sql() -> str:
    """A statement that runs until the database stops it."""
    if connection.vendor == "postgresql":
        return "SELECT pg_sleep(30)"
    return "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT count(*) FROM n"


@pytest.fixture
def querier(db):
    return user_with_permissions("carol", "run_query")


def test_the_query_alias_reads_the_test_database_through_its_own_read_only_connection(querier):
    conversation = Conversation.objects.create(owner=querier, title="committed")
    Message.objects.create(conversation=conversation, role=Role.USER, content="hi")
    answer = service.run_query(querier, {"code": 'Conversation.objects.values("title")'})
    assert answer["rows"] == [["committed"]]
    readonly = connections["readonly"]
    assert readonly.settings_dict["NAME"] == connection.settings_dict["NAME"]
    assert readonly.connection is not connection.connection
    with pytest.raises(DatabaseError):
        with transaction.atomic(using="readonly"), readonly.cursor() as cursor:
            cursor.execute("DELETE FROM ai_chat_message")
    assert Message.objects.count() == 1


def test_a_long_query_never_blocks_a_writer_and_is_stopped_at_its_limit(querier, settings):
    settings.ACTIONS_QUERY_TIMEOUT_MS = 5000
    conversation = Conversation.objects.create(owner=querier, title="before")
    reading = threading.Event()
    outcome: dict[str, object] = {}

    def long_query() -> None:
        started = time.monotonic()
        try:
            with query.read_only_transaction() as readonly, readonly.cursor() as cursor:
                # The first read opens the read transaction (SQLite: the WAL snapshot): from
                # here on a writer that needed the reader gone would wait.
                cursor.execute("SELECT count(*) FROM ai_chat_conversation")
                reading.set()
                cursor.execute(slow_sql())
        except DatabaseError as exc:
            outcome["error"] = exc
        finally:
            outcome["seconds"] = time.monotonic() - started
            connections.close_all()

    thread = threading.Thread(target=long_query)
    thread.start()
    assert reading.wait(10)
    started = time.monotonic()
    with transaction.atomic():
        Conversation.objects.filter(pk=conversation.pk).update(title="after")
        conversation.messages.create(role=Role.USER, content="written meanwhile")
    write_seconds = time.monotonic() - started
    assert thread.is_alive()  # the query was still running during the write
    assert write_seconds < 0.5
    thread.join(30)
    assert not thread.is_alive()
    assert isinstance(outcome.get("error"), DatabaseError)  # stopped by the database
    assert 4.5 <= outcome["seconds"] < 15
    assert Conversation.objects.get().title == "after"


def test_the_limit_follows_the_setting(querier, settings):
    settings.ACTIONS_QUERY_TIMEOUT_MS = 200
    started = time.monotonic()
    with pytest.raises(DatabaseError):
        with query.read_only_transaction() as readonly, readonly.cursor() as cursor:
            cursor.execute(slow_sql())
    assert time.monotonic() - started < 3
    # The connection is usable again afterwards (SQLite: the progress handler is gone).
    settings.ACTIONS_QUERY_TIMEOUT_MS = 5000
    assert service.run_query(querier, {"code": "Message.objects.count()"})["rows"] == [[0]]
