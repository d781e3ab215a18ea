"""Regenerate, edit and continue cost what a follow-up costs (regenerate and edit: the two
UPDATEs that keep the earlier branch as a version), at any history size. Counted relative to a follow-up, so the queries every request pays (session,
user) are counted once, in tests/ai_chat/test_query_budget.py."""

from __future__ import annotations

import pytest

from ai_chat.models import Conversation, Message, Role
from tests.ai_chat.test_query_budget import add_messages_with_versions, post_and_count, warm
from tests.conftest import make_key

# The turn's database work may run on core.db's threads, which must see the test's rows.
pytestmark = pytest.mark.django_db(transaction=True)


def long_conversation(alice, fake, size: int) -> Conversation:
    key = make_key(alice, fake)
    conversation = Conversation.objects.create(
        owner=alice, title="long", key=key, model=key.default_model
    )
    add_messages_with_versions(conversation, size)
    return conversation


def follow_up(user, conversation: Conversation) -> list[str]:
    return post_and_count(user, message="and then?", conversation=conversation.pk)


@pytest.mark.parametrize("size", [10, 10_000])
def test_regenerate_costs_a_follow_up_plus_two_updates(alice, fake, size):
    conversation = long_conversation(alice, fake, size)
    warm(alice)
    baseline = follow_up(alice, conversation)
    queries = post_and_count(alice, regenerate="1", conversation=conversation.pk)
    # A follow-up's queries (user, conversation with its key, replies generating, recent
    # history, one INSERT), with two UPDATEs: hide the branch after the last user message,
    # make its replies earlier versions; then the reply row alone.
    assert len(queries) == len(baseline) + 2, "\n".join(q[:200] for q in queries[:20])
    assert sum(q.startswith("UPDATE") for q in queries) == 2
    assert not any(q.startswith("DELETE") for q in queries)


@pytest.mark.parametrize("size", [10, 10_000])
def test_edit_costs_a_follow_up_plus_the_edited_message_and_two_updates(alice, fake, size):
    conversation = long_conversation(alice, fake, size)
    warm(alice)
    baseline = follow_up(alice, conversation)
    edited = conversation.messages.filter(role=Role.USER, active=True).order_by("id")[3]
    queries = post_and_count(
        alice, message="again, better", edit=edited.pk, conversation=conversation.pk
    )
    # A follow-up's, with the edited message read, and two UPDATEs: hide the branch from it
    # on, make its versions earlier ones.
    assert len(queries) == len(baseline) + 3, "\n".join(q[:200] for q in queries[:20])
    assert sum(q.startswith("UPDATE") for q in queries) == 2


@pytest.mark.parametrize("size", [10, 10_000])
def test_continue_costs_a_follow_up(alice, fake, size):
    conversation = long_conversation(alice, fake, size)
    warm(alice)
    baseline = follow_up(alice, conversation)
    Message.objects.create(conversation=conversation, role=Role.TOOL, content="{}")
    queries = post_and_count(alice, conversation=conversation.pk, **{"continue": "1"})
    assert len(queries) == len(baseline), "\n".join(q[:200] for q in queries[:20])
