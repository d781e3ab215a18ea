"""Replies as jobs of the worker process, not of the request that asked for them.

`start(turn)` runs the reply's generation as a task of this process's event loop and keeps it
in a registry (one per process). Any number of clients attach to it (`ReplyJob.events`): the
request that started it, a second tab, a reconnection. A client going away detaches only;
the job goes on until the reply is done, fails, is stopped, or reaches
`CHAT_MAX_REPLY_SECONDS`, and then saves it once (`services._finish`).

Across processes and servers:
- Stop (`request_stop`): a job in this process is stopped at once; otherwise the reply's row is
  flagged `stop_requested` and the flag is announced: through Redis pub/sub when the cache is
  Redis, PostgreSQL's NOTIFY on PostgreSQL; each process listens (one subscription per
  process). On SQLite, or while a listener is down, the process running the reply finds the
  flag with one query for all its running replies every `CHAT_STOP_POLL_SECONDS` (0.05 s); with
  a listener that poll is only a fallback, once a checkpoint. On SQLite (one machine: every
  process sees the database's folder) a Stop also touches a file beside the database, and the
  poll's query runs only when that file has changed since the last one (a stat, every tick) or
  at a checkpoint: a query per tick cost a one-reply worker about a third of its CPU.
- Progress: with Redis, each reply's pieces go to a Redis stream (`bsepar:reply:<id>`, XADD,
  coalesced while the last one is being written), which a client attached on another process
  reads from its start (`events_from_redis`). Without Redis, that client reads the database:
  every `CHAT_CHECKPOINT_SECONDS` (1 s) each process saves the text so far of its running
  replies that grew, in one UPDATE for all of them (`events_from_database`). The checkpoints run
  in both cases: they bound what a crash loses.
A client in the same process gets each piece at once.

On a graceful restart the ASGI wrapper (bsepar_panel/asgi.py) calls `begin_shutdown` as soon
as the worker is told to stop, since the server waits for its open connections to end before it
runs the lifespan shutdown: running replies may finish within `CHAT_SHUTDOWN_SECONDS` from then
(their attached clients still follow them live), then the rest are saved as interrupted with
what arrived, which ends their streams with that `error`. Clients attached here to replies of
other processes are let go at once (their streams end without an ending event: they
re-attach, on another server or after the restart). The lifespan shutdown (`shutdown`) then
only waits for that to be over.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

# Imported with the module, not at the first Stop: the first Stop must be as quick as the others.
import psycopg
import redis
import redis.asyncio
from django.conf import settings
from django.db import connection
from django.utils.translation import gettext as _

from ai_chat import services
from ai_chat.models import Message, Role, Status
from api_manager.providers import ProviderError, ProviderTimeout, ToolCall, Usage, get_provider
from core import db
from core.sqlite.base import _is_memory

logger = logging.getLogger(__name__)

# Why a job was ended before its reply was: the reason picks the status it is saved with.
STOPPED = "stopped"
INTERRUPTED = "interrupted"

# What a stream watching another process's reply says last when it ends because this process
# is shutting down (an SSE comment: clients ignore it, and re-attach as after any stream that
# ended without `done`).
DRAINED = ": the server is restarting: re-attach\n\n"


class ReplyNotFound(Exception):
    """No such reply of this user."""


class ReplyJob:
    """One reply being generated: its text so far, the clients attached, and its ending."""

    def __init__(self, turn: services.Turn) -> None:
        self.turn = turn
        self.reply_id: int = turn.reply.pk
        self.pieces: list[str] = []
        # The reply's length in code points: the `id:` of the latest delta.
        self.length = 0
        # Length saved by the last checkpoint.
        self.checkpointed = 0
        # The last event (`done` or `error`), once the reply is saved.
        self.final: tuple[str, dict[str, Any]] | None = None
        self.finished = asyncio.Event()
        self._waiters: set[asyncio.Event] = set()
        self._end_reason: str | None = None
        self._saving = False
        self.task: asyncio.Task[None] | None = None
        self.publisher: asyncio.Task[None] | None = None

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def _notify(self) -> None:
        for waiter in self._waiters:
            waiter.set()

    def end(self, reason: str) -> None:
        """End the generation now (STOPPED or INTERRUPTED): the provider's stream is closed and
        the reply saved with what arrived. Nothing happens once it is being saved."""
        if self._saving or self._end_reason is not None or self.task is None:
            return
        self._end_reason = reason
        self.task.cancel()

    async def stop(self) -> None:
        """Stop the reply and wait until it is saved."""
        self.end(STOPPED)
        await self.finished.wait()

    async def events(self, after: int = 0, meta: bool = False) -> AsyncIterator[str]:
        """The reply as server-sent events for one attached client: `meta` first if asked, the
        text after code point `after` as one delta, then each new piece as it arrives (pieces
        that arrived while the last event was being sent go out together), then `done` or
        `error`. Leaving early detaches this client only."""
        if meta:
            yield services.sse(
                "meta",
                {
                    "conversation": self.turn.conversation.pk,
                    "user_message": self.turn.user_message.pk,
                    "message": self.reply_id,
                },
                event_id=0,
            )
        wake = asyncio.Event()
        self._waiters.add(wake)
        try:
            text = self.text
            index, position = len(self.pieces), len(text)
            if position > after:
                yield services.sse("delta", {"text": text[after:]}, event_id=position)
            heartbeat = settings.CHAT_HEARTBEAT_SECONDS
            while True:
                if index < len(self.pieces):
                    piece = "".join(self.pieces[index:])
                    index, position = len(self.pieces), position + len(piece)
                    yield services.sse("delta", {"text": piece}, event_id=position)
                    continue
                if self.final is not None:
                    yield services.sse(*self.final)
                    return
                # Checked and cleared with no await in between: no piece can be missed.
                wake.clear()
                try:
                    async with asyncio.timeout(heartbeat):
                        await wake.wait()
                except TimeoutError:
                    # A comment line: keeps proxies from closing an idle stream.
                    yield ": keep-alive\n\n"
        finally:
            self._waiters.discard(wake)

    async def run(self) -> None:
        """Generate the reply and save it once, however it ends."""
        try:
            await self._generate_and_save()
        finally:
            _jobs.pop(self.reply_id, None)
            self.finished.set()
            self._notify()

    async def _generate_and_save(self) -> None:
        turn = self.turn
        started = time.monotonic()
        first_ms: int | None = None
        usage: Usage | None = None
        calls: list[ToolCall] = []
        status: str = Status.COMPLETE
        error: ProviderError | None = None
        stream = get_provider(turn.config).stream(turn.request)
        limit = asyncio.timeout(settings.CHAT_MAX_REPLY_SECONDS)
        try:
            async with limit:
                async for chunk in stream:
                    if chunk.usage is not None:
                        usage = chunk.usage
                    if chunk.tool_call is not None:
                        calls.append(chunk.tool_call)
                    if chunk.text:
                        if first_ms is None:
                            first_ms = int((time.monotonic() - started) * 1000)
                        self.pieces.append(chunk.text)
                        self.length += len(chunk.text)
                        self._notify()
                        if self._waiters:
                            # Let attached clients send this piece before the next is read:
                            # pieces that came in one read from the provider still go out one
                            # by one (word by word), not in a lump.
                            await asyncio.sleep(0)
        except ProviderError as exc:
            status, error = Status.ERROR, exc
        except asyncio.CancelledError:
            # Ended on purpose (Stop, a restart), or the event loop is closing (it cancels its
            # tasks and waits for them): either way the cancellation is handled here and what
            # arrived is saved below.
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            if self._end_reason == STOPPED:
                status = Status.STOPPED
            else:
                status = Status.ERROR
                error = ProviderError(
                    _("The reply was interrupted (the server restarted while it was generated).")
                )
        except TimeoutError:
            if not limit.expired():
                raise
            status = Status.ERROR
            error = ProviderTimeout(
                _("The reply was cut after %(n)d seconds.")
                % {"n": int(settings.CHAT_MAX_REPLY_SECONDS)}
            )
        except Exception:
            logger.exception("reply %s failed", self.reply_id)
            status = Status.ERROR
            error = ProviderError(_("Something went wrong while streaming the reply."))
        finally:
            self._saving = True
            # Closes the provider's HTTP stream now if it is still open (stopped, cut).
            await stream.aclose()
        total_ms = int((time.monotonic() - started) * 1000)
        try:
            saved = await db.run(
                services._finish,
                turn,
                self.text,
                status,
                usage,
                error,
                first_ms,
                total_ms,
                calls,
            )
        except Exception:
            logger.exception("reply %s could not be saved", self.reply_id)
            message = _("The reply could not be saved.")
            self.final = ("error", {"message": message, "code": "provider"})
        else:
            if error is not None:
                self.final = ("error", {"message": error.message, "code": error.code})
            else:
                self.final = ("done", saved.done_data())


# -- the registry (one per process) ----------------------------------------------------
_jobs: dict[int, ReplyJob] = {}
_pump: asyncio.Task[None] | None = None
_listener: asyncio.Task[None] | None = None
# Whether this process's Stop listener is subscribed (then the poll is only a fallback).
_listening = False
# Set once this process begins shutting down (`begin_shutdown`), with the task that lets its
# running replies finish or saves them as interrupted.
_draining = False
_closing: asyncio.Task[None] | None = None
# Wakes the clients attached here to replies of other processes (`events_from_database`,
# `events_from_redis`) when this process begins shutting down.
_watchers: set[asyncio.Event] = set()

STOP_CHANNEL = "bsepar_reply_stop"


def _redis_url() -> str | None:
    """The cache's Redis URL when the cache is Redis (CACHE_URL=redis://…)."""
    cache = settings.CACHES["default"]
    if "redis" not in cache["BACKEND"].lower():
        return None
    location = cache["LOCATION"]
    return location[0] if isinstance(location, list | tuple) else location


@functools.cache
def _redis_client(url: str) -> redis.Redis:
    """One client (with its connection pool) per process, shared by the database threads."""
    return redis.Redis.from_url(url)


def _announce_stop(message_id: int) -> None:
    """Tell every process that reply `message_id` is to stop (on a database thread)."""
    if url := _redis_url():
        _redis_client(url).publish(STOP_CHANNEL, str(message_id))
    elif connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, %s)", [STOP_CHANNEL, str(message_id)])
    if signal := _stop_signal():
        # After the flag's UPDATE (autocommit): a poll that sees the file changed finds it
        # (also with Redis: the poll is the fallback while the listener is down).
        with open(signal, "ab"):
            pass
        os.utime(signal)


def _stop_signal() -> str | None:
    """SQLite: the file a Stop touches, beside the database (as its writers' lock is), so that
    a process's poll is a stat until there is a Stop to find; None for an in-memory database
    or another engine."""
    if connection.vendor != "sqlite":
        return None
    name = str(connection.settings_dict["NAME"])
    return None if _is_memory(name) else f"{name}-stop.signal"


def _signal_stamp(signal: str) -> tuple[int, int] | None:
    try:
        stat = os.stat(signal)
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def _stop_announced(payload: bytes | str) -> None:
    try:
        reply_id = int(payload)
    except ValueError:
        return
    if job := _jobs.get(reply_id):
        job.end(STOPPED)


async def _listen() -> None:
    """Receive Stop announcements for this process (Redis pub/sub or PostgreSQL LISTEN), for as
    long as the event loop runs; on a failure, the poll takes over and the listener retries."""
    global _listening
    while True:
        try:
            if url := _redis_url():
                async with redis.asyncio.Redis.from_url(url) as client:
                    async with client.pubsub() as pubsub:
                        await pubsub.subscribe(STOP_CHANNEL)
                        _listening = True
                        async for message in pubsub.listen():
                            if message["type"] == "message":
                                _stop_announced(message["data"])
            elif connection.vendor == "postgresql":
                database = settings.DATABASES["default"]
                conninfo = psycopg.conninfo.make_conninfo(
                    dbname=database["NAME"],
                    user=database.get("USER") or None,
                    password=database.get("PASSWORD") or None,
                    host=database.get("HOST") or None,
                    port=database.get("PORT") or None,
                )
                async with await psycopg.AsyncConnection.connect(
                    conninfo, autocommit=True
                ) as listener:
                    await listener.execute(f"LISTEN {STOP_CHANNEL}")
                    _listening = True
                    async for notice in listener.notifies():
                        _stop_announced(notice.payload)
            else:
                return  # SQLite: the poll is the way
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("the Stop listener failed; polling until it is back")
        finally:
            _listening = False
        await asyncio.sleep(1)


def get(reply_id: int) -> ReplyJob | None:
    """The job generating reply `reply_id` in this process, if any."""
    return _jobs.get(reply_id)


def running() -> list[ReplyJob]:
    return list(_jobs.values())


def start(turn: services.Turn) -> ReplyJob:
    """Start generating the turn's reply as a task of this process (not of the caller)."""
    global _pump, _listener
    job = ReplyJob(turn)
    _jobs[job.reply_id] = job
    job.task = asyncio.get_running_loop().create_task(job.run(), name=f"reply-{job.reply_id}")
    loop = asyncio.get_running_loop()
    if _pump is None or _pump.done() or _pump.get_loop() is not loop:
        _pump = loop.create_task(_pump_loop(), name="reply-pump")
    if _listener is None or _listener.done() or _listener.get_loop() is not loop:
        _listener = loop.create_task(_listen(), name="reply-stop-listener")
    if url := _redis_url():
        job.publisher = loop.create_task(_publish(job, url), name=f"reply-{job.reply_id}-redis")
    return job


def _stream_key(reply_id: int) -> str:
    return f"bsepar:reply:{reply_id}"


async def _publish(job: ReplyJob, url: str) -> None:
    """Copy the job's pieces to its Redis stream as they arrive, then an `end` entry once the
    reply is saved (the stream is kept for an hour, for late readers)."""
    key = _stream_key(job.reply_id)
    wake = asyncio.Event()
    job._waiters.add(wake)
    index = 0
    try:
        async with redis.asyncio.Redis.from_url(url) as client:
            while True:
                if index < len(job.pieces):
                    piece = "".join(job.pieces[index:])
                    index = len(job.pieces)
                    await client.xadd(key, {"t": piece})
                    continue
                if job.final is not None:
                    await client.xadd(key, {"end": "1"})
                    await client.expire(key, 3600)
                    return
                wake.clear()
                await wake.wait()
    except Exception:
        # Viewers elsewhere fall back to the database's checkpoints.
        logger.exception("reply %s: publishing to Redis failed", job.reply_id)
    finally:
        job._waiters.discard(wake)


def _poll(stop_ids: list[int], checkpoints: list[tuple[int, str]]) -> list[int]:
    """One trip to the database for all of this process's running replies: save the text of
    those that grew (one UPDATE; a row already saved as finished is left alone) and return
    which of them another process asked to stop (one SELECT)."""
    if checkpoints:
        Message.objects.filter(status=Status.STREAMING).bulk_update(
            [Message(pk=pk, content=text) for pk, text in checkpoints], ["content"]
        )
    return list(
        Message.objects.filter(pk__in=stop_ids, stop_requested=True).values_list("pk", flat=True)
    )


async def _pump_loop() -> None:
    """While this process runs replies: look for Stop requests every CHAT_STOP_POLL_SECONDS
    and checkpoint their text every CHAT_CHECKPOINT_SECONDS, each in one batch."""
    last_checkpoint = time.monotonic()
    signal = _stop_signal()
    # The signal file as last seen; unknown at first, so the first tick queries.
    seen: tuple[int, int] | None | bool = False
    while _jobs:
        await asyncio.sleep(settings.CHAT_STOP_POLL_SECONDS)
        jobs = [job for job in _jobs.values() if not job._saving]
        if not jobs:
            continue
        checkpoints: list[tuple[int, str]] = []
        checkpoint = time.monotonic() - last_checkpoint >= settings.CHAT_CHECKPOINT_SECONDS
        stamp = _signal_stamp(signal) if signal else None
        if checkpoint:
            last_checkpoint = time.monotonic()
            for job in jobs:
                if job.length > job.checkpointed:
                    checkpoints.append((job.reply_id, job.text))
                    job.checkpointed = job.length
        elif _listening:
            continue  # Stop arrives through the listener; the poll is a fallback
        elif signal and stamp == seen:
            continue  # no Stop since the last query (SQLite's signal file)
        seen = stamp
        try:
            stopped = await db.run(_poll, [job.reply_id for job in jobs], checkpoints)
        except Exception:
            logger.exception("the running replies' poll failed")
            continue
        for reply_id in stopped:
            if job := _jobs.get(reply_id):
                job.end(STOPPED)
    # No reply left: the listener's subscription (a connection) is not kept for nothing.
    if _listener is not None and _listener.get_loop() is asyncio.get_running_loop():
        _listener.cancel()


def begin_shutdown(grace: float) -> None:
    """This process is told to stop. Its running replies get `grace` seconds from now to finish
    (clients attached to them stay, live), then the rest are saved as interrupted, which ends
    their streams; clients attached here to other processes' replies are let go now. Either
    way the connections the server waits for end within `grace` (or a little more, while the
    last replies are saved)."""
    global _draining, _closing
    _draining = True
    for wake in _watchers:
        wake.set()
    if _closing is None:
        _closing = asyncio.get_running_loop().create_task(
            _finish_running(grace), name="replies-shutdown"
        )


@contextlib.contextmanager
def _watching() -> Any:
    """An event set when this process begins shutting down, for one attached client."""
    wake = asyncio.Event()
    if _draining:
        wake.set()
    _watchers.add(wake)
    try:
        yield wake
    finally:
        _watchers.discard(wake)


async def _wait(wake: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, or less if `wake` is set."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await wake.wait()


async def shutdown(grace: float) -> None:
    """The lifespan shutdown: `begin_shutdown` unless the signal has called it already, then
    wait until its running replies are finished or saved as interrupted."""
    global _draining, _closing
    begin_shutdown(grace)
    try:
        await _closing  # type: ignore[misc]
    finally:
        # The process exits next; one that goes on serving (the in-process tests) may have
        # streams attached again.
        _draining, _closing = False, None


async def _finish_running(grace: float) -> None:
    """Let running replies finish for up to `grace` seconds, then save the rest as interrupted
    with what arrived."""
    jobs = running()
    if not jobs:
        return
    logger.info("waiting for %d running replies", len(jobs))
    await asyncio.wait([job.task for job in jobs if job.task], timeout=grace)
    for job in running():
        job.end(INTERRUPTED)
    await asyncio.wait([job.task for job in jobs if job.task], timeout=30)


# -- the services the views call -------------------------------------------------------
def _reply_for_user(user: Any, message_id: int) -> Message:
    reply = (
        Message.objects.select_related("usage")
        .filter(pk=message_id, role=Role.ASSISTANT, conversation__owner=user)
        .first()
    )
    if reply is None:
        raise ReplyNotFound(message_id)
    return reply


async def request_stop(user: Any, message_id: int) -> None:
    """Stop the user's reply `message_id` wherever it runs (ReplyNotFound if it is not theirs).
    In this process it is stopped and saved before this returns; in another, that process
    stops it within CHAT_STOP_POLL_SECONDS. A finished reply is left as it is."""
    if job := _jobs.get(message_id):
        if job.turn.user.pk == user.pk:
            await job.stop()
            return
    await db.run(_flag_stop, user, message_id)


def _flag_stop(user: Any, message_id: int) -> None:
    # One UPDATE on the way to the announcement (the Stop's latency counts); the ownership
    # check alone only when nothing was flagged (a finished reply, or not theirs: 404).
    flagged = Message.objects.filter(
        pk=message_id, role=Role.ASSISTANT, conversation__owner=user, status=Status.STREAMING
    ).update(stop_requested=True)
    if flagged:
        _announce_stop(message_id)
    else:
        _reply_for_user(user, message_id)


async def attach(user: Any, message_id: int, after: int) -> AsyncIterator[str]:
    """The events of the user's reply `message_id` after code point `after`, wherever it runs
    (ReplyNotFound, raised before anything is sent, if it is not theirs)."""
    job = _jobs.get(message_id)
    if job is not None and job.turn.user.pk == user.pk:
        return job.events(after)
    reply = await db.run(_reply_for_user, user, message_id)
    if reply.status == Status.STREAMING and (url := _redis_url()):
        return events_from_redis(reply, after, url)
    return events_from_database(reply, after)


def _final_event(reply: Message) -> tuple[str, dict[str, Any]]:
    if reply.status == Status.ERROR:
        return "error", {"message": reply.error_message, "code": reply.error_code or "provider"}
    return "done", services.saved_reply_of(reply).done_data()


def _reload(message_id: int) -> tuple[Message, tuple[str, dict[str, Any]] | None]:
    reply = Message.objects.select_related("usage").get(pk=message_id)
    return reply, None if reply.status == Status.STREAMING else _final_event(reply)


async def events_from_database(reply: Message, after: int) -> AsyncIterator[str]:
    """The events of a reply generated by another process (or finished): its checkpointed
    text as it grows (read about once a second), then its final event."""
    with _watching() as draining:
        async for event in _database_events(reply, after, draining):
            yield event


async def _database_events(
    reply: Message, after: int, draining: asyncio.Event
) -> AsyncIterator[str]:
    position = after
    final = None if reply.status == Status.STREAMING else await db.run(_final_event, reply)
    waited = 0.0
    while True:
        text = reply.content
        if len(text) > position:
            yield services.sse("delta", {"text": text[position:]}, event_id=len(text))
            position = len(text)
        if final is not None:
            yield services.sse(*final)
            return
        # Its own process may be this one after all (it started between our reads).
        if job := _jobs.get(reply.pk):
            async for event in job.events(position):
                yield event
            return
        if draining.is_set():
            yield DRAINED
            return
        await _wait(draining, settings.CHAT_CHECKPOINT_SECONDS / 2)
        waited += settings.CHAT_CHECKPOINT_SECONDS / 2
        if waited >= settings.CHAT_HEARTBEAT_SECONDS:
            waited = 0.0
            yield ": keep-alive\n\n"
        reply, final = await db.run(_reload, reply.pk)


async def events_from_redis(reply: Message, after: int, url: str) -> AsyncIterator[str]:
    """The events of a reply generated by another process, from its Redis stream (every piece
    from the start, as it is written), then its final event from the database."""
    key = _stream_key(reply.pk)
    heartbeat_ms = int(settings.CHAT_HEARTBEAT_SECONDS * 1000)
    with _watching() as draining:
        drained = asyncio.ensure_future(draining.wait())
        try:
            async with redis.asyncio.Redis.from_url(url) as client:
                async for event in _redis_events(reply, after, key, heartbeat_ms, client, drained):
                    yield event
        finally:
            drained.cancel()


async def _redis_events(
    reply: Message,
    after: int,
    key: str,
    heartbeat_ms: int,
    client: redis.asyncio.Redis,
    drained: asyncio.Future[Any],
) -> AsyncIterator[str]:
    last_entry = "0"
    position = 0
    while True:
        read = asyncio.ensure_future(client.xread({key: last_entry}, block=heartbeat_ms, count=500))
        try:
            done, _ = await asyncio.wait([read, drained], return_when=asyncio.FIRST_COMPLETED)
        finally:
            # The client left (this generator is cancelled) or the process is shutting down.
            if not read.done():
                read.cancel()
        if read not in done:
            yield DRAINED
            return
        found = read.result()
        if not found:
            # Nothing for a while: the stream may never come (its process died, or wrote
            # no stream): the database says whether the reply is still going.
            row, final = await db.run(_reload, reply.pk)
            if final is not None:
                if len(row.content) > max(position, after):
                    start = max(position, after)
                    yield services.sse(
                        "delta", {"text": row.content[start:]}, event_id=len(row.content)
                    )
                yield services.sse(*final)
                return
            yield ": keep-alive\n\n"
            continue
        for entry, fields in found[0][1]:
            last_entry = entry
            if b"end" in fields:
                row, final = await db.run(_reload, reply.pk)
                start = max(position, after)
                if len(row.content) > start:
                    yield services.sse(
                        "delta", {"text": row.content[start:]}, event_id=len(row.content)
                    )
                if final is not None:
                    yield services.sse(*final)
                return
            text = fields[b"t"].decode()
            start, position = position, position + len(text)
            if position > after:
                yield services.sse(
                    "delta", {"text": text[max(0, after - start) :]}, event_id=position
                )
