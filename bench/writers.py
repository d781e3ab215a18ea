"""Concurrent writers on SQLite: Django's backend with the supported options against another.

`python bench/writers.py` starts `--processes` processes (gunicorn workers) of `--threads`
threads each (the database threads of core/db.py and the request threads of sync views); every
thread runs `--transactions` short write transactions, each holding the write lock for a few
queries and `--work` of Python (the ORM building them). It prints, per engine, the
transactions/s, the time a transaction took from `atomic()` to commit (p50, p99, max, in ms),
the CPU time per transaction and the "database is locked" errors. `--engine PATH=ROOT` runs an
engine from another tree (e.g. `core.sqlite=/tmp/old-tree`); runs of the engines alternate,
`--repeat` times, on a fresh database each.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OPTIONS = {
    # What bsepar_panel/settings.py gives SQLite.
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    "transaction_mode": "IMMEDIATE",
    "timeout": 20,
}


def spin(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def worker(
    engine: str, root: str, name: str, threads: int, transactions: int, work: float, out
) -> None:  # type: ignore[no-untyped-def]
    sys.path.insert(0, root)
    import django
    from django.conf import settings

    settings.configure(
        DATABASES={"default": {"ENGINE": engine, "NAME": name, "OPTIONS": dict(OPTIONS)}},
        INSTALLED_APPS=[],
        USE_TZ=True,
    )
    django.setup()
    from django.db import OperationalError, connection, connections, transaction

    latencies: list[float] = []
    errors = 0
    guard = threading.Lock()
    start = threading.Barrier(threads)

    def run() -> None:
        nonlocal errors
        mine: list[float] = []
        failed = 0
        start.wait()
        for i in range(transactions):
            began = time.perf_counter()
            try:
                with transaction.atomic():
                    with connection.cursor() as cursor:
                        cursor.execute("SELECT COUNT(*) FROM t WHERE v = %s", [i])
                        spin(work)
                        cursor.execute("INSERT INTO t (v) VALUES (%s)", [i])
                        cursor.execute("INSERT INTO t (v) VALUES (%s)", [i + 1])
            except OperationalError:
                failed += 1
            else:
                mine.append(time.perf_counter() - began)
        connections.close_all()
        with guard:
            latencies.extend(mine)
            errors += failed

    cpu = resource.getrusage(resource.RUSAGE_SELF)
    began = time.perf_counter()
    pool = [threading.Thread(target=run) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_SELF)
    out.put(
        {
            "latencies": latencies,
            "errors": errors,
            "wall": wall,
            "cpu": after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime,
        }
    )


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def one_run(engine: str, root: str, args: argparse.Namespace) -> dict:
    import sqlite3

    tmp = tempfile.mkdtemp(prefix="bsepar-writers-")
    name = os.path.join(tmp, "w.sqlite3")
    db = sqlite3.connect(name)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)")
    db.execute("CREATE INDEX t_v ON t (v)")
    db.commit()
    db.close()
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [
        ctx.Process(
            target=worker,
            args=(engine, root, name, args.threads, args.transactions, args.work / 1000, out),
        )
        for _ in range(args.processes)
    ]
    for proc in procs:
        proc.start()
    results = [out.get(timeout=600) for _ in procs]
    for proc in procs:
        proc.join()
    latencies = [x for r in results for x in r["latencies"]]
    done = len(latencies)
    return {
        "engine": engine,
        "tx_per_s": done / max(r["wall"] for r in results),
        "p50_ms": pct(latencies, 50) * 1000,
        "p99_ms": pct(latencies, 99) * 1000,
        "max_ms": max(latencies) * 1000,
        "cpu_ms_per_tx": sum(r["cpu"] for r in results) / done * 1000,
        "errors": sum(r["errors"] for r in results),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", nargs="+", default=["django.db.backends.sqlite3"])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--transactions", type=int, default=100)
    parser.add_argument(
        "--work", type=float, default=2.0, help="ms of Python inside each transaction"
    )
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    engines = [(e.split("=", 1) + [str(ROOT)])[:2] for e in args.engine]
    for _ in range(args.repeat):
        for engine, root in engines:
            print(json.dumps(one_run(engine, root, args)), flush=True)


if __name__ == "__main__":
    main()
