"""Page benchmark: page time against the amount of usage data and conversation length.

`make bench-pages` runs it. For each data size it makes a fresh database, seeds it through the
ORM (`bulk_create`: usage records spread over 60 days, 20 users, 5 keys; one conversation of
the given number of messages, opened by the conversation page, among `--conversations` of the
admin's, so the chat pages' sidebar is full), starts the panel as production runs it
(gunicorn + uvicorn worker, deploy/gunicorn.conf.py) behind the shipped nginx site over TLS
(tests/stack.py), signs in as an admin (the dashboard then also shows the team's usage) and
requests each page sequentially: 3 warm-up requests, then the median of 7 with their min and
max. `--clients N` then requests the dashboard, the chat page and the conversation page from N
concurrent clients for 5 s each (p50 and p99 of the response time, requests per second).

    python bench/pages.py [--rows 1000,100000,1000000] [--messages 10,10000]
                          [--conversations 300] [--clients 16] [--keep DIR] [--json FILE]

Nothing is written to bench/RESULTS.md by the script: it prints a Markdown table (and writes
`--json`); the results section there is written by hand from its output. To measure an older
commit, copy this file into a worktree of that commit and run it there.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import stack  # noqa: E402

PASSWORD = "bench-password-123"
WARM_UP = 3
REPEAT = 7

# Run in a subprocess with the panel's environment: migrate, then seed through the ORM.
SEED = r"""
import datetime as dt, random, sys, time
from decimal import Decimal
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from django.contrib.auth.models import User
from django.utils import timezone
from ai_chat.models import Conversation, Message, Role
from api_manager.models import ProviderKey, UsageRecord

rows, messages = int(sys.argv[1]), int(sys.argv[2])
random.seed(1)
admin = User.objects.create_superuser("bench", "bench@example.com", "{password}")
users = [admin] + [User.objects.create_user(f"user{{i}}") for i in range(19)]
keys = []
for i in range(5):
    key = ProviderKey(owner=admin, provider="openai", label=f"key {{i}}", shared=True,
                      default_model="gpt-4o-mini", monthly_token_budget=10**12)
    key.set_secret(f"sk-proj-bench{{i:04d}}benchbenchbench")
    key.save()
    keys.append(key)
models = ["gpt-4o-mini", "gpt-4o", "gpt-4.1"]
now = timezone.now()
started = time.monotonic()
batch = 5000
for start in range(0, rows, batch):
    UsageRecord.objects.bulk_create(
        UsageRecord(
            key=keys[i % 5], key_label=keys[i % 5].label, user=users[i % 20], provider="openai",
            model=models[i % 3], input_tokens=100 + i % 50, output_tokens=200 + i % 70,
            cost=Decimal("0.0005"), status="error" if i % 50 == 0 else "ok",
            created_at=now - dt.timedelta(seconds=random.randrange(60 * 86400)),
        )
        for i in range(start, min(rows, start + batch))
    )
seeded = time.monotonic() - started
conversation = Conversation.objects.create(owner=admin, title="Long conversation", key=keys[0],
                                           model="gpt-4o-mini")
batch_messages = []
for i in range(messages):
    message = Message(conversation=conversation, role=Role.USER if i % 2 == 0 else Role.ASSISTANT,
                      created_at=now - dt.timedelta(seconds=messages - i))
    message.set_content(f"Message {{i}}: a paragraph of ordinary length, **some** words and `code`.")
    batch_messages.append(message)
Message.objects.bulk_create(batch_messages, batch_size=2000)
# The rest of the sidebar (it lists the newest 100): each with a title of ordinary length.
Conversation.objects.bulk_create(
    Conversation(owner=admin, title=f"Conversation {{i}}: a title of ordinary length", key=keys[0],
                 model="gpt-4o-mini", pinned=i < 3)
    for i in range(int(sys.argv[3]) - 1)
)
print(keys[0].pk, conversation.pk, round(seeded, 1))
"""


def pages(key: int, conversation: int) -> dict[str, str]:
    return {
        "dashboard": "/",
        "settings": "/api-manager/settings/",
        "key usage": f"/api-manager/keys/{key}/usage/",
        "chat": "/ai-chat/",
        "conversation": f"/ai-chat/c/{conversation}/",
        "admin usage list": "/admin/api_manager/usagerecord/",
    }


class Client:
    """Signed-in requests through nginx (TLS; cookies sent as a header, since the Host the
    panel expects is not the address we connect to)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = httpx.Client(verify=False, timeout=120)
        self.cookies: dict[str, str] = {}

    def headers(self) -> dict[str, str]:
        return {
            "Host": stack.HOST,
            "Referer": f"https://{stack.HOST}/",
            "Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items()),
        }

    def get(self, path: str) -> httpx.Response:
        response = self.http.get(self.base + path, headers=self.headers())
        self.cookies.update(response.cookies)
        return response

    def sign_in(self) -> None:
        page = self.get("/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        response = self.http.post(
            self.base + "/login/",
            data={"username": "bench", "password": PASSWORD, "csrfmiddlewaretoken": token},
            headers=dict(self.headers(), **{"X-CSRFToken": token}),
        )
        assert response.status_code == 302, response.text[:300]
        self.cookies.update(response.cookies)

    def time(self, path: str) -> dict[str, float]:
        for _ in range(WARM_UP):
            response = self.get(path)
            assert response.status_code == 200, (path, response.status_code)
        times = []
        for _ in range(REPEAT):
            started = time.perf_counter()
            response = self.get(path)
            times.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, (path, response.status_code)
        return {"median": statistics.median(times), "min": min(times), "max": max(times)}


def concurrent(client: Client, path: str, clients: int, seconds: float) -> dict[str, float]:
    """`clients` threads, each with its own connection and the signed-in cookies, requesting
    `path` back to back for `seconds`: the p50 and p99 of the whole response time, and the
    requests per second."""
    times: list[float] = []

    def worker() -> None:
        http = httpx.Client(verify=False, timeout=120)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            started = time.perf_counter()
            response = http.get(client.base + path, headers=client.headers())
            times.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, (path, response.status_code)
        http.close()

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    times.sort()
    return {
        "p50": times[len(times) // 2],
        "p99": times[min(len(times) - 1, int(len(times) * 0.99))],
        "rps": len(times) / seconds,
    }


def run(
    rows: int,
    messages: int,
    conversations: int,
    clients: int = 0,
    keep: Path | None = None,
    seed_only: bool = False,
) -> dict:
    kept = keep / f"{rows}-{messages}-{conversations}" if keep else None
    tmp = kept or Path(tempfile.mkdtemp(prefix="bsepar-pages-"))
    tmp.mkdir(parents=True, exist_ok=True)
    seeded_file = tmp / "seeded.txt"
    panel = nginx = None
    try:
        database = os.environ.get("BENCH_DATABASE_URL") or f"sqlite:///{tmp / 'bench.sqlite3'}"
        static_root = str(tmp / "static")
        env = stack.panel_env(database, None, static_root, AXES_FAILURE_LIMIT="1000")
        stack.collectstatic(static_root, env)
        started = time.monotonic()
        if kept and seeded_file.exists():
            # A database seeded by an earlier run with --keep: migrated to this tree, not seeded.
            subprocess.run(
                [sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True
            )
            key, conversation, seeded = seeded_file.read_text().split()
        else:
            out = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    SEED.format(password=PASSWORD),
                    str(rows),
                    str(messages),
                    str(conversations),
                ],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            key, conversation, seeded = out.stdout.split()[-3:]
            seeded_file.write_text(f"{key} {conversation} {seeded}")
        seconds = time.monotonic() - started
        if seed_only:
            return {"rows": rows, "messages": messages, "seed_seconds": round(seconds, 1)}
        # The seed leaves hundreds of MB for the kernel to write back: let it, before timing
        # (a page that saves anything would otherwise wait for the disk behind it).
        os.sync()
        time.sleep(5)
        panel = stack.Panel(env, workers=1)
        nginx = stack.Nginx([panel.port], static_root)
        client = Client(nginx.url)
        client.sign_in()
        result = {
            "rows": rows,
            "messages": messages,
            "conversations": conversations,
            "seed_seconds": round(seconds, 1),
            "insert_seconds": float(seeded),
            "pages": {
                name: client.time(path) for name, path in pages(int(key), int(conversation)).items()
            },
        }
        if clients:
            result["concurrent"] = {
                name: concurrent(client, pages(int(key), int(conversation))[name], clients, 5.0)
                for name in ("dashboard", "chat", "conversation")
            }
        print(json.dumps(result), flush=True)
        return result
    finally:
        for process in (nginx, panel):
            if process is not None:
                process.stop()
        if not kept:
            shutil.rmtree(tmp, ignore_errors=True)


def table(results: list[dict]) -> str:
    names = list(results[0]["pages"])
    lines = [
        "| usage rows | messages | " + " | ".join(names) + " |",
        "| ---: | ---: | " + " | ".join("---:" for _ in names) + " |",
    ]
    for r in results:
        cells = [
            f"{r['pages'][n]['median']:.1f} ({r['pages'][n]['min']:.0f}–{r['pages'][n]['max']:.0f})"
            for n in names
        ]
        lines.append(f"| {r['rows']:,} | {r['messages']:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default="1000,100000,1000000")
    parser.add_argument("--messages", default="10,10000")
    parser.add_argument(
        "--conversations",
        type=int,
        default=300,
        help="the signed-in user's conversations (the sidebar lists 100), the long one included",
    )
    parser.add_argument(
        "--clients",
        type=int,
        default=0,
        help="then the dashboard, chat and conversation pages under N concurrent clients, 5 s each",
    )
    parser.add_argument(
        "--keep",
        type=Path,
        help="keep each seeded SQLite database in this directory and reuse it on the next run "
        "(migrated to the tree that runs, not seeded again)",
    )
    parser.add_argument(
        "--seed-only", action="store_true", help="with --keep: seed the databases, time nothing"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.seed_only and not args.keep:
        parser.error("--seed-only needs --keep")
    rows = [int(n) for n in args.rows.split(",")]
    messages = [int(n) for n in args.messages.split(",")]
    # Every row size with the shortest conversation, then the longest conversations with
    # the fewest rows: the two dimensions are measured apart.
    plan = [(n, messages[0]) for n in rows] + [(rows[0], m) for m in messages[1:]]
    results = []
    for n, m in plan:
        results.append(run(n, m, args.conversations, args.clients, args.keep, args.seed_only))
        if args.json and not args.seed_only:
            args.json.write_text(json.dumps(results, indent=2))
    if args.seed_only:
        print(json.dumps(results))
        return
    print(
        f"\n{platform.node()} · {os.cpu_count()} CPUs · load {os.getloadavg()[0]:.1f}"
        f" · {args.conversations} conversations\n"
    )
    print(table(results))
    if args.clients:
        print(f"\n{args.clients} concurrent clients, p50 / p99 ms (requests/s):\n")
        for r in results:
            cells = ", ".join(
                f"{name} {c['p50']:.0f} / {c['p99']:.0f} ({c['rps']:.0f}/s)"
                for name, c in r["concurrent"].items()
            )
            print(f"- {r['rows']:,} rows, {r['messages']:,} messages: {cells}")


if __name__ == "__main__":
    main()
