"""CPU per stream of the OpenAI adapter alone, against the fake provider.

`python bench/adapter_cpu.py [ROOT] [STREAMS]` runs `get_provider(config).stream(request)` of the
tree at ROOT (default: this one; another tree for before/after comparisons) STREAMS times in a
row (default 300, after 20 warm-up streams) with a 21-message history against the fake
(tests/fakes/server.py, its own process so its CPU is not counted; 50 pieces at once), and
prints the process CPU time per stream in ms. Wrap it in `flock /work/bench.lock`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import sys
import tempfile
from pathlib import Path

ROOT = sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).resolve().parents[1])
STREAMS = int(sys.argv[2]) if len(sys.argv) > 2 else 300
sys.path.insert(0, ROOT)
os.chdir(ROOT)

from tests import stack  # noqa: E402


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(port: int) -> float:
    from api_manager.providers import ChatRequest, ProviderConfig, get_provider

    history: list[dict[str, str]] = []
    for i in range(10):
        history += [
            {"role": "user", "content": f"question {i} " + "word " * 60},
            {"role": "assistant", "content": f"answer {i} " + "word " * 120},
        ]
    history.append({"role": "user", "content": "[[long]] go"})
    config = ProviderConfig(
        provider="openai",
        api_key="sk-proj-benchbenchbench0001",
        base_url=f"http://127.0.0.1:{port}/v1",
        timeout=30.0,
        max_retries=0,
    )

    async def one() -> None:
        request = ChatRequest(model="gpt-4o-mini", messages=history, system="Be brief.")
        async for _chunk in get_provider(config).stream(request):
            pass

    for _ in range(20):
        await one()
    start = cpu()
    for _ in range(STREAMS):
        await one()
    return (cpu() - start) * 1000 / STREAMS


def main() -> None:
    port = stack.free_port()
    fake = stack.Process(
        [sys.executable, "-m", "tests.fakes.server", "--port", str(port), "--word-delay", "0"]
        + ["--long-words", "50"],
        dict(os.environ),
    )
    try:
        stack.wait_http(f"http://127.0.0.1:{port}/_fake/stats")
        tmp = tempfile.mkdtemp(prefix="bsepar-adapter-")
        os.environ.update(
            stack.panel_env(
                f"sqlite:///{tmp}/bench.sqlite3",
                None,
                f"{tmp}/static",
                PROVIDER_PRIVATE_HOSTS=f"127.0.0.1:{port}",  # the fake is on loopback
            )
        )
        import django

        django.setup()
        logging.getLogger("httpx2").setLevel(logging.WARNING)  # a line per request otherwise
        print(f"{asyncio.run(measure(port)):.3f}")
    finally:
        fake.stop()


if __name__ == "__main__":
    main()
