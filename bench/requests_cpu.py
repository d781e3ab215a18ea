"""CPU time and thread trips per request, in-process, through the real ASGI application.

`python bench/requests_cpu.py` builds a fresh SQLite database, signs a user in, then sends
`--requests` requests of each kind through `bsepar_panel.asgi.application` on one event loop
(httpx's ASGI transport: no server, no sockets), `--concurrency` at a time, and prints per kind
the process CPU time per request (all threads, from getrusage, so the figure does not depend
on what else runs on the machine as wall time does), the thread trips per request (every
call the loop hands to a thread goes through its public `run_in_executor`) and the threads
started per request (`threading.Thread.start`). Kinds: the settings
page, a chat turn refused by its checks (a blank message: middleware, the user, the turn's
checks; no provider), and a whole chat turn (`turn`: a new conversation with one message,
streamed from the fake provider, tests/fakes/server.py, run as a process of its own so its CPU
is not counted; 50 pieces, `--word-delay` apart (0: as fast as it can), read to the end). `--kinds` picks some of them;
`--profile FILE` writes a cProfile of the measured requests (`python -m pstats FILE`): the
event loop's thread and the database threads' jobs (core.db), each profiled in its own thread.
`--root` runs another tree's code (before/after comparisons).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import re
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def sign_in(fake_url: str) -> tuple[str, int]:
    """A fresh database with one user and an OpenAI key pointing at the fake: that user's
    session cookie and the key's id."""
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.test import Client

    from api_manager.models import ProviderKey

    call_command("migrate", verbosity=0)
    call_command("collectstatic", interactive=False, verbosity=0)  # the manifest
    user = User.objects.create_user("bench", password="bench-password-123")
    key = ProviderKey(
        owner=user,
        provider="openai",
        label="bench",
        base_url=f"{fake_url}/v1",
        default_model="gpt-4o-mini",
    )
    key.set_secret("sk-proj-benchbenchbench0001")
    key.save()
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value, key.pk


async def whole_turn(http, key: int):  # type: ignore[no-untyped-def]
    """A new conversation's turn, read to its end; its `done` event must have arrived."""
    response = await http.post("/ai-chat/stream/", data={"message": "[[long]] hi", "key": key})
    assert "event: done" in response.text, response.text[-500:]
    return response


async def measure(args: argparse.Namespace, session: str, key: int) -> dict:
    import logging

    import httpx

    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise

    from bsepar_panel.asgi import application

    loop = asyncio.get_running_loop()
    trips = 0
    original = loop.run_in_executor

    def counting(executor, func, *a):  # type: ignore[no-untyped-def]
        nonlocal trips
        trips += 1
        return original(executor, func, *a)

    loop.run_in_executor = counting  # type: ignore[method-assign]
    started = 0
    start_thread = threading.Thread.start

    def counting_start(thread):  # type: ignore[no-untyped-def]
        nonlocal started
        started += 1
        return start_thread(thread)

    threading.Thread.start = counting_start  # type: ignore[method-assign]
    results = {}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=application), base_url="https://panel.example.com"
    ) as http:
        http.cookies.set("sessionid", session)
        page = await http.get("/ai-chat/")
        assert page.status_code == 200, (page.status_code, page.headers, page.text[:300])
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        http.headers.update({"X-CSRFToken": token, "Referer": "https://panel.example.com/"})
        kinds = {
            "settings page": lambda: http.get("/api-manager/settings/"),
            "refused turn": lambda: http.post("/ai-chat/stream/", data={"message": "   "}),
            "turn": lambda: whole_turn(http, key),
        }
        profile = cProfile.Profile() if args.profile else None
        threads: list[cProfile.Profile] = []
        if profile:
            from core import db

            local = threading.local()
            job = db._job

            def profiled_job(func, *a, **kw):  # type: ignore[no-untyped-def]
                if not profile.measuring:  # type: ignore[union-attr]
                    return job(func, *a, **kw)
                if not hasattr(local, "profile"):
                    local.profile = cProfile.Profile()
                    threads.append(local.profile)
                local.profile.enable()
                try:
                    return job(func, *a, **kw)
                finally:
                    local.profile.disable()

            profile.measuring = False  # type: ignore[attr-defined]
            db._job = profiled_job
        for name, send in kinds.items():
            if args.kinds and name not in args.kinds:
                continue
            for _ in range(20):  # warm-up
                await send()
            sem = asyncio.Semaphore(args.concurrency)

            async def one(send=send, sem=sem) -> int:  # type: ignore[no-untyped-def]
                async with sem:
                    return (await send()).status_code

            if profile:
                profile.measuring = True  # type: ignore[attr-defined]
                profile.enable()
            trips, started, cpu0, wall0 = 0, 0, cpu(), time.perf_counter()
            codes = await asyncio.gather(*(one() for _ in range(args.requests)))
            cpu1, wall1 = cpu(), time.perf_counter()
            if profile:
                profile.disable()
                profile.measuring = False  # type: ignore[attr-defined]
            results[name] = {
                "cpu_ms_per_request": (cpu1 - cpu0) * 1000 / args.requests,
                "wall_ms_per_request": (wall1 - wall0) * 1000 / args.requests,
                "trips_per_request": trips / args.requests,
                "threads_started_per_request": started / args.requests,
                "statuses": sorted(set(codes)),
            }
    if profile:
        stats = pstats.Stats(profile)
        for other in threads:
            stats.add(other)
        stats.dump_stats(args.profile)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(ROOT))
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--kinds", nargs="+", default=[], help="settings page, refused turn, turn")
    parser.add_argument("--profile", default="", help="write a cProfile of the measured requests")
    parser.add_argument(
        "--word-delay", type=float, default=0.0, help="the fake's seconds between pieces"
    )
    args = parser.parse_args()
    sys.path.insert(0, args.root)
    os.chdir(args.root)
    from tests import stack

    tmp = tempfile.mkdtemp(prefix="bsepar-cpu-")
    port = stack.free_port()
    fake = stack.Process(
        [
            sys.executable,
            "-m",
            "tests.fakes.server",
            "--port",
            str(port),
            "--word-delay",
            str(args.word_delay),
            "--long-words",
            "50",
        ],
        dict(os.environ),
    )
    try:
        fake_url = f"http://127.0.0.1:{port}"
        stack.wait_http(f"{fake_url}/_fake/stats")
        os.environ.update(
            stack.panel_env(
                f"sqlite:///{tmp}/bench.sqlite3",
                None,
                f"{tmp}/static",
                AXES_FAILURE_LIMIT="1000",
                PROVIDER_PRIVATE_HOSTS=f"127.0.0.1:{port}",  # the fake is on loopback
                CHAT_MAX_RUNNING_REPLIES="100000",
            )
        )
        import django

        django.setup()
        results = asyncio.run(measure(args, *sign_in(fake_url)))
    finally:
        fake.stop()
    print(json.dumps({"root": args.root, "concurrency": args.concurrency, **results}))


if __name__ == "__main__":
    main()
