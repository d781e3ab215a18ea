"""CPU time of `ai_chat.services._finish` alone (saving a finished reply), in process.

`python bench/finish_cpu.py` builds a fresh SQLite database (or uses `--database`, e.g. a
PostgreSQL URL whose database it empties), one user and an OpenAI key (`--budget N`: with a
monthly token budget, so that every turn reserves and `_finish` settles), then per turn starts
a new conversation with `services._prepare` (not timed) and times `services._finish` with
`time.thread_time()` (this thread's CPU: the machine's other load does not count). It prints
the CPU per `_finish` in ms (median and mean of `--turns`, after `--warmup` turns) and, with
`--phases`, the CPU of its parts (the usage record with its rollup and counter, the price,
the budget's settle, Markdown, the reply's and the key's UPDATEs) measured the same way, and the budget's reservation
at the turn's start (in `_prepare`). `--root` runs another tree's code (before/after
comparisons); `--profile FILE` writes a cProfile of the timed calls. Wrap it in `flock /work/bench.lock`.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


# Whether `_finish` is running: only its calls of the timed functions count.
finishing = False


def timed(owner: object, name: str, spent: dict[str, float], always: bool = False) -> None:
    """Wrap `owner.name` to add its thread CPU to `spent[name]` (calls made by `_finish`, or
    `always`)."""
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        if not (finishing or always):
            return original(*args, **kwargs)
        start = time.thread_time()
        try:
            return original(*args, **kwargs)
        finally:
            spent[name] = spent.get(name, 0.0) + time.thread_time() - start

    setattr(owner, name, wrapper)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(ROOT))
    parser.add_argument("--database", default="", help="a DATABASE_URL (default: a new SQLite)")
    parser.add_argument("--turns", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--budget", type=int, default=0, help="the key's monthly token budget")
    parser.add_argument("--phases", action="store_true", help="time the parts of _finish too")
    parser.add_argument("--profile", default="", help="write a cProfile of the timed calls")
    args = parser.parse_args()
    sys.path.insert(0, args.root)
    os.chdir(args.root)
    from tests import stack

    tmp = tempfile.mkdtemp(prefix="bsepar-finish-")
    os.environ.update(
        stack.panel_env(
            args.database or f"sqlite:///{tmp}/bench.sqlite3",
            None,
            f"{tmp}/static",
            PROVIDER_PRIVATE_HOSTS="127.0.0.1:9",
            CHAT_MAX_RUNNING_REPLIES="100000",
        )
    )
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command

    from ai_chat import services
    from ai_chat.models import Message, Status
    from api_manager import budget
    from api_manager.models import ModelPrice, ProviderKey, UsageRecordQuerySet
    from api_manager.providers import Usage

    if args.database:
        call_command("flush", interactive=False, verbosity=0)
    call_command("migrate", verbosity=0)
    if not ModelPrice.objects.exists():  # flush empties the migration's default prices
        call_command("migrate", "api_manager", "0001", verbosity=0)
        call_command("migrate", verbosity=0)
    user = User.objects.create_user("bench", password="bench-password-123")
    key = ProviderKey(
        owner=user,
        provider="openai",
        label="bench",
        base_url="http://127.0.0.1:9/v1",
        default_model="gpt-4o-mini",
        monthly_token_budget=args.budget or None,
    )
    key.set_secret("sk-proj-benchbenchbench0001")
    key.save()

    spent: dict[str, float] = {}
    if args.phases:
        timed(UsageRecordQuerySet, "record", spent)
        timed(budget, "settle", spent)
        # The price lookup (`_finish` calls price_for since the "no price" change; `--root`
        # trees before it call cost_for). The bound classmethod, as a plain function.
        price = "price_for" if hasattr(ModelPrice, "price_for") else "cost_for"
        timed(ModelPrice, price, spent)
        timed(Message, "set_content", spent)  # Markdown
        timed(Message, "save", spent)  # the reply's UPDATE
        timed(ProviderKey, "record_success", spent)
        timed(budget, "reserve", spent, always=True)  # at the turn's start, in _prepare

    profile = cProfile.Profile(time.thread_time) if args.profile else None
    times: list[float] = []
    text = "Here is **a reply** with a list:\n\n- one\n- two\n\n`code` and more words. " * 4
    for i in range(args.warmup + args.turns):
        if i == args.warmup:
            spent.clear()
        turn = services._prepare(user, {"message": f"hello {i}", "key": key.pk})
        if profile is not None and i >= args.warmup:
            profile.enable()
        global finishing
        finishing = True
        start = time.thread_time()
        services._finish(turn, text, Status.COMPLETE, Usage(12, 80), None, 120, 900)
        finishing = False
        if profile is not None:
            profile.disable()
        if i >= args.warmup:
            times.append((time.thread_time() - start) * 1000)
    result = {
        "root": args.root,
        "database": "postgresql" if args.database.startswith("postgres") else "sqlite",
        "budget": args.budget,
        "turns": args.turns,
        "finish_ms_median": round(statistics.median(times), 3),
        "finish_ms_mean": round(statistics.fmean(times), 3),
        "load": open("/proc/loadavg").read().split()[0],
    }
    for name, seconds in spent.items():
        result[f"{name}_ms"] = round(seconds * 1000 / args.turns, 3)
    if profile is not None:
        profile.dump_stats(args.profile)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
