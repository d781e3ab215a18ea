"""Page times in-process, on databases seeded by `bench/pages.py --keep DIR`.

Through nginx (bench/pages.py) a page's time holds the TLS, the proxy and whatever else the
machine's two cores do in that second; on a noisy machine the same page's median moved by 2×
between runs. This requests the same pages through Django's AsyncClient (the production
settings and middleware, no server), `--repeat` times each after 3 warm-up requests, and prints
per page the minimum and median wall time and the median process CPU time, in ms:

    python bench/pages_inprocess.py DIR/1000-10-300 DIR/1000000-10-300 [--repeat 25]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import pages as seeded  # noqa: E402  (bench/pages.py: the same pages, the seeded databases)


async def measure(directory: Path, repeat: int) -> dict[str, tuple[float, float, float]]:
    from django.contrib.auth.models import User
    from django.test import AsyncClient

    key, conversation, _ = (directory / "seeded.txt").read_text().split()
    client = AsyncClient(headers={"X-Forwarded-Proto": "https"})
    await client.aforce_login(await User.objects.aget(username="bench"))
    result = {}
    for name, path in seeded.pages(int(key), int(conversation)).items():
        for _ in range(3):
            response = await client.get(path)
            assert response.status_code == 200, (path, response.status_code)
        walls, cpus = [], []
        for _ in range(repeat):
            wall, cpu = time.perf_counter(), time.process_time()
            await client.get(path)
            cpus.append((time.process_time() - cpu) * 1000)
            walls.append((time.perf_counter() - wall) * 1000)
        result[name] = (min(walls), statistics.median(walls), statistics.median(cpus))
    return result


def one(directory: Path, repeat: int) -> None:
    """In this process: set up Django on `directory`'s database and print its line."""
    from tests import stack

    os.environ.update(
        stack.panel_env(
            f"sqlite:///{directory / 'bench.sqlite3'}",
            None,
            str(directory / "static"),
            ALLOWED_HOSTS="testserver",
            SECURE_SSL_REDIRECT="off",
        )
    )
    import django

    django.setup()
    logging.disable(logging.CRITICAL)
    result = asyncio.run(measure(directory, repeat))
    cells = " | ".join(f"{n} {a:.1f} / {b:.1f} / {c:.1f}" for n, (a, b, c) in result.items())
    print(f"{directory.name}: {cells}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directories", nargs="+", type=Path)
    parser.add_argument("--repeat", type=int, default=25)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one(args.directories[0], args.repeat)
        return
    print("per page: min / median wall ms / median CPU ms")
    for directory in args.directories:
        # One process per database: Django is set up once per process.
        subprocess.run(
            [sys.executable, __file__, "--one", str(directory), "--repeat", str(args.repeat)],
            check=True,
        )


if __name__ == "__main__":
    main()
