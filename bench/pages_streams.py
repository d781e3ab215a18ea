"""Pages while replies stream: page TTFB with 0 and with N streams running, per serving layout.

    python bench/pages_streams.py [--streams 50] [--rounds 3] [--layouts shared split split-nice]
                                  [--nice-load 19] [--pyspy .venv/bin/py-spy]

One fake provider (tests/fakes/server.py; replies of `--reply-words` pieces at 50 pieces/s, so
a stream lasts the whole measurement) and, per layout, the panel behind the shipped nginx site
over TLS (tests/stack.py), on one SQLite database:

- `shared`: one gunicorn with 2 uvicorn workers serving pages and streams (deploy/ before the
  stream service);
- `split`: two gunicorns with one worker each, as deploy/ ships them: nginx's `bsepar_streams`
  upstream (POST /ai-chat/stream/, GET /ai-chat/stream/<id>/) to one, everything else to the
  other;
- `split-nice`: `split` with the stream server at a lower CPU share (autogroup nice 7, what
  CPUWeight=20 would give the stream unit).

All layouts run at the same time (idle when not measured) and are measured in alternation,
round by round: 16 concurrent page clients for `--seconds` per page (dashboard, chat, settings)
with no stream, then the same while `--streams` streams run (kept at that number: a finished
stream is replaced at once; started 2 s before the pages). The streams' client is its own
process (`--nice-load N`: it and the fake provider at nice N, as if on other machines); it
reports the pieces it received per second and their provider-to-client delay. TTFB p50/p99 per
page, in ms; the load average before and after each round. `--pyspy PATH` (a py-spy binary)
records each worker over the first round's page measurement under load (`categories()`).
Results: --json (default bench/out/pages-streams.json) and Markdown tables on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

import load  # noqa: E402
from load import PAGES, Session, fresh, pct  # noqa: E402

from tests import stack  # noqa: E402


def point_streams(nginx: stack.Nginx, stream_port: int) -> None:
    """Point the shipped site's stream upstream (bsepar_streams; stack.Nginx points only the
    page upstream at the test servers) at `stream_port`, then reload."""
    conf = nginx.dir / "nginx.conf"
    text = conf.read_text()
    anchor = "upstream bsepar_streams {"
    assert anchor in text, "deploy/nginx.conf changed: update bench/pages_streams.py"
    head, _, tail = text.partition(anchor)
    tail = tail.replace("    server 127.0.0.1:8001;\n", f"    server 127.0.0.1:{stream_port};\n", 1)
    conf.write_text(head + anchor + tail)
    subprocess.run(
        ["nginx", "-c", str(conf), "-p", str(nginx.dir), "-s", "reload"], check=True, timeout=30
    )
    time.sleep(1.0)


def lower_priority(session: int, nice: int) -> None:
    """Run the session `session` (a process started with start_new_session) at `nice`.

    Each server and helper here runs in its own session, in one cgroup: with the kernel's
    autogroup (kernel.sched_autogroup_enabled=1) a session's CPU share is its autogroup's nice,
    and a process's own nice counts only against the processes of its session. So both: the
    autogroup's (nice 7: weight 215 against 1024, ~20 %: CPUWeight=20 against 100) and that of
    every process of the session (its process group; processes and threads started later
    inherit it)."""
    os.setpriority(os.PRIO_PGRP, session, nice)
    autogroup = Path(f"/proc/{session}/autogroup")
    if autogroup.exists():
        autogroup.write_text(str(nice))


LAYOUTS = {
    # name: (workers of the page server, of the stream server or 0 for one shared server, nice)
    "shared": (2, 0, 0),
    "split": (1, 1, 0),
    "split-nice": (1, 1, 7),
}


class Layout:
    def __init__(self, name: str, env: dict[str, str], static_root: str) -> None:
        self.name = name
        page_workers, stream_workers, nice = LAYOUTS[name]
        if not stream_workers:
            self.panels = [stack.Panel(env, workers=page_workers)]
            self.nginx = stack.Nginx([self.panels[0].port], static_root)
            point_streams(self.nginx, self.panels[0].port)
        else:
            pages = stack.Panel(env, workers=page_workers)
            streams = stack.Panel(env, workers=stream_workers)
            if nice:
                # The stream server at a lower CPU share, as CPUWeight=20 in the stream unit
                # would put it (its cgroup's weight: 20 against the page unit's 100; measured,
                # not shipped: bench/RESULTS.md).
                lower_priority(streams.proc.pid, nice)
            self.panels = [pages, streams]
            self.nginx = stack.Nginx([pages.port], static_root)
            point_streams(self.nginx, streams.port)
        self.session = Session(self.nginx.url)

    def worker_pids(self) -> list[int]:
        pids = []
        for panel in self.panels:
            out = subprocess.run(
                ["pgrep", "-P", str(panel.proc.pid)], capture_output=True, text=True
            )
            pids += [int(p) for p in out.stdout.split()]
        return pids

    def stop(self) -> None:
        self.nginx.stop()
        for panel in self.panels:
            panel.stop()


async def pages_run(session: Session, seconds: float) -> dict:
    """bench/load.py's page measurement, with a longer timeout (pages wait behind 50 streams)."""
    return await load.pages_run(session, seconds, request_timeout=60)


async def keep_streams(config: dict) -> dict:
    """The stream load (in its own process, see --child): keep `n` streams running until stdin
    closes, then the counts."""
    load.raise_fd_limit()
    session = Session(config["base"])
    session.cookies, session.token = config["cookies"], config["token"]
    stop = asyncio.Event()
    counts = {"started": 0, "done": 0, "errors": 0, "pieces": 0, "seconds": 0.0}
    slots: list[dict] = []
    started = time.monotonic()

    async def keep_one(client: httpx.AsyncClient) -> None:
        while not stop.is_set():
            slot = fresh()
            slots.append(slot)
            counts["started"] += 1
            # [[stamp]]: each piece is the fake's send time, for the relay delay below.
            await load.panel_stream(client, session, config["key"], "[[long]] [[stamp]]", slot)
            counts["done"] += slot["done"]
            counts["errors"] += slot["errors"]

    limits = httpx.Limits(max_connections=config["n"] + 10)
    async with httpx.AsyncClient(timeout=120, limits=limits, verify=False) as client:
        tasks = [asyncio.create_task(keep_one(client)) for _ in range(config["n"])]
        await asyncio.to_thread(sys.stdin.read)
        stop.set()
        # The pieces the streams' client received (each carries the fake's time stamp), per
        # second: 50 per stream when the streams keep their pace.
        delays = [delay for slot in slots for delay in slot["relay"]]
        counts["pieces"] = len(delays)
        counts["seconds"] = round(time.monotonic() - started, 1)
        # Provider → client delay of each piece (ms): what the streams pay for the pages.
        counts["relay_p50"], counts["relay_p99"] = pct(delays, 50), pct(delays, 99)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return counts


async def with_streams(
    layout: Layout, key: int, fake_url: str, n: int, seconds: float, pyspy: str, nice_load: int
) -> dict:
    # The streams' client runs in its own process: in the page client's process, relaying
    # 50 pieces/s of each stream through TLS would delay the page client's own event loop and
    # count in the pages' TTFB. `--nice-load`: at a low CPU priority, like the fake provider,
    # to model a load generator and provider that run on other machines in production.
    config = {
        "base": layout.session.base,
        "cookies": layout.session.cookies,
        "token": layout.session.token,
        "key": key,
        "n": n,
    }
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--child",
        json.dumps(config),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    if nice_load:
        lower_priority(child.pid, nice_load)
    await asyncio.sleep(2.0)
    dumps = {}
    if pyspy:
        for pid in layout.worker_pids():
            out = await asyncio.create_subprocess_exec(
                pyspy,
                "dump",
                "--pid",
                str(pid),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            dumps[pid] = (await out.communicate())[0].decode(errors="replace")
    recorders = []
    if pyspy:
        # A profile of each worker over the whole page measurement (3 pages), idle included.
        for pid in layout.worker_pids():
            out = Path(tempfile.mkstemp(prefix=f"pyspy-{pid}-", suffix=".txt")[1])
            recorders.append(
                (
                    pid,
                    out,
                    await asyncio.create_subprocess_exec(
                        pyspy,
                        "record",
                        "--pid",
                        str(pid),
                        "--idle",
                        "--threads",
                        "--format",
                        "raw",
                        "--rate",
                        "50",
                        "--duration",
                        str(int(seconds * len(PAGES))),
                        "--output",
                        str(out),
                        stdout=asyncio.subprocess.DEVNULL,
                        stderr=asyncio.subprocess.DEVNULL,
                    ),
                )
            )
    pages = await pages_run(layout.session, seconds)
    profiles = {}
    for pid, out, process in recorders:
        await process.wait()
        raw = out.read_text() if out.exists() else ""
        profiles[pid] = {"categories": categories(raw), "raw": raw}
        out.unlink(missing_ok=True)
    child.stdin.close()
    output = (await child.stdout.read()).decode()
    await child.wait()
    counts = json.loads(output.strip().splitlines()[-1])
    # A reply goes on without its client: wait until the provider has none open, so the
    # next measurement starts quiet (bounded: two minutes).
    async with httpx.AsyncClient(timeout=30) as client:
        for _ in range(240):
            if not (await client.get(f"{fake_url}/_fake/stats")).json()["open_streams"]:
                break
            await asyncio.sleep(0.5)
    return {"pages": pages, "streams": counts, "dumps": dumps, "profiles": profiles}


# What a worker's threads were doing (py-spy raw format with --threads: "thread (id): name;frame;...
# count", outermost frame first), by the innermost frame that matches. Idle: the event loop waiting
# (uvloop shows no frame below Runner.run) and executor/database threads waiting for work.
CATEGORIES = [
    ("access log", ("gunicorn/glogging.py", "logging/__init__.py")),
    ("database calls (waits included)", ("django/db/", "sqlite3", "psycopg")),
    (
        "page views and templates",
        ("django/template", "dashboard/views", "api_manager/views", "django/contrib/"),
    ),
    ("stream: provider SDK (request, parse)", ("openai/", "httpx", "httpcore", "anthropic/")),
    (
        "stream: turn and relay",
        ("ai_chat/services.py", "ai_chat/jobs.py", "django/http/response.py"),
    ),
    ("Django request handling", ("django/core/handlers", "django/middleware", "core/middleware")),
]
IDLE = ("Runner.run (asyncio/runners.py", "_worker (concurrent/futures/thread.py", "select (")


def categories(raw: str) -> dict[str, object]:
    """The main thread's samples by category (the event loop: streams and request handling),
    and how busy the other threads were (sync views, database calls) against it."""
    counts: dict[str, int] = {}
    total = other_busy = 0
    for line in raw.splitlines():
        stack_text, _, number = line.rpartition(" ")
        if not number.isdigit():
            continue
        n = int(number)
        thread, *frames = stack_text.split(";")
        idle = bool(frames) and any(k in frames[-1] for k in IDLE)
        if not thread.endswith("MainThread"):
            other_busy += 0 if idle else n
            continue
        total += n
        name = "idle" if idle else ""
        for frame in reversed(frames):  # innermost first: the most specific answer
            if name:
                break
            name = next((c for c, keys in CATEGORIES if any(k in frame for k in keys)), "")
        counts[name or "other"] = counts.get(name or "other", 0) + n
    if not total:
        return {}
    return {
        "main thread": {k: round(v / total, 3) for k, v in sorted(counts.items())},
        "other threads busy / main thread samples": round(other_busy / total, 3),
    }


def summary(rows: list[dict]) -> str:
    lines = [
        "| layout | page | TTFB p50, 0 streams | TTFB p50, N streams | ratio | req/s 0 / N | errors |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]

    def spread(values: list[float]) -> str:
        return f"{statistics.median(values):.0f} ({min(values):.0f}–{max(values):.0f})"

    for layout in dict.fromkeys(r["layout"] for r in rows):
        mine = [r for r in rows if r["layout"] == layout]
        for page in PAGES:
            alone = [r["alone"][page]["ttfb_p50"] for r in mine]
            loaded = [r["loaded"]["pages"][page]["ttfb_p50"] for r in mine]
            ratio = [b / a for a, b in zip(alone, loaded, strict=True)]
            rps = (
                f"{statistics.median(r['alone'][page]['rps'] for r in mine):.0f} / "
                f"{statistics.median(r['loaded']['pages'][page]['rps'] for r in mine):.0f}"
            )
            errors = sum(
                r["alone"][page]["errors"] + r["loaded"]["pages"][page]["errors"] for r in mine
            )
            lines.append(
                f"| {layout} | {page} | {spread(alone)} | {spread(loaded)} | "
                f"{statistics.median(ratio):.1f}× ({min(ratio):.1f}–{max(ratio):.1f}) | {rps} | {errors} |"
            )
    lines += [
        "",
        "| layout | round | load before / after | streams started | done | errors | pieces/s "
        "| relay delay p50 / p99 ms |",
    ]
    lines.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        c = r["loaded"]["streams"]
        rate = f"{c['pieces'] / c['seconds']:.0f}" if c.get("seconds") else "–"
        lines.append(
            f"| {r['layout']} | {r['round']} | {r['load'][0]:.1f} / {r['load'][1]:.1f} | "
            f"{c['started']} | {c['done']} | {c['errors']} | {rate} | "
            f"{c.get('relay_p50') or 0:.0f} / {c.get('relay_p99') or 0:.0f} |"
        )
    return "\n".join(lines)


async def main_async(args) -> list[dict]:
    # bench/load.py's stack (the fake provider at 50 pieces/s, a fresh database with the bench
    # user and its key, the panel's environment and static files) without its panel: each
    # layout starts its own.
    st = load.Stack(0, 0.02, long_words=args.reply_words)
    layouts: list[Layout] = []
    try:
        fake_url, key, env, static_root = st.fake_url, st.key, st.env, st.static_root
        if args.nice_load:
            lower_priority(st.fake.proc.pid, args.nice_load)
        layouts = [Layout(name, env, static_root) for name in args.layouts]
        async with httpx.AsyncClient(timeout=30, verify=False) as client:
            for layout in layouts:
                await layout.session.sign_in(client)
        for layout in layouts:  # warm-up
            await pages_run(layout.session, 1.0)
        rows = []
        for round_ in range(args.rounds):
            order = layouts if round_ % 2 == 0 else layouts[::-1]
            for layout in order:
                load_before = os.getloadavg()[0]
                alone = await pages_run(layout.session, args.seconds)
                loaded = await with_streams(
                    layout,
                    key,
                    fake_url,
                    args.streams,
                    args.seconds,
                    args.pyspy if round_ == 0 else "",
                    args.nice_load,
                )
                row = {
                    "layout": layout.name,
                    "round": round_,
                    "streams": args.streams,
                    "nice_load": args.nice_load,
                    "load": [load_before, os.getloadavg()[0]],
                    "alone": alone,
                    "loaded": loaded,
                }
                print(json.dumps({k: v for k, v in row.items() if k != "loaded"}), flush=True)
                print(json.dumps(loaded["pages"]), loaded["streams"], flush=True)
                rows.append(row)
        return rows
    finally:
        for layout in layouts:
            layout.stop()
        st.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--reply-words", type=int, default=600, help="12 s at 50 pieces/s")
    parser.add_argument("--layouts", nargs="+", default=list(LAYOUTS), choices=list(LAYOUTS))
    parser.add_argument(
        "--nice-load",
        type=int,
        default=0,
        help="run the fake provider and the streams' client at this nice value (19: as if "
        "they ran on other machines, as in production)",
    )
    parser.add_argument("--pyspy", default="", help="a py-spy binary: dump each worker once")
    parser.add_argument("--json", type=Path, default=BENCH / "out" / "pages-streams.json")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(keep_streams(json.loads(args.child)))), flush=True)
        return
    rows = asyncio.run(main_async(args))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=2))
    print(f"\nload {os.getloadavg()}\n")
    print(summary(rows))


if __name__ == "__main__":
    main()
