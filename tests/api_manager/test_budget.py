"""Monthly token budgets: reserved before the provider is called, settled however the reply
ends, never exceeded by concurrent turns (through the real stream endpoint and SDKs)."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import threading

import pytest
from asgiref.sync import sync_to_async
from django.core.management import call_command
from django.db import connections, transaction
from django.utils import timezone

from ai_chat.models import Attachment, Message, Status
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


def test_an_image_is_bounded_by_the_most_any_provider_bills_for_its_size():
    # OpenAI's own examples (high detail, tiled models): 1024×1024 is 4 tiles, 765 tokens;
    # 2048×4096 is fitted to 1024×2048, then 768×1536: 6 tiles, 1105. gpt-4o-mini bills the
    # same tiles at 5667 each plus 2833.
    assert budget._tile_tokens(1024, 1024, "gpt-4o") == 765
    assert budget._tile_tokens(2048, 4096, "gpt-4o") == 1105
    assert budget._tile_tokens(1024, 1024, "gpt-4o-mini") == 2833 + 4 * 5667
    # Anthropic's: 1092×1092 is about 1,590 tokens.
    assert budget.image_tokens(1092, 1092, "claude-sonnet-4-5") >= 1590
    # The largest of them: for 800×600 the patch models' 475 patches × 2.46 (OpenAI's tiles
    # are 765, Anthropic's 640); for 4o-mini its tiles.
    assert budget.image_tokens(800, 600) == math.ceil(25 * 19 * 2.46) == 1169
    assert budget.image_tokens(800, 600, "gpt-4o-mini") == 2833 + 4 * 5667
    # The patches are capped (the image is scaled down to 1536 of them): the largest image
    # we store (1568×1568, 2401 patches) is 1536 × 2.46, more than Anthropic's 3279.
    assert budget.image_tokens(1568, 1568) == math.ceil(1536 * 2.46) == 3779


def test_the_input_bound_counts_images_and_pdf_pages_but_not_their_base64():
    text = {"type": "text", "text": "What is this?"}
    image = {"type": "image", "name": "a.png", "media_type": "image/png", "file": "attachments/x"}
    sized = {**image, "width": 800, "height": 600}
    plain = budget.input_bound([{"role": "user", "content": [image, text]}])
    with_size = budget.input_bound([{"role": "user", "content": [sized, text]}])
    loaded = budget.input_bound(
        [{"role": "user", "content": [{**sized, "data": "QUFB" * 10_000}, text]}]
    )
    # An image counts what its size is billed (beside the bytes of its part's fields); one of
    # unknown size (a row from before sizes were kept) as the largest image stored.
    assert with_size - plain == 1169 - budget.image_tokens(1568, 1568) + len(
        ', "width": 800, "height": 600'
    )
    assert plain > budget.image_tokens(1568, 1568)
    # Its base64 bytes are what the bound replaces, not more input.
    assert loaded == with_size
    document = {"type": "document", "name": "r.pdf", "media_type": "application/pdf",
                "file": "attachments/y", "text": "[File: r.pdf]\nrevenue", "pages": 3}  # fmt: skip
    one_page = budget.input_bound([{"role": "user", "content": [{**document, "pages": 1}]}])
    three = budget.input_bound([{"role": "user", "content": [document]}])
    assert three - one_page == 2 * budget.pdf_page_tokens()
    assert one_page > budget.pdf_page_tokens() + len(document["text"])


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


@pytest.mark.django_db(transaction=True)
def test_a_reservation_settled_by_several_workers_at_once_is_released_once():
    """On PostgreSQL four connections race to delete the same reservation: one wins."""
    from django.contrib.auth.models import User

    key = make_key(User.objects.create_user("racer"), monthly_token_budget=1000)
    held = budget.reserve(key, 10, 100)
    other = budget.reserve(key, 10, 50)
    start = threading.Barrier(4)
    failures: list[BaseException] = []

    def work() -> None:
        try:
            start.wait(timeout=30)
            with transaction.atomic():
                budget.settle(held)
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)
        finally:
            connections.close_all()

    workers = [threading.Thread(target=work) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert not failures
    assert counter(key).reserved == other.tokens
    assert list(BudgetReservation.objects.values_list("pk", flat=True)) == [other.id]


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


# An 800×600 image: 765 tokens at OpenAI's gpt-4o (4 tiles), what the fake bills for it in
# these tests; the bound reserves the most any provider bills for that size (1169).
IMAGE_SIZE = (800, 600)
IMAGE_BILLED = 765


# gpt-4o, not the fixtures' gpt-4o-mini, which bills the same image 25,501 tokens.
IMAGE_MODELS = {"openai": "gpt-4o", "anthropic": "claude-test-sonnet"}


def image_upload(name: str = "photo.png"):
    from tests.attachments import files

    return files.upload(name, files.png(IMAGE_SIZE))


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_small_budget_refuses_a_turn_whose_image_would_exceed_it(
    alice, fake, provider, settings, tmp_path
):
    settings.MEDIA_ROOT = tmp_path / "media"
    fake.image_tokens = IMAGE_BILLED
    # Enough for the text and a short reply, not for the image.
    key = await key_for(
        alice, fake, provider, monthly_token_budget=700, default_model=IMAGE_MODELS[provider]
    )
    client = await client_for(alice)
    response = await client.post(
        STREAM, {"message": "What is this?", "key": key.pk, "files": [image_upload()]}
    )
    assert response.status_code == 429
    assert "budget" in response.json()["error"]
    # Nothing saved: no conversation, message, attachment row or file; nothing reserved, and
    # the provider was not asked.
    assert not await Message.objects.aexists()
    assert not await Attachment.objects.aexists()
    assert not [p for p in (tmp_path / "media").rglob("*") if p.is_file()]
    assert not await BudgetReservation.objects.aexists()
    assert not await BudgetCounter.objects.filter(reserved__gt=0).aexists()
    assert fake.requests == []
    # The same words without the image fit.
    response, events = await stream(client, message="What is this?", key=key.pk)
    assert response.status_code == 200 and events[-1][0] == "done"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("with_image", [False, True], ids=["text", "image"])
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_twenty_concurrent_turns_cannot_overspend_a_budget(
    alice, fake, provider, with_image, settings, tmp_path
):
    """The seed served 20 simultaneous turns of a 100-token key for 760 tokens. With an image
    each, billed as a provider bills it, a bound of the image's bytes alone overspent too."""
    settings.MEDIA_ROOT = tmp_path / "media"
    fake.image_tokens = IMAGE_BILLED
    budget_tokens = 3000 if with_image else 100
    # Replies that run to their cap: a turn spends all the output it reserved, so an input
    # bound below what the image is billed overspends from the first turn.
    fake.long_words = 5000
    fake.word_delay = 0.0005
    key = await key_for(
        alice,
        fake,
        provider,
        monthly_token_budget=budget_tokens,
        default_model=IMAGE_MODELS[provider],
    )
    clients = [await client_for(alice) for _ in range(20)]

    def data(i: int) -> dict:
        extra = {"files": [image_upload(f"photo{i}.png")]} if with_image else {}
        return {"message": f"[[long]] turn {i}", "key": key.pk, **extra}

    results = await asyncio.gather(*(stream(client, **data(i)) for i, client in enumerate(clients)))
    statuses = sorted(response.status_code for response, _ in results)
    assert set(statuses) <= {200, 429}
    assert 200 in statuses and 429 in statuses
    for response, _ in results:
        if response.status_code == 429:
            assert "budget" in response.json()["error"]
    records = [r async for r in UsageRecord.objects.filter(key=key)]
    assert len(records) == statuses.count(200)
    spent = sum(r.total_tokens for r in records)
    assert 0 < spent <= budget_tokens
    if with_image:
        assert all(r.attachments == 1 and r.input_tokens > IMAGE_BILLED for r in records)
    used = await month(key)
    assert (used.used, used.reserved) == (spent, 0)
    # Only the turns that were served reached the provider.
    assert len(fake.requests) == statuses.count(200)


@pytest.mark.django_db(transaction=True)
def test_saving_a_reply_while_stale_reservations_are_released_waits_and_never_deadlocks(
    alice, fake
):
    """`release_stale` locks reservations, then counters; a reply's save takes the same order
    (its reservation, then the counter): before, it added its usage to the counter first and
    then waited for its reservation, and on PostgreSQL the two deadlocked (one was aborted)."""
    import time

    from django.db.models import F

    from ai_chat import services
    from api_manager.providers import Usage

    key = make_key(alice, fake, monthly_token_budget=100_000)
    turn = services._prepare(alice, {"message": "hello", "key": key.pk})
    assert turn.reservation is not None
    locked = threading.Event()
    failures: list[BaseException] = []

    def release_like_close_stale_streams() -> None:
        try:
            with transaction.atomic():
                reservations = BudgetReservation.objects.select_for_update()
                list(reservations.filter(pk=turn.reservation.id))
                locked.set()
                time.sleep(0.5)  # the reply's save starts meanwhile
                BudgetCounter.objects.filter(key=key).update(reserved=F("reserved"))
        except BaseException as exc:  # reported by the test's thread
            failures.append(exc)
        finally:
            connections.close_all()

    other = threading.Thread(target=release_like_close_stale_streams)
    other.start()
    assert locked.wait(10)
    try:
        services._finish(turn, "the reply", Status.COMPLETE, Usage(5, 7), None, 1, 2)
    finally:
        other.join(30)
    assert not failures
    assert counter(key).reserved == 0
    assert counter(key).used == 12
