# ruff: noqa: E402 (django.setup() must run before the models are imported)
"""The dashboard's message counts at 10,000 messages, with and without the Message index
(conversation, role, created_at), in process (no server: the query's own time).

    DJANGO_SETTINGS_MODULE=bsepar_panel.settings DJANGO_DEBUG=on \
    DATABASE_URL=sqlite:////tmp/message-counts.sqlite3 python bench/message_counts.py

Use a fresh database file (it migrates and seeds it); the index is dropped and re-created
between runs, four runs each way, median of 50 queries per run, in ms.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import datetime as dt
import statistics
import time

import django

django.setup()
from django.core.management import call_command

call_command("migrate", verbosity=0)
from django.contrib.auth.models import User
from django.db import connection
from django.db.models import Count, Q
from django.utils import timezone

from ai_chat.models import Conversation, Message, Role

u = User.objects.create_user("u")
now = timezone.now()
c = Conversation.objects.create(owner=u, title="t")
Message.objects.bulk_create(
    [
        Message(
            conversation=c,
            role=Role.USER if i % 2 == 0 else Role.ASSISTANT,
            content="x" * 200,
            created_at=now - dt.timedelta(seconds=10000 - i),
        )
        for i in range(10000)
    ],
    batch_size=2000,
)
today = now.replace(hour=0, minute=0, second=0)
month = today.replace(day=1)


def q():
    return Message.objects.filter(conversation__owner=u, role=Role.USER).aggregate(
        today=Count("id", filter=Q(created_at__gte=today)),
        month=Count("id", filter=Q(created_at__gte=month)),
    )


def timeit():
    ts = []
    for _ in range(50):
        t = time.perf_counter()
        q()
        ts.append((time.perf_counter() - t) * 1000)
    return statistics.median(ts)


res = {"with": [], "without": []}
for _round in range(4):
    res["with"].append(timeit())
    with connection.cursor() as cur:
        cur.execute("DROP INDEX ai_chat_msg_conv_role_created")
    res["without"].append(timeit())
    with connection.cursor() as cur:
        cur.execute(
            "CREATE INDEX ai_chat_msg_conv_role_created ON ai_chat_message (conversation_id, role, created_at)"
        )
for k, v in res.items():
    print(k, "median of 50 per run, 4 runs:", [round(x, 2) for x in v])
