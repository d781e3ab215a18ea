"""The stream endpoint, through the real SDKs against the local fake provider."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async

from ai_chat.models import Conversation, Message, Status
from api_manager.models import ModelPrice, ProviderKey, UsageRecord, UsageRollup
from tests.ai_chat.helpers import STREAM, client_for, parse_events, read_until_deltas, stream
from tests.conftest import make_key

pytestmark = pytest.mark.django_db(transaction=True)

PROVIDERS = ["openai", "anthropic"]


async def key_for(user, fake, provider="openai", **fields) -> ProviderKey:
    return await sync_to_async(make_key)(user, fake, provider=provider, **fields)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_it_streams_meta_deltas_done_and_stores_text_and_usage(alice, fake, provider):
    key = await key_for(alice, fake, provider)
    # gpt-4o-mini has a price (a flush by an earlier transactional test may have removed the
    # default prices); claude-test-sonnet has none.
    await ModelPrice.objects.aupdate_or_create(
        model="gpt-4o-mini",
        defaults={"provider": "openai", "input_per_million": 1, "output_per_million": 1},
    )
    client = await client_for(alice)
    response, events = await stream(client, message="What is two plus two?", key=key.pk)
    assert response.status_code == 200
    assert response.is_async
    assert response["Content-Type"].startswith("text/event-stream")
    # no-cache from the stream; no-store and private from core.signed_in, as on every page.
    assert {"no-cache", "no-store", "private"} <= {
        part.strip() for part in response["Cache-Control"].split(",")
    }
    assert response["X-Accel-Buffering"] == "no"

    names = [name for name, _ in events]
    assert names[0] == "meta"
    assert names[-1] == "done"
    assert set(names[1:-1]) == {"delta"}
    assert len(names) - 2 >= 5  # word by word, not whole
    text = "".join(data["text"] for name, data in events if name == "delta")
    assert text == "Hello! You said: What is two plus two?"

    meta, done = events[0][1], events[-1][1]
    conversation = await Conversation.objects.aget(pk=meta["conversation"])
    assert conversation.owner_id == alice.pk
    assert conversation.title == "What is two plus two?"
    user_message = await Message.objects.aget(pk=meta["user_message"])
    assert user_message.content == "What is two plus two?"
    reply = await Message.objects.select_related("usage").aget(pk=done["message"])
    assert reply.content == text
    assert reply.status == Status.COMPLETE
    assert done["status"] == "complete"
    assert done["usage"] == {"input_tokens": 5, "output_tokens": 8, "estimated": False}
    assert reply.usage.input_tokens == 5 and reply.usage.output_tokens == 8
    assert not reply.usage.estimated
    assert reply.usage.key_id == key.pk
    # The turn looked the model's price up: the record says whether there was one, and its
    # rollup counts the tokens without a price apart.
    priced = provider == "openai"
    assert reply.usage.priced is priced
    assert (reply.usage.cost > 0) is priced
    rollup = await UsageRollup.objects.aget(key=key)
    assert rollup.unpriced_tokens == (0 if priced else 13)
    assert "<p" in done["html"] and "Hello!" in done["html"]
    key = await ProviderKey.objects.aget(pk=key.pk)
    assert key.last_used_at is not None


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_the_history_is_sent_on_the_second_turn(alice, fake, provider):
    key = await key_for(alice, fake, provider)
    client = await client_for(alice)
    _, events = await stream(
        client, message="first question", key=key.pk, system="Answer in one line."
    )
    conversation_id = events[0][1]["conversation"]
    _, events = await stream(client, message="second question", conversation=conversation_id)
    assert events[-1][0] == "done"
    body = fake.requests[-1].body
    messages = body["messages"]
    if provider == "openai":
        assert messages[0] == {"role": "system", "content": "Answer in one line."}
        messages = messages[1:]
    else:
        assert body["system"] == "Answer in one line."
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[0]["content"] == "first question"
    assert messages[1]["content"] == "Hello! You said: first question"
    assert messages[2]["content"] == "second question"


async def test_json_bodies_are_accepted(alice, fake):
    key = await key_for(alice, fake)
    client = await client_for(alice)
    response = await client.post(
        STREAM, {"message": "hi", "key": key.pk}, content_type="application/json"
    )
    assert response.status_code == 200


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(
    "directive,code", [("[[401]]", "auth"), ("[[429]]", "rate_limit"), ("[[500]]", "provider")]
)
async def test_provider_failures_end_with_an_error_event_and_keep_the_conversation_usable(
    alice, fake, provider, directive, code, settings
):
    settings.PROVIDER_MAX_RETRIES = 0
    key = await key_for(alice, fake, provider)
    client = await client_for(alice)
    _, events = await stream(client, message=f"{directive} hello", key=key.pk)
    assert events[0][0] == "meta"
    assert events[-1][0] == "error"
    assert events[-1][1]["code"] == code
    assert events[-1][1]["message"]
    reply = await Message.objects.select_related("usage").aget(pk=events[0][1]["message"])
    assert reply.status == Status.ERROR
    assert reply.error_code == code
    assert reply.usage.status == "error"
    key = await ProviderKey.objects.aget(pk=key.pk)
    assert key.last_error_at is not None
    # The user's message was saved, and the conversation goes on.
    assert await Message.objects.filter(pk=events[0][1]["user_message"]).aexists()
    _, events = await stream(client, message="and now?", conversation=events[0][1]["conversation"])
    assert events[-1][0] == "done"


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_stream_cut_midway_keeps_the_partial_reply(alice, fake, provider):
    key = await key_for(alice, fake, provider)
    client = await client_for(alice)
    _, events = await stream(
        client, message="[[cut]] one two three four five six seven eight", key=key.pk
    )
    names = [n for n, _ in events]
    assert "delta" in names
    assert names[-1] == "error"
    assert events[-1][1]["code"] == "provider"
    partial = "".join(d["text"] for n, d in events if n == "delta")
    reply = await Message.objects.select_related("usage").aget(pk=events[0][1]["message"])
    assert reply.content == partial
    assert reply.status == Status.ERROR
    assert reply.usage.output_tokens > 0  # never silently 0


async def test_a_timeout_is_reported_as_such(alice, fake, settings):
    settings.PROVIDER_TIMEOUT = 0.5
    settings.PROVIDER_MAX_RETRIES = 0
    fake.slow_first_token = 2.0
    key = await key_for(alice, fake)
    client = await client_for(alice)
    _, events = await stream(client, message="[[slow]] hi", key=key.pk)
    assert events[-1] == ("error", {"message": "OpenAI did not answer in time.", "code": "timeout"})


async def test_a_slow_first_token_gets_keep_alive_comments(alice, fake, settings):
    settings.CHAT_HEARTBEAT_SECONDS = 0.2
    fake.slow_first_token = 0.9
    key = await key_for(alice, fake)
    client = await client_for(alice)
    _, events = await stream(client, message="[[slow]] hi", key=key.pk)
    assert ("comment", "keep-alive") in events
    assert events[-1][0] == "done"


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_when_the_browser_goes_away_the_reply_goes_on_and_is_saved_whole(
    alice, fake, provider
):
    # Rewritten on purpose (issue #11): leaving used to stop the reply; now it is a job of the
    # worker, which finishes it and does not close the provider's stream.
    await quiet(fake)
    fake.word_delay = 0.01
    fake.long_words = 60
    key = await key_for(alice, fake, provider)
    client = await client_for(alice)
    response = await client.post(STREAM, {"message": "[[long]]", "key": key.pk})
    task, received = await read_until_deltas(response)
    # Django cancels the response coroutine when the client disconnects; so do we.
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    reply_id = parse_events("".join(received))[0][1]["message"]
    reply = await wait_until_saved(reply_id)
    assert reply.status == Status.COMPLETE
    assert reply.content == " ".join(f"word{i}" for i in range(60))
    assert reply.usage.status == "ok"
    assert not reply.usage.estimated
    assert fake.disconnects == 0
    assert fake.completed_streams == 1


async def quiet(fake) -> None:
    """Wait until streams of earlier tests have ended at the fake (a timed-out one ends when
    its slow first token is due), then clear its counters."""
    for _ in range(200):
        if fake.open_streams == 0:
            break
        await asyncio.sleep(0.05)
    fake.reset()


async def wait_until_saved(reply_id: int, seconds: float = 20.0) -> Message:
    """The reply once its job has saved it (no longer `streaming`)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        reply = await Message.objects.select_related("usage").aget(pk=reply_id)
        if reply.status != Status.STREAMING:
            return reply
        assert asyncio.get_running_loop().time() < deadline, "the reply was never saved"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_stop_closes_the_provider_stream_and_keeps_the_partial_as_stopped(
    alice, fake, provider
):
    fake.word_delay = 0.05
    key = await key_for(alice, fake, provider)
    client = await client_for(alice)
    response = await client.post(STREAM, {"message": "[[long]]", "key": key.pk})
    task, received = await read_until_deltas(response)
    reply_id = parse_events("".join(received))[0][1]["message"]
    answer = await client.post(f"/ai-chat/messages/{reply_id}/stop/")
    assert answer.status_code == 200
    assert answer.json() == {"ok": True}
    assert await asyncio.to_thread(fake.disconnected.wait, 2)
    assert fake.completed_streams == 0
    # The attached stream ends with `done`, status stopped.
    await asyncio.wait_for(task, 10)
    events = parse_events("".join(received))
    assert events[-1][0] == "done"
    assert events[-1][1]["status"] == "stopped"
    partial = "".join(d["text"] for n, d in events if n == "delta")
    reply = await Message.objects.select_related("usage").aget(pk=reply_id)
    assert reply.status == Status.STOPPED
    assert reply.content == partial
    assert reply.content
    assert reply.usage.status == "stopped"
    assert reply.usage.output_tokens > 0
    assert reply.usage.estimated


async def test_an_empty_message_is_refused_and_nothing_is_saved(alice, fake):
    key = await key_for(alice, fake)
    client = await client_for(alice)
    for text in ("", "   \n  "):
        response, _ = await stream(client, message=text, key=key.pk)
        assert response.status_code == 400
        assert "error" in response.json()
    assert not await Message.objects.aexists()
    assert not fake.requests


async def test_an_oversized_message_is_refused_and_nothing_is_saved(alice, fake, settings):
    settings.CHAT_MAX_MESSAGE_CHARS = 100
    key = await key_for(alice, fake)
    client = await client_for(alice)
    response, _ = await stream(client, message="x" * 101, key=key.pk)
    assert response.status_code == 413
    assert "too long" in response.json()["error"]
    assert not await Conversation.objects.aexists()
    assert not fake.requests


async def test_bad_json_is_refused(alice):
    client = await client_for(alice)
    response = await client.post(STREAM, "{nope", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]


async def test_a_disabled_key_is_refused_before_any_provider_call(alice, fake):
    key = await key_for(alice, fake, is_active=False)
    client = await client_for(alice)
    response, _ = await stream(client, message="hi", key=key.pk)
    assert response.status_code == 409
    assert "disabled" in response.json()["error"]
    assert not fake.requests
    assert not await Message.objects.aexists()


async def test_an_exhausted_budget_is_refused_before_any_provider_call(alice, fake):
    key = await key_for(alice, fake, monthly_token_budget=100)
    await UsageRecord.objects.acreate(
        key=key,
        key_label=key.label,
        user=alice,
        provider="openai",
        input_tokens=60,
        output_tokens=40,
    )
    client = await client_for(alice)
    response, _ = await stream(client, message="hi", key=key.pk)
    assert response.status_code == 429
    assert "budget" in response.json()["error"]
    assert not fake.requests


async def test_without_any_key_it_says_to_add_one(alice):
    client = await client_for(alice)
    response, _ = await stream(client, message="hi")
    assert response.status_code == 409
    assert "add one" in response.json()["error"]


async def test_the_default_key_is_used_when_none_is_given(alice, fake):
    key = await key_for(alice, fake, provider="anthropic")
    client = await client_for(alice)
    _, events = await stream(client, message="hi")
    assert events[-1][0] == "done"
    assert fake.requests[-1].flavour == "anthropic"
    assert (await Conversation.objects.aget()).key_id == key.pk


async def test_bob_cannot_stream_into_alices_conversation_or_use_her_key(alice, bob, fake):
    key = await key_for(alice, fake)
    alice_client = await client_for(alice)
    _, events = await stream(alice_client, message="mine", key=key.pk)
    conversation_id = events[0][1]["conversation"]
    bob_key = await key_for(bob, fake, label="bob key")
    bob_client = await client_for(bob)
    response, _ = await stream(
        bob_client, message="sneaky", conversation=conversation_id, key=bob_key.pk
    )
    assert response.status_code == 404
    response, _ = await stream(bob_client, message="sneaky", key=key.pk)
    assert response.status_code == 404
    assert await Message.objects.filter(content="sneaky").acount() == 0


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_xss_in_a_reply_is_rendered_inert(alice, fake, provider):
    key = await key_for(alice, fake, provider)
    client = await client_for(alice)
    _, events = await stream(client, message="[[xss]]", key=key.pk)
    html = events[-1][1]["html"]
    assert "<script" not in html
    assert "<img" not in html
    assert (
        "onerror=" not in html.replace("onerror=&quot;", "").replace('onerror="window', "")
        or "&lt;img" in html
    )
    assert 'href="javascript:' not in html
    reply = await Message.objects.aget(pk=events[-1][1]["message"])
    assert reply.content_html == html


async def test_regenerate_keeps_the_earlier_reply_as_a_version(alice, fake):
    # Rewritten on purpose (issue #11): regenerate used to delete the earlier reply.
    key = await key_for(alice, fake)
    client = await client_for(alice)
    _, events = await stream(client, message="once", key=key.pk)
    conversation_id, first_reply = events[0][1]["conversation"], events[-1][1]["message"]
    user_message = events[0][1]["user_message"]
    _, events = await stream(client, regenerate="1", conversation=conversation_id)
    assert events[-1][0] == "done"
    assert events[0][1]["user_message"] == user_message
    second_reply = events[-1][1]["message"]
    first = await Message.objects.aget(pk=first_reply)
    second = await Message.objects.aget(pk=second_reply)
    assert first.content == second.content == "Hello! You said: once"
    assert (first.parent_id, first.version, first.versions) == (user_message, 1, 2)
    assert (second.parent_id, second.version, second.versions) == (user_message, 2, 2)
    assert not first.active and second.active
    active = [
        m.role async for m in Message.objects.filter(conversation_id=conversation_id, active=True)
    ]
    assert active == ["user", "assistant"]
    last_body = fake.requests[-1].body["messages"]
    assert last_body[-1] == {"role": "user", "content": "once"}
    assert len(last_body) == 1
