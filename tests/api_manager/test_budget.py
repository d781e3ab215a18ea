"""Monthly token budgets: reserved before the provider is called, settled however the reply
ends, never exceeded by concurrent turns (through the real stream endpoint and SDKs)."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from asgiref.sync import sync_to_async
from django.core.management import call_command
from django.utils import timezone

from ai_chat.models import Message, Status
from api_manager import budget
from api_manager.models import BudgetCounter, BudgetReservation, UsageRecord
from tests.ai_chat.helpers import STREAM, client_for, parse_events, read_until_deltas, stream
from tests.conftest import make_key

PROVIDERS = ["openai", "anthropic"]


def counter(key) -> BudgetCounter:
    return BudgetCounter.objects.get(key=key, month=timezone.localdate().replace(day=1))


def test_the_input_bound_counts_bytes_not_characters():
    english = budget.input_bound([{"role": "user", "content": "salam"}])
    persian = budget.input_bound([{"role": "user", "content": "سلام"}])
    # 5 ASCII bytes; 4 Persian letters of 2 bytes each; plus the framing allowance.
    assert english == 5 + 2 * budget.PER_MESSAGE_TOKENS
    assert persian == 8 + 2 * budget.PER_MESSAGE_TOKENS
    with_system = budget.input_bound([{"role": "user", "content": "salam"}], system="Be brief.")
    assert with_system == english + len("Be brief.")


def test_a_key_without_a_budget_reserves_nothing(alice):
    assert budget.reserve(make_key(alice), 50, 4096) is None
    assert not BudgetCounter.objects.exists()


def test_the_output_cap_is_lowered_to_what_is_left(alice):
    key = make_key(alice, monthly_token_budget=100)
    first = budget.reserve(key, 20, 4096)
    assert (first.tokens, first.max_tokens) == (100, 80)
    # Nothing is left: a second turn is refused, and reserves nothing.
    with pytest.raises(budget.BudgetExceeded):
        budget.reserve(key, 20, 4096)
    assert BudgetReservation.objects.count() == 1
    assert counter(key).reserved == 100


def test_a_small_budget_still_allows_a_short_reply(alice):
    key = make_key(alice, monthly_token_budget=60)
    UsageRecord.objects.record(key=key, provider="openai", input_tokens=10, output_tokens=20)
    held = budget.reserve(key, 10, 4096)
    assert held.max_tokens == 20  # 60 - 30 used - 10 input
    budget.settle(held)
    with pytest.raises(budget.BudgetExceeded):  # 15 left after the input: under a short reply
        budget.reserve(key, 15, 4096)


def test_settling_releases_the_reservation_once(alice):
    key = make_key(alice, monthly_token_budget=1000)
    held = budget.reserve(key, 10, 100)
    assert counter(key).reserved == 110
    budget.settle(held)
    budget.settle(held)
    assert counter(key).reserved == 0
    assert not BudgetReservation.objects.exists()
    # A caller that kept only the id (a reply run as a job) settles by id.
    again = budget.reserve(key, 10, 100)
    budget.settle(again.id)
    assert counter(key).reserved == 0


def test_close_stale_streams_releases_reservations_left_by_a_crash(alice):
    key = make_key(alice, monthly_token_budget=1000)
    stale = budget.reserve(key, 10, 100)
    BudgetReservation.objects.filter(pk=stale.id).update(
        created_at=timezone.now() - dt.timedelta(hours=1)
    )
    fresh = budget.reserve(key, 10, 200)
    call_command("close_stale_streams", "--minutes", "30")
    assert counter(key).reserved == fresh.tokens
    assert list(BudgetReservation.objects.values_list("pk", flat=True)) == [fresh.id]
    budget.settle(stale)  # the worker came back after all: nothing is released twice
    assert counter(key).reserved == fresh.tokens


# -- through the stream endpoint ---------------------------------------------------------


async def key_for(user, fake, provider="openai", **fields):
    return await sync_to_async(make_key)(user, fake, provider=provider, **fields)


async def month(key) -> BudgetCounter:
    return await sync_to_async(counter)(key)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_turn_sends_the_capped_output_and_settles_to_its_usage(alice, fake, provider):
    key = await key_for(alice, fake, provider, monthly_token_budget=60)
    client = await client_for(alice)
    response, events = await stream(client, message="[[long]] please", key=key.pk)
    assert response.status_code == 200 and events[-1][0] == "done"
    sent = fake.requests[-1].body
    cap = sent.get("max_completion_tokens") or sent.get("max_tokens")
    assert 0 < cap < 60
    usage = events[-1][1]["usage"]
    assert usage["output_tokens"] == cap  # the provider stopped at the cap
    used = await month(key)
    assert used.reserved == 0
    assert used.used == usage["input_tokens"] + usage["output_tokens"] <= 60
    assert not await BudgetReservation.objects.aexists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("message", ["[[500]]", "[[cut]] a partial reply", "[[error-event]] x"])
async def test_a_failed_turn_settles_its_reservation(alice, fake, message):
    key = await key_for(alice, fake, monthly_token_budget=10_000)
    client = await client_for(alice)
    response, events = await stream(client, message=message, key=key.pk)
    assert events[-1][0] == "error"
    used = await month(key)
    assert used.reserved == 0
    records = [r async for r in UsageRecord.objects.filter(key=key)]
    assert used.used == sum(r.total_tokens for r in records)


@pytest.mark.django_db(transaction=True)
async def test_a_stopped_turn_settles_its_reservation(alice, fake):
    fake.word_delay = 0.05
    key = await key_for(alice, fake, monthly_token_budget=10_000)
    client = await client_for(alice)
    response = await client.post(STREAM, {"message": "[[long]]", "key": key.pk})
    task, received = await read_until_deltas(response)
    # Stop (leaving no longer stops a reply, issue #11): the reply is saved as stopped.
    reply_id = parse_events("".join(received))[0][1]["message"]
    assert (await client.post(f"/ai-chat/messages/{reply_id}/stop/")).status_code == 200
    await asyncio.wait_for(task, 10)
    reply = await Message.objects.select_related("usage").aget(pk=reply_id)
    assert reply.status == Status.STOPPED
    used = await month(key)
    assert used.reserved == 0
    assert used.used == reply.usage.total_tokens


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_twenty_concurrent_turns_cannot_overspend_a_budget(alice, fake, provider):
    """The seed served 20 simultaneous turns of a 100-token key for 760 tokens."""
    key = await key_for(alice, fake, provider, monthly_token_budget=100)
    clients = [await client_for(alice) for _ in range(20)]
    results = await asyncio.gather(
        *(
            stream(client, message=f"[[long]] turn {i}", key=key.pk)
            for i, client in enumerate(clients)
        )
    )
    statuses = sorted(response.status_code for response, _ in results)
    assert set(statuses) <= {200, 429}
    assert 200 in statuses and 429 in statuses
    for response, _ in results:
        if response.status_code == 429:
            assert "budget" in response.json()["error"]
    records = [r async for r in UsageRecord.objects.filter(key=key)]
    assert len(records) == statuses.count(200)
    spent = sum(r.total_tokens for r in records)
    assert 0 < spent <= 100
    used = await month(key)
    assert (used.used, used.reserved) == (spent, 0)
    # Only the turns that were served reached the provider.
    assert len(fake.requests) == statuses.count(200)
