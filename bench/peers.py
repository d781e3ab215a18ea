"""The panel beside a peer gateway (the LiteLLM proxy), against the same fake provider.

`make bench-peers` runs it (after installing the proxy into its own venv, bench/.peers/venv,
pinned in bench/peers-requirements.txt: never in the panel's requirements). One stack:

- the fake provider (tests/fakes/server.py, OpenAI wire format, 50 pieces at 50 pieces/s);
- the panel as production runs it (gunicorn + uvicorn workers, deploy/gunicorn.conf.py,
  SQLite) and the LiteLLM proxy (its own CLI, the same number of workers), both behind the
  shipped nginx site over TLS (tests/stack.py): the panel at /, the proxy at /litellm/ with the
  same unbuffered proxy settings as the panel's stream location;
- rounds at 1, 10 and 50 concurrent streams. Each round runs a batch through the panel and a
  batch through LiteLLM one after the other (their order alternates round by round, so drift of
  the machine's load falls on both), and every batch runs the same number of direct streams to
  the fake at the same time: a gateway's *added* time to first token is its p50 minus the p50 of
  the direct streams of its own batch. CPU per stream: process CPU time (utime + stime from
  /proc) of all the gateway's processes during its batch, divided by the batch's streams.
  A single stream costs a few clock ticks (10 ms each), too coarse to compare, so the
  1-stream batch is `--sequential` (20) single streams one after another, each with its own
  direct stream: the CPU is divided by all of them and the p50s are over all of them.

Before a batch its client opens as many TLS connections to nginx as the batch has streams
(requests for a file nginx serves itself), so that a stream's time to first token holds the
gateway's work and not the load generator's handshake, which costs Python's ssl a few ms of
the same two cores per connection; `--cold` measures without (a new connection per stream).

    python bench/peers.py [--streams 1 10 50] [--rounds 5] [--sequential 20] [--cold]
        [--json bench/results-peers.json]

It prints a Markdown table (median of the rounds, with min–max) and writes the JSON; the
section of bench/RESULTS.md is written by hand from it. Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

import load  # noqa: E402
from load import Session, Stack, cpu_seconds, fresh, pct, stamps  # noqa: E402

from tests import stack  # noqa: E402

PEER_VENV = BENCH / ".peers" / "venv"
MASTER_KEY = "sk-bench-litellm-master-0001"
PREFIX = "/litellm"


class LiteLLM(stack.Process):
    """The LiteLLM proxy from its own venv, configured with one model: the fake's gpt-4o-mini."""

    def __init__(self, fake_url: str, workers: int, directory: Path) -> None:
        binary = PEER_VENV / "bin" / "litellm"
        if not binary.exists():
            raise RuntimeError(f"{binary} is missing: run `make bench-peers` (it installs it)")
        self.port = stack.free_port()
        config = directory / "litellm.yaml"
        config.write_text(
            f"""model_list:
  - model_name: gpt-4o-mini
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: {fake_url}/v1
      api_key: sk-proj-benchbenchbench0001
litellm_settings:
  telemetry: false
  drop_params: true
general_settings:
  master_key: {MASTER_KEY}
"""
        )
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("DJANGO_", "DATABASE_", "PYTEST", "VIRTUAL_ENV"))
        }
        # No database, no telemetry, no remote cost map: everything stays on this machine.
        env.update(
            {
                "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                "LITELLM_TELEMETRY": "False",
                "LITELLM_LOG": "ERROR",
                "PATH": f"{PEER_VENV / 'bin'}:{env.get('PATH', '')}",
            }
        )
        super().__init__(
            [
                str(binary),
                "--config",
                str(config),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--num_workers",
                str(workers),
            ],
            env,
            log=directory / "litellm.log",
        )
        try:
            # Importing the proxy takes minutes on a loaded two-core machine.
            stack.wait_http(f"{self.url}/health/liveliness", timeout=900)
        except BaseException as exc:  # also Ctrl-C: never leave the proxy running
            self.stop()
            if not isinstance(exc, RuntimeError):
                raise
            log = self.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError("LiteLLM did not start:\n" + log) from None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pids(self) -> list[int]:
        """The proxy's process and all its descendants (its workers)."""
        found, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
            todo += [int(p) for p in out.stdout.split()]
        return found


def add_peer_location(nginx: stack.Nginx, port: int) -> None:
    """The shipped site plus one location for the peer, set up like the panel's stream
    location (unbuffered, HTTP/1.1 to the upstream), then a reload."""
    conf = nginx.dir / "nginx.conf"
    text = conf.read_text()
    location = f"""    location {PREFIX}/ {{
        proxy_pass http://127.0.0.1:{port}/;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_buffering off;
        proxy_cache off;
        gzip off;
        proxy_read_timeout 600s;
    }}

"""
    anchor = "    # The chat stream (POST /ai-chat/stream/)"
    assert anchor in text, "deploy/nginx.conf changed: update bench/peers.py"
    conf.write_text(text.replace(anchor, location + anchor, 1))
    subprocess.run(
        ["nginx", "-c", str(conf), "-p", str(nginx.dir), "-s", "reload"], check=True, timeout=30
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        response = httpx.get(
            f"{nginx.url}{PREFIX}/health/liveliness", verify=False, headers={"Host": stack.HOST}
        )
        if response.status_code == 200:
            return
        time.sleep(0.2)
    raise RuntimeError("nginx does not route to LiteLLM")


async def peer_stream(client: httpx.AsyncClient, base: str, result: dict) -> None:
    started = time.monotonic()
    first = False
    try:
        async with client.stream(
            "POST",
            f"{base}{PREFIX}/v1/chat/completions",
            json={
                "model": "gpt-4o-mini",
                "stream": True,
                "messages": [{"role": "user", "content": "[[stamp]]"}],
            },
            headers={"Host": stack.HOST, "Authorization": f"Bearer {MASTER_KEY}"},
        ) as response:
            if response.status_code != 200:
                result["errors"] += 1
                return
            async for line in response.aiter_lines():
                found = stamps(line) if line.startswith("data:") else []
                if found:
                    now = time.time_ns()
                    if not first:
                        result["ttft"].append((time.monotonic() - started) * 1000)
                        first = True
                    result["relay"] += [(now - sent) / 1e6 for sent in found]
                elif line == "data: [DONE]":
                    result["done"] += 1
    except httpx.HTTPError:
        result["errors"] += 1


async def panel_stream(client, session: Session, key: int, result: dict) -> None:
    slot = {"relay": result["relay"], "errors": 0, "done": 0, "closed_at": []}
    await load.panel_stream(client, session, key, "[[stamp]]", slot)
    result["ttft"] += slot.get("ttft", [])
    result["done"] += slot["done"]
    result["errors"] += slot["errors"]


async def warm(client: httpx.AsyncClient, base: str, n: int) -> None:
    """Open n kept-alive TLS connections to nginx (n requests at once for a file nginx serves
    itself, /favicon.ico): the batch then finds them in the pool, as a browser's streams do.
    Neither gateway sees these requests."""

    async def one() -> None:
        # Answered by nginx itself, whatever its status (the test stack's static root may
        # not hold the icon): only the connection matters.
        await client.get(f"{base}/favicon.ico", headers={"Host": stack.HOST})

    await asyncio.gather(*(one() for _ in range(n)))


async def batch(gateway: str, n: int, ctx: dict, repeat: int = 1) -> dict:
    """n streams through one gateway and n direct streams to the fake, all at once; `repeat`
    times in a row (the CPU is divided by all the streams). Unless `ctx["cold"]`, the client's
    TLS connections to nginx are opened before the batch starts (`warm`)."""
    limits = httpx.Limits(max_connections=4 * n + 10, max_keepalive_connections=4 * n + 10)
    pids = ctx["pids"][gateway]()
    async with httpx.AsyncClient(timeout=120, limits=limits, verify=False) as client:
        via, direct = fresh(), fresh()
        if not ctx.get("cold"):
            await warm(client, ctx["nginx"], n)
        cpu0 = cpu_seconds(pids)
        for _ in range(repeat):
            tasks = []
            for _ in range(n):
                if gateway == "panel":
                    tasks.append(panel_stream(client, ctx["session"], ctx["key"], via))
                else:
                    tasks.append(peer_stream(client, ctx["nginx"], via))
                tasks.append(load.direct_stream(client, ctx["fake"], "[[stamp]]", direct))
            await asyncio.gather(*tasks)
        cpu1 = cpu_seconds(pids)
    return {
        "gateway": gateway,
        "n": n,
        "streams": n * repeat,
        "ttft_p50": pct(via["ttft"], 50),
        "direct_ttft_p50": pct(direct["ttft"], 50),
        "added_p50": None
        if not via["ttft"] or not direct["ttft"]
        else pct(via["ttft"], 50) - pct(direct["ttft"], 50),
        "relay_p50": pct(via["relay"], 50),
        "relay_p99": pct(via["relay"], 99),
        "completed": via["done"],
        "errors": via["errors"],
        "cpu_ms_per_stream": (cpu1 - cpu0) * 1000 / (n * repeat),
        "load": os.getloadavg()[0],
    }


def spread(values: list[float], digits: int = 1) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def table(rows: list[dict], streams: list[int]) -> str:
    lines = [
        "| streams | panel added TTFT p50 | LiteLLM added TTFT p50 | ratio (panel / LiteLLM) | "
        "panel CPU ms/stream | LiteLLM CPU ms/stream | CPU ratio | completed (panel, LiteLLM) | errors |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for n in streams:
        mine = [r for r in rows if r["n"] == n and r["gateway"] == "panel"]
        peer = [r for r in rows if r["n"] == n and r["gateway"] == "litellm"]
        # Ratios per round (the two batches of a round ran back to back), then their spread.
        ratio = [
            a["added_p50"] / b["added_p50"]
            for a, b in zip(mine, peer, strict=False)
            if a["added_p50"] is not None and b["added_p50"]
        ]
        cpu_ratio = [
            a["cpu_ms_per_stream"] / b["cpu_ms_per_stream"]
            for a, b in zip(mine, peer, strict=False)
            if b["cpu_ms_per_stream"]
        ]
        lines.append(
            f"| {n} | {spread([r['added_p50'] for r in mine])} | {spread([r['added_p50'] for r in peer])} | "
            f"{spread(ratio, 2)} | {spread([r['cpu_ms_per_stream'] for r in mine])} | "
            f"{spread([r['cpu_ms_per_stream'] for r in peer])} | {spread(cpu_ratio, 2)} | "
            f"{sum(r['completed'] for r in mine)}/{sum(r.get('streams', n) for r in mine)}, "
            f"{sum(r['completed'] for r in peer)}/{sum(r.get('streams', n) for r in peer)} | "
            f"{sum(r['errors'] for r in mine)}, {sum(r['errors'] for r in peer)} |"
        )
    return "\n".join(lines)


async def run(args) -> dict:
    load.raise_fd_limit()
    st = Stack(args.workers, args.word_delay)
    nginx = peer = None
    try:
        peer = LiteLLM(st.fake_url, args.peer_workers, st.tmp)
        nginx = stack.Nginx([st.panel.port], str(st.tmp / "static"))
        add_peer_location(nginx, peer.port)
        session = Session(nginx.url)
        async with httpx.AsyncClient(timeout=30, verify=False) as client:
            await session.sign_in(client)
        ctx = {
            "session": session,
            "key": st.key,
            "nginx": nginx.url,
            "fake": st.fake_url,
            "cold": args.cold,
            "pids": {"panel": lambda: [st.panel.proc.pid, *st.worker_pids()], "litellm": peer.pids},
        }
        for gateway in ("panel", "litellm"):  # warm-up: imports, connections, caches
            await batch(gateway, 5, ctx)
        rows = []
        for round_ in range(args.rounds):
            for n in args.streams:
                order = ("panel", "litellm") if round_ % 2 == 0 else ("litellm", "panel")
                for gateway in order:
                    repeat = args.sequential if n == 1 else 1
                    row = await batch(gateway, n, ctx, repeat)
                    row["round"] = round_
                    print(json.dumps(row), flush=True)
                    rows.append(row)
                    await asyncio.sleep(args.pause)
        return {
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": load.machine(),
            "load_average_at_end": os.getloadavg(),
            "workers": args.workers,
            "cold": args.cold,
            "word_delay": args.word_delay,
            "sequential": args.sequential,
            "rows": rows,
        }
    finally:
        for process in (nginx, peer):
            if process is not None:
                process.stop()
        st.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--rounds", type=int, default=5)
    # One worker each by default: with several, uvicorn's supervisor (LiteLLM's --num_workers)
    # kills a worker that does not answer its health ping while it still imports the proxy,
    # which on a loaded two-core machine takes minutes: it restarted them in a loop here.
    parser.add_argument("--workers", type=int, default=1, help="panel workers")
    parser.add_argument("--peer-workers", type=int, default=1, help="LiteLLM workers")
    parser.add_argument("--word-delay", type=float, default=0.02)
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between batches")
    parser.add_argument(
        "--sequential",
        type=int,
        default=20,
        help="single streams in a row that make the 1-stream batch (its CPU is their mean)",
    )
    parser.add_argument(
        "--cold",
        action="store_true",
        help="every stream of a batch opens its own TLS connection to nginx (the client's "
        "handshakes then count in both gateways' time to first token)",
    )
    parser.add_argument("--json", type=Path, default=BENCH / "results-peers.json")
    args = parser.parse_args()
    results = asyncio.run(run(args))
    results["litellm"] = subprocess.run(
        [
            str(PEER_VENV / "bin" / "python"),
            "-c",
            "import litellm.proxy; import importlib.metadata as m; print(m.version('litellm'))",
        ],
        capture_output=True,
        text=True,
    ).stdout.strip()
    args.json.write_text(json.dumps(results, indent=2))
    print(f"\nLiteLLM {results['litellm']} · {results['machine']} · load {os.getloadavg()}\n")
    print(table(results["rows"], args.streams))


if __name__ == "__main__":
    main()
