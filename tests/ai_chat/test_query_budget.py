"""The stream path spends at most six queries (the session among them) before the provider is called, at any data size."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from asgiref.sync import async_to_sync
from django.db import connection
from django.test import AsyncClient, override_settings

from ai_chat.models import Conversation, Message, Role
from api_manager.providers import close_clients
from tests.ai_chat.helpers import read_all
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


def post_and_count(user, **data):
    """The queries of starting a turn (until the view answers). The reply is a job of the
    event loop, so the request is made on one that lives until the reply is read (and saved,
    outside the count)."""

    # The worker's poll for Stop requests and its checkpoints run on their own clock, for all
    # running replies, not as part of a request: kept out of the count.
    @override_settings(CHAT_STOP_POLL_SECONDS=3600)
    async def turn():
        client = AsyncClient()
        await client.aforce_login(user)
        with captured_statements() as statements:
            response = await client.post("/ai-chat/stream/", data)
        # The body (the provider call, the reply's save) streams later, when it is read.
        assert response.status_code == 200
        await read_all(response)
        # This loop ends with the call: its provider clients too (tests/conftest.py).
        await close_clients()
        return real_queries(statements)

    return async_to_sync(turn)()


# On PostgreSQL one more: the user's row is locked before the running replies are counted, so
# that two turns starting together cannot both take the last place (SQLite's write
# transactions already run one at a time).
USER_LOCK = 1 if connection.features.has_select_for_update else 0


def warm(user):
    """The tools a user may be offered are cached for a minute; the first turn of that minute
    costs two permission queries more, the others none."""
    post_and_count(user, message="warm-up")


def add_messages_with_versions(conversation: Conversation, size: int) -> None:
    """`size` messages, alternately user and assistant, and after every fourth reply an earlier
    version of it (hidden: another branch)."""
    rows = []
    for i in range(size):
        role = Role.USER if i % 2 == 0 else Role.ASSISTANT
        rows.append(Message(conversation=conversation, role=role, content=f"m{i}"))
        if i % 8 == 1:
            rows.append(
                Message(
                    conversation=conversation,
                    role=role,
                    content=f"m{i} v1",
                    active=False,
                    selected=False,
                )
            )
    Message.objects.bulk_create(rows)


def test_a_new_conversation_costs_six_queries(alice, fake):
    make_key(alice, fake)
    warm(alice)
    queries = post_and_count(alice, message="hello")
    # 1 session, 2 user, 3 default key, (the user's row locked: USER_LOCK), 4 replies
    # generating, 5 insert conversation, 6 insert the message and the reply row
    assert len(queries) == 6 + USER_LOCK, "\n".join(q[:200] for q in queries[:20])


@pytest.mark.parametrize("size", [10, 10_000])
def test_a_follow_up_costs_six_queries_at_any_history_size(alice, fake, size):
    key = make_key(alice, fake)
    conversation = Conversation.objects.create(
        owner=alice, title="long", key=key, model=key.default_model
    )
    add_messages_with_versions(conversation, size)
    warm(alice)
    queries = post_and_count(alice, message="and then?", conversation=conversation.pk)
    # 1 session, 2 user, 3 conversation with its key, (the user's row locked: USER_LOCK),
    # 4 replies generating, 5 the active branch's recent history, 6 insert the message and the
    # reply row
    assert len(queries) == 6 + USER_LOCK, "\n".join(q[:200] for q in queries[:20])
