"""The fake provider's Stop-timing aids: an endless reply and per-stream close times."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.fakes.server import FakeProviderServer


@pytest.fixture
def endless_fake():
    server = FakeProviderServer(word_delay=0.05, long_words=3, cancel_on_disconnect=True).start()
    yield server
    server.stop()


def _stream(server: FakeProviderServer, text: str):
    return httpx.stream(
        "POST",
        f"{server.openai_url}/chat/completions",
        json={
            "model": "gpt-4o-mini",
            "stream": True,
            "max_completion_tokens": 5,
            "messages": [{"role": "user", "content": text}],
        },
        headers={"Authorization": "Bearer sk-proj-fake0001"},
        timeout=10,
    )


def test_an_endless_reply_goes_on_and_its_close_is_timed_at_once(endless_fake):
    pieces = 0
    with _stream(endless_fake, "[[endless]] stream-7") as response:
        for line in response.iter_lines():
            if '"content": "word' in line:
                pieces += 1
                if pieces == 12:  # past long_words and the request's cap
                    closed = time.time_ns()  # leaving the loop closes the connection
                    break
    deadline = time.monotonic() + 5
    while "[[endless]] stream-7" not in endless_fake.closed_streams:
        assert time.monotonic() < deadline, "the fake never saw the stream close"
        time.sleep(0.005)
    seen = endless_fake.closed_streams["[[endless]] stream-7"]
    # Seen at once (handler cancellation), not at the next piece 50 ms later.
    assert 0 <= (seen - closed) / 1e6 < 40
    assert endless_fake.open_streams == 0
    assert endless_fake.completed_streams == 0


def test_other_replies_are_unchanged(endless_fake):
    with _stream(endless_fake, "[[long]]") as response:
        words = sum('"content": "word' in line for line in response.iter_lines())
    assert words == 3
    assert endless_fake.completed_streams == 1
    assert endless_fake.closed_streams == {}
