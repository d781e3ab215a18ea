"""Chat turns start in order of arrival, CHAT_TURN_STARTS_AT_ONCE at a time per worker
(ai_chat/turn_gate.py), through the ASGI application the workers run (bsepar_panel/asgi.py).

Django's handler is replaced by a stand-in that records when each request is handled and
when it starts its response: what is under test is which requests the application lets in,
and when."""

from __future__ import annotations

import asyncio
import time

import pytest

from ai_chat import turn_gate
from bsepar_panel import asgi

STREAM = "/ai-chat/stream/"


class Handler:
    """Django's handler as the gate sees it: a request is handled for `work` seconds before
    its response starts (None: it never starts one, until `release`), then streams for
    `stream` seconds more."""

    def __init__(self, work: float | None = 0.05, stream: float = 0.0) -> None:
        self.work, self.stream = work, stream
        self.entered: list[tuple[str, float]] = []
        self.started: list[tuple[str, float]] = []
        self.ended: list[tuple[str, float]] = []
        self.inside = 0
        self.most_inside = 0
        self.release = asyncio.Event()

    async def __call__(self, scope, receive, send) -> None:
        name = scope["name"]
        self.entered.append((name, time.monotonic()))
        self.inside += 1
        self.most_inside = max(self.most_inside, self.inside)
        try:
            if scope.get("fail"):
                raise RuntimeError("the view failed")
            if self.work is None:
                await self.release.wait()
            else:
                await asyncio.sleep(self.work)
            await send({"type": "http.response.start", "status": 200, "headers": []})
            self.inside -= 1
            self.started.append((name, time.monotonic()))
            await asyncio.sleep(self.stream)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            self.ended.append((name, time.monotonic()))
        except BaseException:
            self.inside -= 1
            raise


def request(name: str, method: str = "POST", path: str = STREAM, **extra):
    scope = {"type": "http", "method": method, "path": path, "name": name, **extra}

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        pass

    return asgi.application(scope, receive, send)


@pytest.fixture
def handler(monkeypatch):
    # No turn here waits long enough to be let in by the wait's bound, unless a test says so.
    monkeypatch.setattr(turn_gate, "WAIT_SECONDS", 5.0)

    def install(**kwargs) -> Handler:
        stand_in = Handler(**kwargs)
        monkeypatch.setattr(asgi, "_handle_request", stand_in)
        return stand_in

    return install


async def burst(names: list[str], **extra) -> None:
    tasks = []
    for name in names:
        tasks.append(asyncio.create_task(request(name, **extra)))
        await asyncio.sleep(0.002)  # a definite order of arrival
    await asyncio.gather(*tasks)


async def test_a_burst_of_turns_starts_one_at_a_time_in_order_of_arrival(settings, handler):
    settings.CHAT_TURN_STARTS_AT_ONCE = 1
    h = handler(work=0.03)
    await burst(["a", "b", "c", "d"])
    assert h.most_inside == 1
    assert [name for name, _ in h.entered] == ["a", "b", "c", "d"]
    # Each one enters once the one before has started its response, not before.
    for (_, started), (_, entered) in zip(h.started, h.entered[1:], strict=False):
        assert entered >= started


async def test_without_the_gate_they_all_start_at_once(settings, handler):
    settings.CHAT_TURN_STARTS_AT_ONCE = 0
    h = handler(work=0.03)
    await burst(["a", "b", "c", "d"])
    assert h.most_inside == 4


async def test_the_limit_is_the_setting(settings, handler):
    settings.CHAT_TURN_STARTS_AT_ONCE = 2
    h = handler(work=0.03)
    await burst(["a", "b", "c", "d", "e"])
    assert h.most_inside == 2


async def test_a_place_is_freed_when_the_response_starts_not_when_the_reply_ends(settings, handler):
    settings.CHAT_TURN_STARTS_AT_ONCE = 1
    h = handler(work=0.01, stream=0.3)
    await burst(["a", "b", "c"])
    ended = dict(h.ended)
    entered = dict(h.entered)
    # Each turn streams for 0.3 s; the next one started long before that.
    assert entered["b"] < ended["a"] - 0.2
    assert entered["c"] < ended["b"] - 0.2


async def test_a_slow_turn_start_holds_the_next_ones_only_briefly(settings, handler, monkeypatch):
    settings.CHAT_TURN_STARTS_AT_ONCE = 1
    monkeypatch.setattr(turn_gate, "HOLD_SECONDS", 0.1)
    h = handler(work=None)  # no response starts until released
    stuck = asyncio.create_task(request("stuck"))
    await asyncio.sleep(0.01)
    others = [asyncio.create_task(request(name)) for name in ("x", "y")]
    await asyncio.sleep(0.5)
    # Both went in although "stuck" has still not answered, each after the one before it
    # had held the place for HOLD_SECONDS.
    assert [name for name, _ in h.entered] == ["stuck", "x", "y"]
    assert not stuck.done()
    entered = dict(h.entered)
    assert entered["x"] - entered["stuck"] >= 0.1
    assert entered["y"] - entered["x"] >= 0.1
    h.release.set()
    await asyncio.gather(stuck, *others)


async def test_a_failed_turn_frees_its_place(settings, handler):
    settings.CHAT_TURN_STARTS_AT_ONCE = 1
    h = handler(work=0.01)
    with pytest.raises(RuntimeError):
        await request("fails", fail=True)
    started = time.monotonic()
    await request("next")
    # Not held until HOLD_SECONDS ran out: the failure gave the place back.
    assert dict(h.entered)["next"] - started < turn_gate.HOLD_SECONDS / 2


async def test_pages_stop_and_reattach_do_not_wait_for_turn_starts(settings, handler):
    settings.CHAT_TURN_STARTS_AT_ONCE = 1
    h = handler(work=None)
    stuck = asyncio.create_task(request("turn"))
    await asyncio.sleep(0.01)
    h.work = 0.0
    await asyncio.wait_for(
        asyncio.gather(
            request("page", method="GET", path="/"),
            request("reattach", method="GET", path="/ai-chat/stream/7/"),
            request("stop", path="/ai-chat/messages/7/stop/"),
            request("stream-get", method="GET", path=STREAM),
        ),
        timeout=turn_gate.HOLD_SECONDS / 2,
    )
    assert not stuck.done()
    h.release.set()
    await stuck


async def test_no_turn_waits_for_its_place_longer_than_the_bound(settings, handler, monkeypatch):
    """Under a burst larger than a worker starts in WAIT_SECONDS the rest go in together, as
    without the gate."""
    settings.CHAT_TURN_STARTS_AT_ONCE = 1
    h = handler(work=None)
    monkeypatch.setattr(turn_gate, "HOLD_SECONDS", 5.0)
    monkeypatch.setattr(turn_gate, "WAIT_SECONDS", 0.1)
    stuck = asyncio.create_task(request("stuck"))
    await asyncio.sleep(0.01)
    others = [asyncio.create_task(request(name)) for name in ("x", "y")]
    await asyncio.sleep(0.05)
    assert [name for name, _ in h.entered] == ["stuck"]  # still waiting
    await asyncio.sleep(0.2)
    assert sorted(name for name, _ in h.entered) == ["stuck", "x", "y"]
    assert h.most_inside == 3
    h.release.set()
    await asyncio.gather(stuck, *others)
