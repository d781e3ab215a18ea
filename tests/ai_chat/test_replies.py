"""Replies that survive, in process: event ids, re-attach, ownership, the running-replies cap,
failed turns left out of the history (through the real SDKs against the fake provider)."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from asgiref.sync import sync_to_async
from django.db import connection, connections

from ai_chat import jobs, services
from ai_chat.models import Message, Role, Status
from tests.ai_chat.helpers import STREAM, client_for, parse_events, read_all, stream
from tests.ai_chat.test_stream import key_for, wait_until_saved
from tests.conftest import make_key

pytestmark = pytest.mark.django_db(transaction=True)


def raw_ids(raw: str) -> list[tuple[str, int | None]]:
    """(event name, id) of each event of a raw stream."""
    out = []
    for block in raw.split("\n\n"):
        lines = block.split("\n")
        name = next((x[6:].strip() for x in lines if x.startswith("event:")), None)
        if name is None:
            continue
        ids = [int(x[3:].strip()) for x in lines if x.startswith("id:")]
        out.append((name, ids[0] if ids else None))
    return out


async def long_reply_under_way(alice, fake):
    """Start a `[[long]]` reply; return its stream's remaining chunks (past the first delta)
    and its `meta` data."""
    key = await key_for(alice, fake)
    client = await client_for(alice)
    response = await client.post(STREAM, {"message": "[[long]]", "key": key.pk})
    chunks = aiter(response.streaming_content)
    meta = parse_events((await anext(chunks)).decode())[0][1]
    while "delta" not in (await anext(chunks)).decode():
        pass
    return chunks, meta


async def test_every_event_has_an_id_counted_in_code_points(alice, fake):
    key = await key_for(alice, fake)
    client = await client_for(alice)
    # Persian and an emoji: more bytes (and UTF-16 units) than code points.
    response = await client.post(STREAM, {"message": "سلام دنیا 👋🏽 ok", "key": key.pk})
    raw = await read_all(response)
    ids = raw_ids(raw)
    events = parse_events(raw)
    assert ids[0] == ("meta", 0)
    held = ""
    for (name, event_id), (_, data) in zip(ids, events, strict=True):
        if name == "delta":
            held += data["text"]
            assert event_id == len(held)
    assert held == "Hello! You said: سلام دنیا 👋🏽 ok"
    assert ids[-1][0] == "done"


async def test_re_attaching_to_a_finished_reply_gives_the_missing_text_and_done(alice, fake):
    key = await key_for(alice, fake)
    client = await client_for(alice)
    _, events = await stream(client, message="once more", key=key.pk)
    reply_id = events[-1][1]["message"]
    full = "Hello! You said: once more"
    response = await client.get(f"/ai-chat/stream/{reply_id}/", headers={"Last-Event-ID": "7"})
    assert response["Content-Type"].startswith("text/event-stream")
    raw = await read_all(response)
    assert raw_ids(raw) == [("delta", len(full)), ("done", None)]
    again = parse_events(raw)
    assert again[0] == ("delta", {"text": full[7:]})
    assert again[1][1]["status"] == "complete"
    assert again[1][1]["message"] == reply_id
    # Holding it all already: only `done`.
    raw = await read_all(await client.get(f"/ai-chat/stream/{reply_id}/?after={len(full)}"))
    assert [name for name, _ in parse_events(raw)] == ["done"]


async def test_a_second_client_in_the_same_process_gets_the_rest_live(alice, fake):
    fake.word_delay = 0.01
    fake.long_words = 80
    key = await key_for(alice, fake)
    client = await client_for(alice)
    first = await client.post(STREAM, {"message": "[[long]]", "key": key.pk})
    chunks = aiter(first.streaming_content)
    meta = parse_events((await anext(chunks)).decode())[0][1]
    second = await client.get(f"/ai-chat/stream/{meta['message']}/?after=0")
    raw_second = await read_all(second)
    raw_first = "".join([c.decode() async for c in chunks])
    expected = " ".join(f"word{i}" for i in range(80))
    for raw in (raw_first, raw_second):
        events = parse_events(raw)
        assert "".join(d["text"] for n, d in events if n == "delta") == expected
        assert events[-1][0] == "done"
    # Live, not only at the end: the watcher got several pieces.
    assert sum(1 for n, _ in parse_events(raw_second) if n == "delta") > 3


async def test_it_checks_ownership_of_re_attach_and_stop(alice, bob, fake):
    key = await key_for(alice, fake)
    client = await client_for(alice)
    _, events = await stream(client, message="mine", key=key.pk)
    reply_id, user_message = events[-1][1]["message"], events[0][1]["user_message"]
    bob_client = await client_for(bob)
    assert (await bob_client.get(f"/ai-chat/stream/{reply_id}/")).status_code == 404
    assert (await bob_client.post(f"/ai-chat/messages/{reply_id}/stop/")).status_code == 404
    # A user message is not a reply.
    assert (await client.get(f"/ai-chat/stream/{user_message}/")).status_code == 404
    bad = await client.get(f"/ai-chat/stream/{reply_id}/", headers={"Last-Event-ID": "x1"})
    assert bad.status_code == 400
    assert (await Message.objects.aget(pk=reply_id)).status == Status.COMPLETE


async def test_stopping_a_finished_reply_changes_nothing(alice, fake):
    key = await key_for(alice, fake)
    client = await client_for(alice)
    _, events = await stream(client, message="done already", key=key.pk)
    reply_id = events[-1][1]["message"]
    answer = await client.post(f"/ai-chat/messages/{reply_id}/stop/")
    assert answer.json() == {"ok": True}
    reply = await Message.objects.aget(pk=reply_id)
    assert reply.status == Status.COMPLETE and not reply.stop_requested


async def test_a_fourth_running_reply_is_refused_with_a_clear_message(alice, fake, settings):
    settings.CHAT_MAX_RUNNING_REPLIES = 3
    fake.word_delay = 0.05
    key = await key_for(alice, fake)
    client = await client_for(alice)
    running = []
    for i in range(3):
        response = await client.post(STREAM, {"message": f"[[long]] {i}", "key": key.pk})
        assert response.status_code == 200
        running.append(parse_events((await anext(aiter(response.streaming_content))).decode()))
    refused = await client.post(STREAM, {"message": "one more", "key": key.pk})
    assert refused.status_code == 429
    assert refused.json() == {
        "error": "You already have 3 replies generating: wait for one to finish, or stop one."
    }
    assert not await Message.objects.filter(content="one more").aexists()
    # Stopping one frees a place.
    first_reply = running[0][0][1]["message"]
    await client.post(f"/ai-chat/messages/{first_reply}/stop/")
    response = await client.post(STREAM, {"message": "now?", "key": key.pk})
    assert response.status_code == 200
    for events in running[1:]:
        await client.post(f"/ai-chat/messages/{events[0][1]['message']}/stop/")
    await read_all(response)


def test_the_running_replies_are_counted_up_to_the_cap_only(alice, settings):
    """The turn start's count stops at CHAT_MAX_RUNNING_REPLIES: its work does not grow with
    the replies a user has running (a benchmark user runs thousands)."""
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from ai_chat.models import Conversation

    settings.CHAT_MAX_RUNNING_REPLIES = 3
    conversation = Conversation.objects.create(owner=alice, title="many")
    Message.objects.bulk_create(
        Message(conversation=conversation, role=Role.ASSISTANT, status=Status.STREAMING)
        for _ in range(7)
    )
    with CaptureQueriesContext(connection) as queries:
        assert services._running_replies(alice, timezone.now()) == 3
    assert len(queries) == 1
    assert "LIMIT 3" in queries[0]["sql"]


def test_turns_starting_at_the_same_instant_never_exceed_the_running_cap(alice, fake, settings):
    """Twelve turns of one user start at once, each on its own database connection (as on
    several workers or servers): only CHAT_MAX_RUNNING_REPLIES of them take a place, the rest
    are refused with 429 and save nothing. On PostgreSQL two transactions could both count two
    running replies and both take the last place, had the count not been serialized per user."""
    settings.CHAT_MAX_RUNNING_REPLIES = 3
    key = make_key(alice, fake)
    count = 12
    together = threading.Barrier(count)

    def start(i: int) -> str | int:
        together.wait()
        try:
            services._prepare(alice, {"message": f"at once {i}", "key": key.pk})
            return "started"
        except services.TurnRefused as exc:
            return exc.status
        finally:
            connections.close_all()

    for round_ in range(3):
        with ThreadPoolExecutor(count) as pool:
            outcomes = list(pool.map(start, range(count)))
        running = Message.objects.filter(role=Role.ASSISTANT, status=Status.STREAMING)
        assert running.count() == 3, (round_, outcomes)
        assert sorted(outcomes, key=str) == [429] * 9 + ["started"] * 3
        # Free the places for the next round (as the jobs would once saved).
        running.update(status=Status.COMPLETE)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_a_failed_turn_is_not_sent_again_nor_joined_to_the_next(
    alice, fake, provider, settings
):
    settings.PROVIDER_MAX_RETRIES = 0
    key = await key_for(alice, fake, provider)
    client = await client_for(alice)
    _, events = await stream(client, message="first question", key=key.pk)
    conversation = events[0][1]["conversation"]
    _, events = await stream(client, message="Please [[429]] now", conversation=conversation)
    assert events[-1][0] == "error"
    _, events = await stream(client, message="Are you still there?", conversation=conversation)
    assert events[-1][0] == "done"
    sent = fake.requests[-1].body["messages"]
    if provider == "openai":
        sent = [m for m in sent if m["role"] != "system"]
    contents = [(m["role"], m["content"]) for m in sent]
    assert contents == [
        ("user", "first question"),
        ("assistant", "Hello! You said: first question"),
        ("user", "Are you still there?"),
    ]


async def test_the_job_survives_its_request_and_checkpoints_its_text(alice, fake, settings):
    """The text so far reaches the database about once a second, in one batch for all the
    process's replies: what another process shows, and what a crash would keep."""
    settings.CHAT_CHECKPOINT_SECONDS = 0.2
    fake.word_delay = 0.02
    fake.long_words = 150
    key = await key_for(alice, fake)
    client = await client_for(alice)
    response = await client.post(STREAM, {"message": "[[long]]", "key": key.pk})
    meta = parse_events((await anext(aiter(response.streaming_content))).decode())[0][1]
    # Leave; then watch the row grow while it is still streaming.
    del response
    seen = set()
    for _ in range(200):
        row = await Message.objects.aget(pk=meta["message"])
        if row.status != Status.STREAMING:
            break
        seen.add(len(row.content))
        await asyncio.sleep(0.05)
    grown = sorted(n for n in seen if n)
    assert len(grown) >= 2, seen
    reply = await wait_until_saved(meta["message"])
    assert reply.status == Status.COMPLETE


async def test_a_reply_is_cut_at_chat_max_reply_seconds_keeping_what_arrived(alice, fake, settings):
    settings.CHAT_MAX_REPLY_SECONDS = 2
    fake.word_delay = 0.05
    key = await key_for(alice, fake)
    client = await client_for(alice)
    _, events = await stream(client, message="[[long]]", key=key.pk)
    assert events[-1] == (
        "error",
        {"message": "The reply was cut after 2 seconds.", "code": "timeout"},
    )
    partial = "".join(d["text"] for n, d in events if n == "delta")
    reply = await Message.objects.aget(pk=events[0][1]["message"])
    assert reply.status == Status.ERROR and reply.error_code == "timeout"
    assert reply.content == partial and partial
    assert await asyncio.to_thread(fake.disconnected.wait, 2)


async def test_the_asgi_entry_point_answers_lifespan_and_lets_running_replies_end(
    alice, fake, settings
):
    """Django's handler refuses lifespan; the entry point answers it, and on shutdown saves a
    running reply (here: after a grace of 0.2 s) as interrupted with what arrived."""
    from bsepar_panel.asgi import application

    settings.CHAT_SHUTDOWN_SECONDS = 0.2
    fake.word_delay = 0.05
    chunks, meta = await long_reply_under_way(alice, fake)
    inbox: asyncio.Queue = asyncio.Queue()
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    await inbox.put({"type": "lifespan.startup"})
    await inbox.put({"type": "lifespan.shutdown"})
    await application({"type": "lifespan"}, inbox.get, send)
    assert sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]
    reply = await Message.objects.aget(pk=meta["message"])
    assert reply.status == Status.ERROR
    assert "interrupted" in reply.error_message
    assert reply.content
    rest = parse_events("".join([c.decode() async for c in chunks]))
    assert rest[-1][0] == "error"


async def test_a_replys_grace_counts_from_the_signal_and_its_attached_client_gets_the_end(
    alice, fake
):
    """The server waits for open connections before the lifespan shutdown, so the replies'
    grace starts at the signal (`jobs.begin_shutdown`): the attached client follows the reply
    live meanwhile, then the reply is saved interrupted and the stream ends with that error,
    having carried every character saved."""
    from ai_chat import jobs

    fake.word_delay = 0.05  # twenty seconds of reply
    chunks, meta = await long_reply_under_way(alice, fake)
    jobs.begin_shutdown(0.5)
    try:
        async with asyncio.timeout(5):
            rest = parse_events("".join([chunk.decode() async for chunk in chunks]))
        assert rest[-1][0] == "error" and "interrupted" in rest[-1][1]["message"]
        reply = await wait_until_saved(meta["message"])
        assert reply.status == Status.ERROR
        got = "".join(data["text"] for name, data in rest if name == "delta")
        assert reply.content.endswith(got) and len(got) > 0  # it went on live after the signal
    finally:
        await jobs.shutdown(0)


async def test_at_shutdown_a_client_watching_another_process_reply_is_let_go(alice):
    """A client attached here to a reply another process generates (read from the database's
    checkpoints) is let go at the signal too: its stream ends at once, without an ending."""
    from ai_chat import jobs
    from ai_chat.models import Conversation

    conversation = await Conversation.objects.acreate(owner=alice, title="elsewhere")
    reply = await Message.objects.acreate(
        conversation=conversation, role=Role.ASSISTANT, content="so far", status=Status.STREAMING
    )
    events = await jobs.attach(alice, reply.pk, 0)
    assert await anext(events) == 'id: 6\nevent: delta\ndata: {"text": "so far"}\n\n'
    rest = asyncio.ensure_future(anext(events))
    await asyncio.sleep(0.1)
    assert not rest.done()  # waiting for the next checkpoint
    jobs.begin_shutdown(5)
    try:
        async with asyncio.timeout(0.2):
            assert await rest == jobs.DRAINED
        with pytest.raises(StopAsyncIteration):
            await anext(events)
    finally:
        await jobs.shutdown(0)


@pytest.mark.skipif(
    not connection.vendor == "sqlite", reason="SQLite's Stop signal file (PostgreSQL listens)"
)
async def test_on_sqlite_the_stop_poll_queries_only_after_a_stop(
    alice, fake, settings, monkeypatch
):
    """Without a listener, each tick of the poll is a stat of the file a Stop touches; the
    query for Stop flags runs at the first tick, at checkpoints, and once the file changed.
    A Stop flagged by another process (its `_flag_stop`) still ends the reply at the next tick."""
    settings.CHAT_STOP_POLL_SECONDS = 0.02
    settings.CHAT_CHECKPOINT_SECONDS = 3600
    fake.word_delay = 0.02
    fake.long_words = 1500  # 30 s: it is stopped long before
    polls = []
    real_poll = jobs._poll

    def counting_poll(*args):
        polls.append(time.monotonic())
        return real_poll(*args)

    monkeypatch.setattr(jobs, "_poll", counting_poll)
    chunks, meta = await long_reply_under_way(alice, fake)
    await asyncio.sleep(0.6)  # about 30 ticks
    assert len(polls) <= 2, len(polls)
    flagged_at = time.monotonic()
    await sync_to_async(jobs._flag_stop)(alice, meta["message"])  # as another process would
    reply = await wait_until_saved(meta["message"])
    assert reply.status == Status.STOPPED
    assert polls[-1] > flagged_at and polls[-1] - flagged_at < 0.5
