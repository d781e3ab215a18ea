"""CPU time and thread trips per request, in-process, through the real ASGI application.

`python bench/requests_cpu.py` builds a fresh SQLite database, signs a user in, then sends
`--requests` requests of each kind through `bsepar_panel.asgi.application` on one event loop
(httpx's ASGI transport: no server, no sockets), `--concurrency` at a time, and prints per kind
the process CPU time per request (all threads, from getrusage, so the figure does not depend
on what else runs on the machine as wall time does) and the thread trips per request (every
call the loop hands to a thread goes through its public `run_in_executor`). Kinds: the settings
page, and a chat turn refused by its checks (a blank message: middleware, the user, the turn's
checks; no provider). `--root` runs another tree's code (before/after comparisons).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def sign_in() -> str:
    """A fresh database with one user; that user's session cookie."""
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.test import Client

    call_command("migrate", verbosity=0)
    call_command("collectstatic", interactive=False, verbosity=0)  # the manifest
    user = User.objects.create_user("bench", password="bench-password-123")
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


async def measure(args: argparse.Namespace, session: str) -> dict:
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
        }
        for name, send in kinds.items():
            for _ in range(20):  # warm-up
                await send()
            sem = asyncio.Semaphore(args.concurrency)

            async def one(send=send, sem=sem) -> int:  # type: ignore[no-untyped-def]
                async with sem:
                    return (await send()).status_code

            trips, cpu0, wall0 = 0, cpu(), time.perf_counter()
            codes = await asyncio.gather(*(one() for _ in range(args.requests)))
            cpu1, wall1 = cpu(), time.perf_counter()
            results[name] = {
                "cpu_ms_per_request": (cpu1 - cpu0) * 1000 / args.requests,
                "wall_ms_per_request": (wall1 - wall0) * 1000 / args.requests,
                "trips_per_request": trips / args.requests,
                "statuses": sorted(set(codes)),
            }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(ROOT))
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=1)
    args = parser.parse_args()
    sys.path.insert(0, args.root)
    os.chdir(args.root)
    from tests import stack

    tmp = tempfile.mkdtemp(prefix="bsepar-cpu-")
    os.environ.update(
        stack.panel_env(
            f"sqlite:///{tmp}/bench.sqlite3", None, f"{tmp}/static", AXES_FAILURE_LIMIT="1000"
        )
    )
    import django

    django.setup()
    results = asyncio.run(measure(args, sign_in()))
    print(json.dumps({"root": args.root, "concurrency": args.concurrency, **results}))


if __name__ == "__main__":
    main()
