"""The stream path spends at most five queries (the session among them) before the provider is called, at any data size."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from django.test import override_settings

from ai_chat.models import Conversation, Message, Role
from tests.conftest import make_key

# The turn's database work runs on core.db's threads, which must see the test's rows.
pytestmark = pytest.mark.django_db(transaction=True)


class _Statements(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.sql: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.sql.append(getattr(record, "sql", None) or record.getMessage())


@contextmanager
def captured_statements() -> Iterator[list[str]]:
    """Every statement sent on any thread (the request's and core.db's): with DEBUG on, Django
    logs each one on `django.db.backends`."""
    logger = logging.getLogger("django.db.backends")
    handler, level = _Statements(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        with override_settings(DEBUG=True):
            yield handler.sql
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def real_queries(statements: list[str]) -> list[str]:
    """The statements that do work (transaction bookkeeping left out)."""
    skip = ("SAVEPOINT", "RELEASE SAVEPOINT", "ROLLBACK TO SAVEPOINT", "BEGIN", "COMMIT")
    return [sql for sql in statements if not sql.upper().startswith(skip)]


def post_and_count(client, **data):
    with captured_statements() as statements:
        response = client.post("/ai-chat/stream/", data)
    # The body (the provider call) streams later, when the response is read.
    assert response.status_code == 200
    return real_queries(statements)


def warm(client):
    """The tools a user may be offered are cached for a minute; the first turn of that minute
    costs two permission queries more, the others none."""
    post_and_count(client, message="warm-up")


def test_a_new_conversation_costs_five_queries(alice_client, alice, fake):
    make_key(alice, fake)
    warm(alice_client)
    queries = post_and_count(alice_client, message="hello")
    # 1 session, 2 user, 3 default key, 4 insert conversation, 5 insert the message and the
    # reply row
    assert len(queries) == 5, "\n".join(q[:200] for q in queries[:20])


@pytest.mark.parametrize("size", [10, 10_000])
def test_a_follow_up_costs_five_queries_at_any_history_size(alice_client, alice, fake, size):
    key = make_key(alice, fake)
    conversation = Conversation.objects.create(
        owner=alice, title="long", key=key, model=key.default_model
    )
    Message.objects.bulk_create(
        Message(
            conversation=conversation,
            role=Role.USER if i % 2 == 0 else Role.ASSISTANT,
            content=f"m{i}",
        )
        for i in range(size)
    )
    warm(alice_client)
    queries = post_and_count(alice_client, message="and then?", conversation=conversation.pk)
    # 1 session, 2 user, 3 conversation with its key, 4 recent history, 5 insert the message
    # and the reply row
    assert len(queries) == 5, "\n".join(q[:200] for q in queries[:20])
