"""The chat page's cost in process: render CPU of `/ai-chat/` and `/ai-chat/c/<id>/` with many
conversations in the sidebar, the dashboard beside them for scale.

    python bench/chat_page.py [--roots TREE_A TREE_B] [--rounds 3] [--requests 40]
                              [--conversations 300]

For each round and each tree (interleaved: A B A B ...) a fresh interpreter runs that tree's
code with DEBUG off (the production settings, tests/stack.py's environment) on a fresh SQLite
database: one user with `--conversations` conversations (one of them with 20 messages, the one
opened), 5 warm-up requests per page, then `--requests` requests through Django's test client
(the whole middleware stack, no server). Per page: the CPU time of the request's thread
(`time.thread_time`, which other work on the machine does not inflate as it does wall time),
median and min of the requests, wall median, and the HTML's size. Prints one JSON line per
round and tree, then a Markdown table of the medians over the rounds with their spread.
`--root` (one tree, no interleaving) is what each child runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(args: argparse.Namespace) -> None:
    sys.path.insert(0, args.root)
    os.chdir(args.root)
    from tests import stack

    tmp = tempfile.mkdtemp(prefix="bsepar-chat-page-")
    os.environ.update(stack.panel_env(f"sqlite:///{tmp}/bench.sqlite3", None, f"{tmp}/static"))
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.test import Client

    from ai_chat.models import Conversation, Message, Role

    call_command("migrate", verbosity=0)
    call_command("collectstatic", interactive=False, verbosity=0)  # the manifest
    user = User.objects.create_user("bench", password="bench-password-123")
    conversations = Conversation.objects.bulk_create(
        Conversation(
            owner=user, title=f"Conversation {i}: a title of ordinary length", pinned=i < 3
        )
        for i in range(args.conversations)
    )
    opened = conversations[-1]
    for i in range(20):
        message = Message(conversation=opened, role=Role.USER if i % 2 == 0 else Role.ASSISTANT)
        message.set_content(
            f"Message {i}: a paragraph of ordinary length, **some** words and `code`."
        )
        message.save()
    client = Client(HTTP_HOST=stack.HOST, **{"wsgi.url_scheme": "https"})
    client.force_login(user)
    pages = {"chat": "/ai-chat/", "conversation": f"/ai-chat/c/{opened.pk}/", "dashboard": "/"}
    result: dict[str, dict] = {}
    for name, path in pages.items():
        for _ in range(5):
            assert client.get(path, secure=True).status_code == 200, path
        cpu, wall = [], []
        for _ in range(args.requests):
            c0, w0 = time.thread_time(), time.perf_counter()
            response = client.get(path, secure=True)
            cpu.append((time.thread_time() - c0) * 1000)
            wall.append((time.perf_counter() - w0) * 1000)
            assert response.status_code == 200, path
        result[name] = {
            "cpu_ms": statistics.median(cpu),
            "cpu_min_ms": min(cpu),
            "wall_ms": statistics.median(wall),
            "html_bytes": len(response.content),
        }
    print(json.dumps({"root": args.root, "pages": result}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", help="run one tree's code (what each round's child does)")
    parser.add_argument("--roots", nargs="+", default=[str(ROOT)])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--conversations", type=int, default=300)
    args = parser.parse_args()
    if args.root:
        child(args)
        return
    print(f"load {os.getloadavg()[0]:.2f} at the start", flush=True)
    runs: dict[str, list[dict]] = {root: [] for root in args.roots}
    for _ in range(args.rounds):
        for root in args.roots:
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--root",
                    root,
                    "--requests",
                    str(args.requests),
                    "--conversations",
                    str(args.conversations),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            line = out.stdout.strip().splitlines()[-1]
            print(line, flush=True)
            runs[root].append(json.loads(line)["pages"])
    print(f"load {os.getloadavg()[0]:.2f} at the end\n")
    print("| tree | page | CPU ms median of rounds (min–max) | wall ms | HTML bytes |")
    print("| --- | --- | ---: | ---: | ---: |")
    for root, rounds in runs.items():
        for page in rounds[0]:
            cpu = [r[page]["cpu_ms"] for r in rounds]
            wall = [r[page]["wall_ms"] for r in rounds]
            print(
                f"| {root} | {page} | {statistics.median(cpu):.1f} ({min(cpu):.1f}–{max(cpu):.1f})"
                f" | {statistics.median(wall):.1f} | {rounds[-1][page]['html_bytes']:,} |"
            )


if __name__ == "__main__":
    main()
