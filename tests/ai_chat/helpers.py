"""Helpers for driving the stream endpoint with Django's async test client."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from django.test import AsyncClient

STREAM = "/ai-chat/stream/"


def parse_events(raw: str) -> list[tuple[str, Any]]:
    """Parse server-sent events; comments (keep-alives) come back as ("comment", text)."""
    events: list[tuple[str, Any]] = []
    for block in raw.split("\n\n"):
        if not block.strip():
            continue
        name, data = "message", []
        for line in block.split("\n"):
            if line.startswith(":"):
                events.append(("comment", line[1:].strip()))
            elif line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())
        if data:
            events.append((name, json.loads("\n".join(data))))
    return events


async def client_for(user) -> AsyncClient:
    client = AsyncClient()
    await client.aforce_login(user)
    return client


async def read_all(response) -> str:
    parts = []
    async for chunk in response.streaming_content:
        parts.append(chunk.decode() if isinstance(chunk, bytes) else chunk)
    return "".join(parts)


async def stream(client: AsyncClient, **data: Any):
    """POST to the stream endpoint; return (response, events) — events empty for a 4xx."""
    response = await client.post(STREAM, data)
    if response.status_code != 200:
        return response, []
    return response, parse_events(await read_all(response))


async def read_until_deltas(response, deltas: int = 3) -> tuple[asyncio.Task, list[str]]:
    """Read a streaming response in the background, as a browser would, and return once
    `deltas` delta events have arrived: the task (still reading, to await or cancel) and the
    list of chunks it keeps appending to."""
    received: list[str] = []
    enough = asyncio.Event()

    async def browser() -> None:
        async for chunk in response.streaming_content:
            received.append(chunk.decode() if isinstance(chunk, bytes) else chunk)
            if sum(1 for c in received if "event: delta" in c) >= deltas:
                enough.set()

    task = asyncio.create_task(browser())
    await asyncio.wait_for(enough.wait(), 10)
    return task, received
