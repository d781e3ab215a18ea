"""A model whose tool call carries argument JSON nested deeper than Python's parser goes (a
RecursionError, not a JSONDecodeError): the call becomes a refused card, as any other bad
argument JSON does, instead of throwing away the whole reply as a provider failure. Driven
through the real SDKs against the fake provider."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

from tests.ai_chat.helpers import client_for, stream
from tests.conftest import make_key, user_with_permissions

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "readonly"])

DEEP = '{"code": ' + "[" * 5000 + "]" * 5000 + "}"


@pytest.fixture
def operator(db):
    return user_with_permissions("olga", "run_query", "write_files")


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_deeply_nested_tool_arguments_are_a_refused_card(operator, fake, provider):
    fake.custom_tool_call = {"id": "call_deep", "name": "run_query", "arguments": DEEP}
    key = await sync_to_async(make_key)(operator, fake, provider=provider)
    client = await client_for(operator)
    _, events = await stream(client, message="[[tool:custom]] go", key=key.pk)
    assert events[-1][0] == "done", events[-1]
    card = events[-1][1]["tool_calls"][0]
    assert card["state"] == "refused"
