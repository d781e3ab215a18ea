"""Chat turns start first come, first served: at most CHAT_TURN_STARTS_AT_ONCE per worker.

A turn start (`POST /ai-chat/stream/`) is CPU work from its first byte to the reply's first
event: the middleware and the user, the checks and the first rows, the provider request. When
a burst of turns reaches one worker together, its event loop and database threads share that
work among all of them, so every turn reaches the provider at about the time the last one does:
with ten at once, the median turn waited as long as the slowest. Started one after another,
the first reply is on its way after one turn's work, the second after two, and so on: the same
total, but much less wait at the median (measured through nginx with the fake provider beside
LiteLLM, bench/RESULTS.md "Turn starts one at a time").

A turn holds its place until its response starts (the `meta` event, sent once its rows are
saved and its provider request is under way) or for `HOLD_SECONDS` at most, whichever comes
first: a turn start that waits on something slow (a large upload from a slow client, a locked
database) holds up the next ones by that much only. No turn waits longer than `WAIT_SECONDS`
for its place: under a larger burst the rest go in together, as without the gate. Nothing else
waits: pages, Stop and re-attaching streams go straight through. `CHAT_TURN_STARTS_AT_ONCE=0` turns the gate off;
raise it when the database is on another machine, where a turn start mostly waits for the
network and several may overlap.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from django.conf import settings
from django.urls import reverse

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

# The longest one turn start keeps the next waiting (seconds).
HOLD_SECONDS = 0.25
# The longest a turn waits for its place (seconds): under a burst larger than a worker starts in
# that time, the rest are let in together, as without the gate (its queue would only delay the
# last ones further while the first ones' replies already compete with them for the CPU).
WAIT_SECONDS = 0.1


class TurnStartGate:
    """Admits turn starts in their order of arrival, `CHAT_TURN_STARTS_AT_ONCE` at a time in
    each event loop (a worker runs one)."""

    def __init__(self) -> None:
        self._path: str | None = None
        self._places: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[int, asyncio.Semaphore]
        ] = weakref.WeakKeyDictionary()

    def is_turn_start(self, scope: MutableMapping[str, Any]) -> bool:
        if scope["type"] != "http" or scope["method"] != "POST":
            return False
        if self._path is None:
            self._path = reverse("ai_chat:stream")
        return scope["path"] == self._path

    def _semaphore(self, at_once: int) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        places = self._places.get(loop)
        if places is None or places[0] != at_once:
            places = (at_once, asyncio.Semaphore(at_once))
            self._places[loop] = places
        return places[1]

    @contextlib.asynccontextmanager
    async def admit(self, scope: MutableMapping[str, Any], send: Send) -> AsyncIterator[Send]:
        """Wait for this request's turn if it is a turn start; give the `send` to answer with
        (it frees the place as the response starts)."""
        at_once = settings.CHAT_TURN_STARTS_AT_ONCE
        if at_once <= 0 or not self.is_turn_start(scope):
            yield send
            return
        semaphore = self._semaphore(at_once)
        try:
            await asyncio.wait_for(semaphore.acquire(), WAIT_SECONDS)
        except TimeoutError:
            yield send
            return
        held = True

        def free() -> None:
            nonlocal held
            if held:
                held = False
                semaphore.release()

        timer = asyncio.get_running_loop().call_later(HOLD_SECONDS, free)

        async def send_and_free(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                free()
            await send(message)

        try:
            yield send_and_free
        finally:
            timer.cancel()
            free()
