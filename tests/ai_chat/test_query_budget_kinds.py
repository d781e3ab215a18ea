"""Regenerate and continue cost what a follow-up costs (regenerate: one DELETE more), at any
history size. Counted relative to a follow-up, so the queries every request pays (session,
user) are counted once, in tests/ai_chat/test_query_budget.py."""

from __future__ import annotations

import pytest

from ai_chat.models import Conversation, Message, Role
from tests.ai_chat.test_query_budget import post_and_count, warm
from tests.conftest import make_key

# The turn's database work may run on core.db's threads, which must see the test's rows.
pytestmark = pytest.mark.django_db(transaction=True)


def long_conversation(alice, fake, size: int) -> Conversation:
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
    return conversation


def follow_up(client, conversation: Conversation) -> list[str]:
    return post_and_count(client, message="and then?", conversation=conversation.pk)


@pytest.mark.parametrize("size", [10, 10_000])
def test_regenerate_costs_a_follow_up_plus_the_delete(alice_client, alice, fake, size):
    conversation = long_conversation(alice, fake, size)
    warm(alice_client)
    baseline = follow_up(alice_client, conversation)
    queries = post_and_count(alice_client, regenerate="1", conversation=conversation.pk)
    # A follow-up's queries (user, conversation with its key, recent history, one INSERT), with
    # the delete of the replies after the last user message, and the reply row alone.
    assert len(queries) == len(baseline) + 1, "\n".join(q[:200] for q in queries[:20])
    assert sum(q.startswith("DELETE") for q in queries) == 1


@pytest.mark.parametrize("size", [10, 10_000])
def test_continue_costs_a_follow_up(alice_client, alice, fake, size):
    conversation = long_conversation(alice, fake, size)
    warm(alice_client)
    baseline = follow_up(alice_client, conversation)
    Message.objects.create(conversation=conversation, role=Role.TOOL, content="{}")
    queries = post_and_count(alice_client, conversation=conversation.pk, **{"continue": "1"})
    assert len(queries) == len(baseline), "\n".join(q[:200] for q in queries[:20])
