"""The reply's output cap: sent only when a budget must hold, under the name the endpoint knows
(through the real stream endpoint and SDKs, against the fake provider)."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings

from api_manager.providers.openai import output_cap_field
from tests.ai_chat.helpers import client_for, stream
from tests.conftest import make_key


@pytest.mark.parametrize(
    ("base_url", "field"),
    [
        ("", "max_completion_tokens"),  # OpenAI's own API
        ("https://api.openai.com/v1", "max_completion_tokens"),
        ("https://team.openai.azure.com/openai/v1", "max_completion_tokens"),
        ("https://models.inference.ai.azure.com", "max_completion_tokens"),
        ("http://ollama.lan:11434/v1", "max_tokens"),
        ("https://openrouter.ai/api/v1", "max_tokens"),
        ("https://api.openai.com.example.net/v1", "max_tokens"),
        ("https://notopenai.azure.com/v1", "max_tokens"),
    ],
)
def test_the_cap_has_the_name_the_endpoint_knows(base_url, field):
    assert output_cap_field(base_url) == field


@pytest.mark.django_db(transaction=True)
async def test_a_key_without_a_budget_sends_no_output_cap_to_openai(alice, fake):
    # A fixed cap would cut long replies and starve reasoning models; an endpoint that knows
    # only `max_tokens` would refuse `max_completion_tokens` outright.
    fake.only_max_tokens = True
    key = await sync_to_async(make_key)(alice, fake)
    client = await client_for(alice)
    response, events = await stream(client, message="hello", key=key.pk)
    assert response.status_code == 200 and events[-1][0] == "done", events[-1]
    sent = fake.requests[-1].body
    assert "max_completion_tokens" not in sent and "max_tokens" not in sent


@pytest.mark.django_db(transaction=True)
async def test_anthropic_gets_the_default_cap_it_requires(alice, fake):
    key = await sync_to_async(make_key)(alice, fake, provider="anthropic")
    client = await client_for(alice)
    response, events = await stream(client, message="hello", key=key.pk)
    assert events[-1][0] == "done", events[-1]
    assert fake.requests[-1].body["max_tokens"] == settings.CHAT_MAX_OUTPUT_TOKENS


@pytest.mark.django_db(transaction=True)
async def test_a_budgeted_turn_caps_an_openai_compatible_endpoint_with_max_tokens(alice, fake):
    fake.only_max_tokens = True
    key = await sync_to_async(make_key)(alice, fake, monthly_token_budget=60)
    client = await client_for(alice)
    response, events = await stream(client, message="[[long]] please", key=key.pk)
    assert response.status_code == 200 and events[-1][0] == "done", events[-1]
    sent = fake.requests[-1].body
    assert "max_completion_tokens" not in sent
    assert 0 < sent["max_tokens"] < 60
    assert events[-1][1]["usage"]["output_tokens"] == sent["max_tokens"]
