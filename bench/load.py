"""Load benchmark: the panel's streaming relay against a direct call to the same provider.

`make bench` runs it. It starts the fake provider (tests/fakes/server.py) and the panel as
production runs it (gunicorn + uvicorn workers, deploy/gunicorn.conf.py) on a fresh SQLite
database, signs in, then measures, with asyncio + httpx and no browser:

- time to first token through the panel and straight to the fake, interleaved in one run,
  at several concurrencies: the panel's *added* time is the difference;
- per-token relay delay: every piece carries its send time (wall clock, ns);
- streams completed and errors; CPU time and memory of the panel's workers per stream;
- requests/s and time to first byte of the dashboard, chat and settings pages, alone and
  while 200 streams run;
- many idle-but-open streams (a slow first token);
- Stop frees the provider stream: N replies of an endless fake reply, all running, stopped
  through nginx (one by one, then the rest at once); Stop sent/answered → the fake saw the
  stream closed, the saved status, and which worker the Stop landed on.

`--quick`, `--stop` and `--idle-only` run one part (in rounds, for before/after comparisons)
and write their results to the file given, leaving RESULTS.md alone.

Results go to bench/results.json, the table at the top of bench/RESULTS.md and a plot
bench/added_latency.png. Everything listens on 127.0.0.1; every loop is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import stack  # noqa: E402

BENCH = ROOT / "bench"
MARKER = "<!-- analysis below is written by hand and kept by bench/load.py -->"
PAGES = {"dashboard": "/", "chat": "/ai-chat/", "settings": "/api-manager/settings/"}


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


# -- setting up ---------------------------------------------------------------------------------


SETUP = """
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from django.contrib.auth.models import User
from api_manager.models import ProviderKey
user = User.objects.create_user("bench", password="bench-password-123")
key = ProviderKey(owner=user, provider="openai", label="bench", base_url="{base_url}", default_model="gpt-4o-mini")
key.set_secret("sk-proj-benchbenchbench0001")
key.save()
print(key.pk)
"""


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def fresh_postgres(url: str) -> None:
    """Drop and create the database of a postgres:// URL (the bench user is created anew)."""
    import psycopg

    name = url.rsplit("/", 1)[1].split("?")[0]
    admin = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


REPLIES = """
import django, json, sys
django.setup()
from ai_chat.models import Message
ids = json.loads(sys.argv[1])
rows = Message.objects.filter(pk__in=ids).values_list("pk", "status", "stop_requested", "content")
print(json.dumps({pk: [status, flagged, len(content)] for pk, status, flagged, content in rows}))
"""


class Stack:
    def __init__(
        self,
        workers: int,
        word_delay: float,
        panel_cpus: str = "",
        stop: bool = False,
        long_words: int = 50,
    ) -> None:
        """The fake provider (`[[long]]` replies of `long_words` pieces, `word_delay` s apart),
        a fresh database with the bench user and its key (`key`), the panel's environment
        (`env`, static files in `static_root`) and, unless `workers` is 0, a panel with that
        many workers. `stop`: for the Stop section: the fake sees a closed stream at once (its
        `--cancel-on-disconnect`, which older trees' fakes lack) and nginx runs in front."""
        raise_fd_limit()
        self.tmp = Path(tempfile.mkdtemp(prefix="bsepar-bench-"))
        self.nginx = None
        self.fake_port = stack.free_port()
        self.fake = stack.Process(
            [
                sys.executable,
                "-m",
                "tests.fakes.server",
                "--port",
                str(self.fake_port),
                "--word-delay",
                str(word_delay),
                "--long-words",
                str(long_words),
                "--slow-first-token",
                "30",
                *(["--cancel-on-disconnect"] if stop else []),
            ],
            dict(os.environ),
        )
        stack.wait_http(f"{self.fake_url}/_fake/stats")
        database = os.environ.get("BENCH_DATABASE_URL") or f"sqlite:///{self.tmp / 'bench.sqlite3'}"
        if database.startswith("postgres"):
            fresh_postgres(database)
        if cache := os.environ.get("BENCH_CACHE_URL"):
            db_number = int(cache.rsplit("/", 1)[1] or 0)
            assert stack.redis_url(db_number), f"no Redis at {cache}"  # flushes that database
        self.static_root = static_root = str(self.tmp / "static")
        self.env = stack.panel_env(
            database,
            os.environ.get("BENCH_CACHE_URL"),
            static_root,
            PROVIDER_TIMEOUT="60",
            AXES_FAILURE_LIMIT="1000",
            PROVIDER_PRIVATE_HOSTS=f"127.0.0.1:{self.fake_port}",  # the fake is on loopback
            # One bench user runs every stream: the per-user cap would refuse all but three.
            CHAT_MAX_RUNNING_REPLIES="100000",
        )
        stack.collectstatic(static_root, self.env)
        out = subprocess.run(
            [sys.executable, "-c", SETUP.format(base_url=f"{self.fake_url}/v1")],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        )
        self.key = int(out.stdout.strip().splitlines()[-1])
        self.panel = stack.Panel(self.env, workers=workers, cpus=panel_cpus) if workers else None
        if stop:
            self.nginx = stack.Nginx([self.panel.port], static_root)

    def replies(self, ids: list[int]) -> dict[int, list]:
        """{reply id: [status, stop_requested, length of the saved text]}, from the database."""
        out = subprocess.run(
            [sys.executable, "-c", REPLIES, json.dumps(ids)],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        )
        return {int(k): v for k, v in json.loads(out.stdout.strip().splitlines()[-1]).items()}

    @property
    def fake_url(self) -> str:
        return f"http://127.0.0.1:{self.fake_port}"

    def worker_pids(self) -> list[int]:
        out = subprocess.run(
            ["pgrep", "-P", str(self.panel.proc.pid)], capture_output=True, text=True
        )
        return [int(p) for p in out.stdout.split()]

    def stop(self) -> None:
        if self.nginx is not None:
            self.nginx.stop()
        if self.panel is not None:
            self.panel.stop()
        self.fake.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def speed_us() -> float:
    """A yardstick of this machine's single-core Python speed: µs for sum(range(1000))."""
    import timeit

    return min(timeit.repeat("sum(range(1000))", number=2000, repeat=5)) / 2000 * 1e6


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


# -- clients ------------------------------------------------------------------------------------


class Session:
    """A signed-in panel session (cookies sent as a header: they are Secure, this hop is HTTP)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.cookies: dict[str, str] = {}
        self.token = ""

    def headers(self) -> dict[str, str]:
        return {
            "Host": stack.HOST,
            "X-Forwarded-Proto": "https",
            "Referer": f"https://{stack.HOST}/",
            "Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items()),
            "X-CSRFToken": self.token,
        }

    async def sign_in(self, client: httpx.AsyncClient) -> None:
        page = await client.get(f"{self.base}/login/", headers=self.headers())
        self.cookies.update(page.cookies)
        self.token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        response = await client.post(
            f"{self.base}/login/",
            data={
                "username": "bench",
                "password": "bench-password-123",
                "csrfmiddlewaretoken": self.token,
            },
            headers=self.headers(),
        )
        assert response.status_code == 302, response.text[:300]
        self.cookies.update(response.cookies)
        page = await client.get(f"{self.base}/ai-chat/", headers=self.headers())
        self.cookies.update(page.cookies)
        self.token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)


def stamps(text: str) -> list[int]:
    return [int(t) for t in re.findall(r"t(\d{19})", text)]


async def panel_stream(client, session, key, message, result, close_after=None):
    started = time.monotonic()
    try:
        async with client.stream(
            "POST",
            f"{session.base}/ai-chat/stream/",
            data={"message": message, "key": key},
            headers=session.headers(),
        ) as response:
            if response.status_code != 200:
                result["errors"] += 1
                return
            tokens = 0
            async for line in response.aiter_lines():
                if line.startswith("data:") and '"text"' in line:
                    now = time.time_ns()
                    if result.get("first") is None:
                        result.setdefault("ttft", []).append((time.monotonic() - started) * 1000)
                        result["first"] = True
                    for sent in stamps(line):
                        result["relay"].append((now - sent) / 1e6)
                    tokens += 1
                    if close_after and tokens >= close_after:
                        result["closed_at"].append(time.time_ns())
                        return
                elif line.startswith("event: done"):
                    result["done"] += 1
                elif line.startswith("event: error"):
                    result["errors"] += 1
    except httpx.HTTPError:
        result["errors"] += 1


async def direct_stream(client, fake_url, message, result):
    started = time.monotonic()
    first = False
    try:
        async with client.stream(
            "POST",
            f"{fake_url}/v1/chat/completions",
            json={
                "model": "gpt-4o-mini",
                "stream": True,
                "messages": [{"role": "user", "content": message}],
                "stream_options": {"include_usage": True},
            },
            headers={"Authorization": "Bearer sk-proj-benchbenchbench0001"},
        ) as response:
            async for line in response.aiter_lines():
                if '"content": "t' in line:
                    now = time.time_ns()
                    if not first:
                        result["ttft"].append((time.monotonic() - started) * 1000)
                        first = True
                    for sent in stamps(line):
                        result["relay"].append((now - sent) / 1e6)
                elif line == "data: [DONE]":
                    result["done"] += 1
    except httpx.HTTPError:
        result["errors"] += 1


def fresh() -> dict:
    return {"ttft": [], "relay": [], "done": 0, "errors": 0, "closed_at": []}


async def concurrency_run(st: Stack, session: Session, n: int) -> dict:
    limits = httpx.Limits(max_connections=4 * n + 10, max_keepalive_connections=4 * n + 10)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        panel, direct = fresh(), fresh()
        pids = st.worker_pids()
        cpu0, rss0 = cpu_seconds(pids), rss_mb(pids)
        own0, fake0 = own_cpu_seconds(), cpu_seconds([st.fake.proc.pid])
        tasks = []
        for _ in range(n):
            # Each panel stream gets its own result slot for "first token".
            slot = {"relay": panel["relay"], "errors": 0, "done": 0, "closed_at": []}
            tasks.append(
                asyncio.create_task(
                    _wrap(panel_stream(client, session, st.key, "[[stamp]]", slot), panel, slot)
                )
            )
            tasks.append(
                asyncio.create_task(direct_stream(client, st.fake_url, "[[stamp]]", direct))
            )
        peak = rss0
        while not all(t.done() for t in tasks):
            await asyncio.sleep(0.25)
            peak = max(peak, rss_mb(pids))
        cpu1 = cpu_seconds(pids)
        own1, fake1 = own_cpu_seconds(), cpu_seconds([st.fake.proc.pid])
    return {
        "n": n,
        "panel_ttft_p50": pct(panel["ttft"], 50),
        "panel_ttft_p99": pct(panel["ttft"], 99),
        "direct_ttft_p50": pct(direct["ttft"], 50),
        "direct_ttft_p99": pct(direct["ttft"], 99),
        "relay_p50": pct(panel["relay"], 50),
        "relay_p99": pct(panel["relay"], 99),
        "direct_relay_p50": pct(direct["relay"], 50),
        "direct_relay_p99": pct(direct["relay"], 99),
        "completed": panel["done"],
        "errors": panel["errors"],
        "direct_completed": direct["done"],
        "cpu_ms_per_stream": (cpu1 - cpu0) * 1000 / n,
        # What shares the panel's cores: this load generator (both streams of a pair) and the fake.
        "client_cpu_ms_per_stream": (own1 - own0) * 1000 / n,
        "fake_cpu_ms_per_stream": (fake1 - fake0) * 1000 / n,
        "mem_kb_per_stream": max(0.0, peak - rss0) * 1024 / n,
    }


async def warm_up(st: Stack, session: Session, rounds: int = 8) -> None:
    """Streams until every worker has served some (its SDK client, connections, caches):
    the measured runs compare warm workers. Which worker accepts a connection is the kernel's
    choice, and five streams started together often all land on one: the other's first
    turns (imports, TLS context, first queries: ~40 ms of CPU more than a warm turn) then fell
    into the first measured run."""
    for _ in range(rounds):
        pids = st.worker_pids()
        before = {pid: cpu_seconds([pid]) for pid in pids}
        await concurrency_run(st, session, 10)
        if all(cpu_seconds([pid]) - before[pid] >= 0.05 for pid in pids):
            return
    print("warm-up: a worker served no stream in", rounds, "rounds", flush=True)


async def _wrap(coro, total, slot):
    await coro
    total.setdefault("ttft", []).extend(slot.get("ttft", []))
    total["done"] += slot["done"]
    total["errors"] += slot["errors"]
    total["closed_at"].extend(slot["closed_at"])


async def pages_run(
    session: Session, seconds: float, concurrency: int = 16, request_timeout: float = 30
) -> dict:
    """Page TTFB and requests per second: `concurrency` clients for `seconds` per page. The
    base may be nginx over TLS (its test certificate is not checked)."""
    results = {}
    async with httpx.AsyncClient(timeout=request_timeout, verify=False) as client:
        for name, path in PAGES.items():
            ttfb: list[float] = []
            errors = 0
            deadline = time.monotonic() + seconds

            async def worker(path=path, deadline=deadline, ttfb=ttfb):
                nonlocal errors
                while time.monotonic() < deadline:
                    started = time.monotonic()
                    async with client.stream(
                        "GET", session.base + path, headers=session.headers()
                    ) as response:
                        first = True
                        async for _ in response.aiter_raw():
                            if first:
                                ttfb.append((time.monotonic() - started) * 1000)
                                first = False
                        if response.status_code != 200:
                            errors += 1

            await asyncio.gather(*(worker() for _ in range(concurrency)))
            results[name] = {
                "rps": len(ttfb) / seconds,
                "ttfb_p50": pct(ttfb, 50),
                "ttfb_p99": pct(ttfb, 99),
                "errors": errors,
            }
    return results


async def pages_under_load(st: Stack, session: Session, streams: int, seconds: float) -> dict:
    limits = httpx.Limits(max_connections=streams + 10)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        slots = [fresh() for _ in range(streams)]
        tasks = [
            asyncio.create_task(panel_stream(client, session, st.key, "[[long]]", slot))
            for slot in slots
        ]
        await asyncio.sleep(1.0)
        pages = await pages_run(session, seconds)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return pages


async def idle_run(st: Stack, session: Session, n: int, hold: float) -> dict:
    """`n` streams at once whose first token comes after 30 s: how many are open at the
    provider at once within `hold` seconds. Also what limits the ramp: when each step of open
    streams was reached, the CPU seconds of the panel's workers, of this client and of the fake
    over the hold, the panel's threads at their peak, and each worker's connections to the
    provider when the most streams were open (an SDK client holds at most 1,000 at once, so a
    worker accepting more than 1,000 of the streams keeps the rest waiting)."""
    limits = httpx.Limits(max_connections=n + 10)
    opened = 0
    ramp: list[tuple[float, int]] = []
    pids = st.worker_pids()
    threads = 0
    split: list[int] = []
    cpu0, own0, fake0 = cpu_seconds(pids), own_cpu_seconds(), cpu_seconds([st.fake.proc.pid])
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        results = [fresh() for _ in range(n)]
        started = time.monotonic()
        tasks = [
            asyncio.create_task(panel_stream(client, session, st.key, "[[slow]] idle", r))
            for r in results
        ]
        deadline = started + hold
        while time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            stats = (await client.get(f"{st.fake_url}/_fake/stats")).json()
            if stats["open_streams"] > opened:
                split = provider_connections(pids, st.fake_port)
            opened = max(opened, stats["open_streams"])
            ramp.append((round(time.monotonic() - started, 1), stats["open_streams"]))
            threads = max(threads, thread_count(pids))
        cpu1, own1, fake1 = cpu_seconds(pids), own_cpu_seconds(), cpu_seconds([st.fake.proc.pid])
        errors = sum(r["errors"] for r in results)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    # The seconds at which 500, 1,000, 1,500 streams were first open at the provider.
    reached = {
        str(step): next((t for t, count in ramp if count >= step), None)
        for step in (500, 1000, 1500, n)
    }
    return {
        "asked": n,
        "open_at_provider": opened,
        "errors_while_open": errors,
        "reached_at_s": reached,
        "panel_cpu_s": round(cpu1 - cpu0, 2),
        "client_cpu_s": round(own1 - own0, 2),
        "fake_cpu_s": round(fake1 - fake0, 2),
        "panel_threads_peak": threads,
        "provider_connections_per_worker": split,
        "ramp": ramp,
    }


def provider_connections(pids: list[int], port: int) -> list[int]:
    """How many TCP connections each of `pids` has open to `port` (ss)."""
    out = subprocess.run(
        ["ss", "-tnpH", "state", "established", "dport", f"= :{port}"],
        capture_output=True,
        text=True,
    ).stdout
    return [out.count(f"pid={pid},") for pid in pids]


def thread_count(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            total += len(os.listdir(f"/proc/{pid}/task"))
        except FileNotFoundError:
            pass
    return total


def stop_path() -> str:
    """How a Stop that lands on another worker reaches the reply's worker in this setup."""
    if os.environ.get("BENCH_CACHE_URL"):
        return "Redis pub/sub"
    if (os.environ.get("BENCH_DATABASE_URL") or "").startswith("postgres"):
        return "PostgreSQL NOTIFY"
    return "SQLite poll"


async def stop_run(st: Stack, session: Session, n: int, sequential: int = 0) -> dict:
    """`n` replies of an endless provider stream started together; once every one has sent a
    piece, each is stopped (`POST .../stop/` through nginx; it lands on whichever worker nginx
    picks): the first `sequential` one by one (each after the last was answered, 0.1 s apart,
    the others still running), then the rest all at once (a burst). Per reply: when the Stop was sent and answered, when the fake saw the
    provider's stream closed, what the attached stream's `done` said and what the database
    holds (status; `stop_requested` is set only when the Stop came from another worker)."""
    stats_url = f"{st.fake_url}/_fake/stats"
    tag = time.time_ns()
    slots = [
        {"text": f"[[endless]] stop {tag} {i}", "reply": None, "received": 0, "error": None}
        for i in range(n)
    ]
    running = asyncio.Event()
    started = 0
    limits = httpx.Limits(max_connections=2 * n + 10)
    async with httpx.AsyncClient(timeout=60, limits=limits, verify=False) as client:
        # Earlier sections' replies go on after their clients left (replies are jobs): wait
        # until none is open at the provider, and the workers are quiet, so that only this
        # run's streams are timed.
        async with httpx.AsyncClient(timeout=10) as fake:
            for _ in range(240):  # at most two minutes
                if not (await fake.get(stats_url)).json()["open_streams"]:
                    break
                await asyncio.sleep(0.5)
        pids = st.worker_pids()
        for _ in range(120):  # at most a minute
            busy = cpu_seconds(pids)
            await asyncio.sleep(0.5)
            if cpu_seconds(pids) - busy < 0.05:
                break

        async def reply(slot: dict) -> None:
            nonlocal started
            counted = False
            try:
                async with client.stream(
                    "POST",
                    f"{session.base}/ai-chat/stream/",
                    data={"message": slot["text"], "key": st.key},
                    headers=session.headers(),
                ) as response:
                    if response.status_code != 200:
                        slot["error"] = f"HTTP {response.status_code}"
                        return
                    event = ""
                    async for line in response.aiter_lines():
                        if line.startswith("event:"):
                            event = line[6:].strip()
                        elif line.startswith("data:"):
                            data = json.loads(line[5:])
                            if event == "meta":
                                slot["reply"] = data["message"]
                            elif event == "delta":
                                slot["received"] += len(data["text"])
                                if not counted:
                                    counted = True
                                    started += 1
                                    if started == n:
                                        running.set()
                            elif event in ("done", "error"):
                                slot["ended"] = event
                                slot["done_status"] = data.get("status")
                                return
            except httpx.HTTPError as exc:
                slot["error"] = type(exc).__name__
            finally:
                if not counted:
                    started += 1
                    if started == n:
                        running.set()

        async def stop(slot: dict) -> None:
            slot["sent"] = time.time_ns()
            answer = await client.post(
                f"{session.base}/ai-chat/messages/{slot['reply']}/stop/",
                headers=session.headers(),
            )
            slot["answered"] = time.time_ns()
            if answer.status_code != 200:
                slot["error"] = f"Stop: HTTP {answer.status_code}"

        async def stop_all() -> None:
            await asyncio.wait_for(running.wait(), 120)
            ready = [slot for slot in slots if slot["reply"] and not slot["error"]]
            for slot in ready[:sequential]:
                slot["mode"] = "sequential"
                await stop(slot)
                await asyncio.sleep(0.1)
            for slot in ready[sequential:]:
                slot["mode"] = "burst"
            await asyncio.gather(*(stop(slot) for slot in ready[sequential:]))

        streams = [asyncio.create_task(reply(slot)) for slot in slots]
        await stop_all()
        await asyncio.wait(streams, timeout=60)
        for task in streams:
            task.cancel()
        await asyncio.sleep(0.5)
        async with httpx.AsyncClient(timeout=10) as fake:
            closed = (await fake.get(stats_url)).json()["closed_streams"]
    saved = st.replies([slot["reply"] for slot in slots if slot["reply"]])
    rows = []
    for slot in slots:
        row = {
            "reply": slot["reply"],
            "error": slot["error"],
            "received": slot["received"],
            "ended": slot.get("ended"),
            "done_status": slot.get("done_status"),
            "mode": slot.get("mode"),
        }
        if slot["reply"] in saved:
            status, flagged, length = saved[slot["reply"]]
            row.update(
                status=status, saved_chars=length, path="other worker" if flagged else "same worker"
            )
        if slot["text"] in closed and slot.get("answered"):
            row["sent_to_closed_ms"] = (closed[slot["text"]] - slot["sent"]) / 1e6
            row["answered_to_closed_ms"] = (closed[slot["text"]] - slot["answered"]) / 1e6
            row["answer_ms"] = (slot["answered"] - slot["sent"]) / 1e6
        rows.append(row)
    return summarize_stops(n, rows)


def summarize_stops(n: int, rows: list[dict]) -> dict:
    """p50/p99 of Stop sent → provider stream closed, and Stop answered → closed, overall and by
    the worker the Stop landed on; and whether every reply was saved `stopped`."""
    timed = [r for r in rows if "sent_to_closed_ms" in r]
    result = {
        "n": n,
        "replies": len(rows),
        "errors": sum(1 for r in rows if r["error"]),
        "freed": len(timed),
        "saved_stopped": sum(1 for r in rows if r.get("status") == "stopped"),
        "done_stopped": sum(1 for r in rows if r.get("done_status") == "stopped"),
        # What arrived at the client is in the saved reply (it may hold a piece or two more).
        "saved_all_received": sum(1 for r in rows if r.get("saved_chars", -1) >= r["received"] > 0),
        "path_other_worker": stop_path(),
        "rows": rows,
    }
    for label, subset in (
        ("all", timed),
        ("same", [r for r in timed if r.get("path") == "same worker"]),
        ("other", [r for r in timed if r.get("path") == "other worker"]),
        ("sequential", [r for r in timed if r.get("mode") == "sequential"]),
        ("burst", [r for r in timed if r.get("mode") == "burst"]),
    ):
        result[f"{label}_count"] = len(subset)
        for key in ("sent_to_closed_ms", "answered_to_closed_ms", "answer_ms"):
            values = [r[key] for r in subset]
            result[f"{label}_{key}_p50"] = pct(values, 50)
            result[f"{label}_{key}_p99"] = pct(values, 99)
    return result


# -- report -------------------------------------------------------------------------------------


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory = (
        int(
            next(
                line.split()[1]
                for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")
            )
        )
        // 1024
        // 1024
    )
    return (
        f"{os.cpu_count()} cores ({cpu}), {memory} GiB, Python {platform.python_version()}, "
        f"{platform.platform()}; `sum(range(1000))` takes {speed_us():.1f} µs here"
    )


def report(results: dict) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"Run {results['date']} by `make bench{' BENCH_ARGS=--pin' if results.get('pinned') else ''}` on {results['machine']}. "
        + (
            f"The panel ({results['workers']} gunicorn/uvicorn worker, {results.get('database', 'SQLite')}) is pinned to one core, "
            "the load generator and the fake provider to the other(s): the panel's own figures on one core. "
            if results.get("pinned")
            else f"The load generator, the fake provider and the panel ({results['workers']} gunicorn/uvicorn workers, "
            f"{results.get('database', 'SQLite')}) share this machine, so the figures are pessimistic. "
        )
        + f"The fake sends a 50-piece reply at {1 / results['word_delay']:.0f} pieces/s.",
        "",
        "## Added time to first token (panel minus direct, same run, interleaved)",
        "",
        "| streams | panel p50 | direct p50 | **added p50** | panel p99 | direct p99 | **added p99** | relay p50 | relay p99 | completed | errors | CPU ms/stream | memory KiB/stream | client + fake CPU ms/stream |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in results["concurrency"]:
        added50 = (
            None
            if row["panel_ttft_p50"] is None
            else row["panel_ttft_p50"] - row["direct_ttft_p50"]
        )
        added99 = (
            None
            if row["panel_ttft_p99"] is None
            else row["panel_ttft_p99"] - row["direct_ttft_p99"]
        )
        lines.append(
            f"| {row['n']} | {ms(row['panel_ttft_p50'])} | {ms(row['direct_ttft_p50'])} | **{ms(added50)}** | {ms(row['panel_ttft_p99'])} | "
            f"{ms(row['direct_ttft_p99'])} | **{ms(added99)}** | {ms(row['relay_p50'])} | {ms(row['relay_p99'])} | {row['completed']}/{row['n']} | "
            f"{row['errors']} | {row['cpu_ms_per_stream']:.1f} | {row['mem_kb_per_stream']:.0f} | "
            f"{row.get('client_cpu_ms_per_stream', 0):.1f} + {row.get('fake_cpu_ms_per_stream', 0):.1f} |"
        )
    lines += [
        "",
        "Times in milliseconds. Relay delay: arrival at the client minus the provider's send time of each piece. "
        "CPU ms/stream: the panel's workers; the last column is what the load generator (a panel and a direct "
        "stream per row) and the fake provider spent on the same cores.",
        "",
    ]
    lines += [
        "## Pages (16 concurrent clients)",
        "",
        "| page | req/s alone | TTFB p50 alone | req/s with 200 streams | TTFB p50 with 200 streams |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name in PAGES:
        alone, loaded = results["pages"][name], results["pages_under_load"][name]
        lines.append(
            f"| {name} | {alone['rps']:.0f} | {ms(alone['ttfb_p50'])} | {loaded['rps']:.0f} | {ms(loaded['ttfb_p50'])} |"
        )
    idle, free = results["idle"], results["stop"]
    lines += [
        "",
        "## Idle streams, and Stop",
        "",
        f"- Idle-but-open streams (slow first token): asked {idle['asked']}, open at the provider at once {idle['open_at_provider']}, errors {idle['errors_while_open']}.",
        f"- Stop frees the provider stream (50 replies running; Stop through nginx; Stop sent → the fake sees the stream closed): "
        f"10 stopped one by one: p50 {ms(free['sequential_sent_to_closed_ms_p50'])} ms, p99 {ms(free['sequential_sent_to_closed_ms_p99'])} ms; "
        f"the other 40 at once: p50 {ms(free['burst_sent_to_closed_ms_p50'])} ms, p99 {ms(free['burst_sent_to_closed_ms_p99'])} ms; "
        f"Stop answered → closed p99 {ms(free['all_answered_to_closed_ms_p99'])} ms "
        f"({free['freed']} of {free['replies']} freed, {free['saved_stopped']} saved `stopped`; {free['other_count']} Stops landed on the other worker: {free['path_other_worker']}).",
        "",
        f"![added time to first token against concurrency](added_latency{'-pinned' if results.get('pinned') else ''}.png)",
        "",
    ]
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot")
        return
    rows = results["concurrency"]
    n = [r["n"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(
        n,
        [r["panel_ttft_p50"] - r["direct_ttft_p50"] for r in rows],
        marker="o",
        label="added TTFT p50",
    )
    ax.plot(
        n,
        [r["panel_ttft_p99"] - r["direct_ttft_p99"] for r in rows],
        marker="o",
        label="added TTFT p99",
    )
    ax.plot(n, [r["relay_p99"] for r in rows], marker="x", linestyle="--", label="relay delay p99")
    ax.axhline(8, color="grey", linestyle=":", linewidth=1)
    ax.axhline(30, color="grey", linestyle="-.", linewidth=1)
    ax.text(n[0], 8 * 1.1, "target: added p50 ≤ 8 ms at 50 streams", fontsize=7, color="grey")
    ax.text(n[0], 30 * 1.1, "target: added p99 ≤ 30 ms at 50 streams", fontsize=7, color="grey")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("concurrent streams")
    ax.set_ylabel("milliseconds")
    ax.set_title("bsepar panel: latency added over a direct provider call")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


async def main_async(args) -> dict:
    panel_cpus = ""
    if args.pin:
        # The panel on the last core, the load generator and the fake (started from here, so
        # they inherit it) on the others: the panel's own figures, without the client's CPU.
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) < 2:
            raise SystemExit("--pin needs at least two cores")
        panel_cpus = str(cores[-1])
        os.sched_setaffinity(0, cores[:-1])
    only = args.stop or args.idle_only
    st = Stack(args.workers, args.word_delay, panel_cpus, stop=not (args.quick or args.idle_only))
    try:
        session = Session(st.panel.url)
        async with httpx.AsyncClient(timeout=30) as client:
            await session.sign_in(client)
        results = {
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine(),
            "workers": args.workers,
            "word_delay": args.word_delay,
            "database": "PostgreSQL" if os.environ.get("BENCH_DATABASE_URL") else "SQLite",
            "cache": "Redis" if os.environ.get("BENCH_CACHE_URL") else "database",
            "load_before": os.getloadavg(),
        }
        if st.nginx is not None:
            # The Stop section goes through nginx over TLS, as a browser's Stop does.
            stop_session = Session(st.nginx.url)
            async with httpx.AsyncClient(timeout=30, verify=False) as client:
                await stop_session.sign_in(client)
        if args.stop:
            results["stop_rounds"] = []
            for round_ in range(args.rounds):
                for n in args.stop_streams:
                    # One reply at a time is repeated: a handful of Stops per round.
                    for _ in range(args.single_repeats if n == 1 else 1):
                        row = await stop_run(st, stop_session, n, min(args.stop_sequential, n // 2))
                        row.update(round=round_, load=os.getloadavg())
                        brief = {k: v for k, v in row.items() if k != "rows"}
                        print("stop", json.dumps(brief), flush=True)
                        results["stop_rounds"].append(row)
        if args.idle_only:
            results["idle"] = await idle_run(st, session, args.idle, args.idle_seconds)
            brief = {k: v for k, v in results["idle"].items() if k != "ramp"}
            print("idle", json.dumps(brief), flush=True)
        if only:
            results["load_after"] = os.getloadavg()
            return results
        await warm_up(st, session)
        results["concurrency"] = []
        for n in args.streams:
            row = await concurrency_run(st, session, n)
            print(json.dumps(row), flush=True)
            results["concurrency"].append(row)
        results["pages"] = await pages_run(session, args.page_seconds)
        print("pages", json.dumps(results["pages"]), flush=True)
        if args.quick:
            return results
        results["pages_under_load"] = await pages_under_load(st, session, 200, args.page_seconds)
        print("pages under load", json.dumps(results["pages_under_load"]), flush=True)
        results["idle"] = await idle_run(st, session, args.idle, args.idle_seconds)
        print("idle", json.dumps(results["idle"]), flush=True)
        results["stop"] = await stop_run(st, stop_session, 50, sequential=10)
        brief = {k: v for k, v in results["stop"].items() if k != "rows"}
        print("stop", json.dumps(brief), flush=True)
        return results
    finally:
        st.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 50, 200, 500])
    parser.add_argument("--workers", type=int, default=None, help="default: one per panel core")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="panel on the last core, load generator and fake on the rest (writes RESULTS-pinned.md)",
    )
    parser.add_argument(
        "--word-delay", type=float, default=0.02, help="seconds between pieces (0.02 = 50 tokens/s)"
    )
    parser.add_argument("--page-seconds", type=float, default=3.0)
    parser.add_argument("--idle", type=int, default=2000)
    parser.add_argument("--idle-seconds", type=float, default=40.0)
    parser.add_argument(
        "--quick",
        metavar="JSON",
        help="concurrency and pages only, results to this file (for before/after comparisons; "
        "RESULTS.md and the plot are left alone)",
    )
    parser.add_argument(
        "--stop",
        metavar="JSON",
        help="the Stop section only (--rounds × --stop-streams), results to this file",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stop-streams", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument(
        "--stop-sequential",
        type=int,
        default=10,
        help="of N running replies, this many (at most N/2) are stopped one by one, the rest at once",
    )
    parser.add_argument(
        "--single-repeats", type=int, default=5, help="Stops of a lone reply per round"
    )
    parser.add_argument(
        "--idle-only",
        metavar="JSON",
        help="the idle-but-open streams only, results to this file (before/after comparisons)",
    )
    args = parser.parse_args()
    if args.workers is None:
        args.workers = 1 if args.pin else (os.cpu_count() or 2)
    results = asyncio.run(main_async(args))
    results["pinned"] = args.pin
    if out := args.quick or args.stop or args.idle_only:
        Path(out).write_text(json.dumps(results, indent=2))
        return
    suffix = "-pinned" if args.pin else ""
    (BENCH / f"results{suffix}.json").write_text(json.dumps(results, indent=2))
    plot(results, BENCH / f"added_latency{suffix}.png")
    target = BENCH / f"RESULTS{suffix}.md"
    kept = ""
    if target.exists() and MARKER in target.read_text():
        kept = target.read_text().split(MARKER, 1)[1]
    target.write_text(report(results) + "\n" + MARKER + kept)
    print(report(results))


if __name__ == "__main__":
    main()
