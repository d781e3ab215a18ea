"""SDK clients are cached per key configuration, boundedly (least recently used closed once no
stream uses it), never for a key that is only tested; live tests are rate-limited per user."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from api_manager.providers import ChatRequest, ProviderConfig, client_cache, get_provider
from tests.conftest import make_key

pytestmark = pytest.mark.django_db(transaction=True)


def config(fake, n: int) -> ProviderConfig:
    return ProviderConfig("openai", f"sk-proj-cachetest{n:08d}", fake.openai_url, timeout=10)


async def settle() -> None:
    """Let the closing tasks the cache scheduled run."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_the_cache_is_bounded_and_closes_the_least_recently_used(fake, settings):
    settings.PROVIDER_CLIENT_CACHE_SIZE = 2
    providers = [get_provider(config(fake, n)) for n in range(3)]
    clients = []
    for provider in providers[:2]:
        await provider.list_models()
        clients.append(provider.client())
    await get_provider(config(fake, 0)).list_models()  # 0 is now the most recently used
    await providers[2].list_models()
    await settle()
    assert len(client_cache().leases) == 2
    assert clients[1].is_closed()  # evicted: the least recently used
    assert not clients[0].is_closed()
    assert get_provider(config(fake, 0)).client() is clients[0]


async def test_an_evicted_client_stays_open_while_a_stream_uses_it(fake, settings):
    settings.PROVIDER_CLIENT_CACHE_SIZE = 1
    fake.word_delay = 0.02
    streaming = get_provider(config(fake, 1))
    chunks = streaming.stream(
        ChatRequest(model="m", messages=[{"role": "user", "content": "[[long]]"}])
    )
    first = await chunks.__anext__()
    assert first.text
    in_use = streaming.client()
    await get_provider(config(fake, 2)).list_models()  # evicts the streaming client
    await settle()
    assert not in_use.is_closed()
    more = [chunk async for chunk in chunks]  # the stream goes on to its end
    assert any(chunk.usage for chunk in more)
    await settle()
    assert in_use.is_closed()


async def test_a_key_that_is_only_tested_gets_no_cached_client(fake):
    provider = get_provider(config(fake, 7), cache=False)
    assert await provider.list_models()
    await settle()
    assert config(fake, 7).cache_key not in client_cache().leases


async def test_the_wizard_caches_nothing_and_a_saved_keys_test_does(alice, fake):
    client = AsyncClient()
    await client.aforce_login(alice)
    before = len(client_cache().leases)
    for n in range(3):
        response = await client.post(
            "/api-manager/keys/check/",
            {
                "provider": "openai",
                "api_key": f"sk-proj-wizard{n:010d}",
                "base_url": fake.openai_url,
            },
        )
        assert response.json()["ok"] is True
    await settle()
    assert len(client_cache().leases) == before
    key = await sync_to_async(make_key)(alice, fake)
    response = await client.post(f"/api-manager/keys/{key.pk}/test/")
    assert response.json()["ok"] is True
    assert len(client_cache().leases) == before + 1


def test_live_tests_are_rate_limited_per_user(alice_client, bob_client, alice, fake, settings):
    settings.PROVIDER_CHECKS_PER_MINUTE = 3
    key = make_key(alice, fake)
    answers = [alice_client.post(f"/api-manager/keys/{key.pk}/test/") for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    calls = len(fake.requests)
    refused = alice_client.post(
        "/api-manager/keys/check/",
        {"provider": "openai", "api_key": "sk-proj-wizard0000000000", "base_url": fake.openai_url},
    )
    assert refused.status_code == 429
    body = refused.json()
    assert body["ok"] is False and body["code"] == "rate_limit"
    assert "Too many key tests" in body["error"]
    assert int(refused["Retry-After"]) >= 1
    assert len(fake.requests) == calls  # nothing reached the provider
    # Another user has a budget of their own.
    other = bob_client.post(
        "/api-manager/keys/check/",
        {"provider": "openai", "api_key": "sk-proj-wizard0000000001", "base_url": fake.openai_url},
    )
    assert other.status_code == 200
