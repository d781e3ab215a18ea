"""The stream path spends at most five queries (the session among them) before the provider is called, at any data size."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from ai_chat.models import Conversation, Message, Role
from tests.conftest import make_key


def real_queries(ctx) -> list[str]:
    """The statements that do work (transaction bookkeeping left out)."""
    skip = ("SAVEPOINT", "RELEASE SAVEPOINT", "ROLLBACK TO SAVEPOINT", "BEGIN", "COMMIT")
    return [q["sql"] for q in ctx.captured_queries if not q["sql"].upper().startswith(skip)]


def post_and_count(client, **data):
    with CaptureQueriesContext(connection) as ctx:
        response = client.post("/ai-chat/stream/", data)
    # The body (the provider call) streams later, when the response is read.
    assert response.status_code == 200
    return real_queries(ctx)


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
