"""Close replies left `streaming` by a worker that died mid-stream.

A reply's job saves it when it ends, however it ends (on a graceful restart too, as
interrupted); a row still `streaming` after `--minutes` belongs to a process that crashed or
was killed. It is marked `error` (code `provider`) with the text of its last checkpoint (its
worker saves the text of running replies about once a second: ai_chat/jobs.py), and the
budget reservations older than `--minutes` are released (api_manager.budget).
"""

from __future__ import annotations

import datetime as dt

from django.core.management.base import BaseCommand
from django.utils import timezone

from ai_chat.models import Message, Status
from api_manager import budget


class Command(BaseCommand):
    help = "Mark replies stuck in `streaming` (from a crashed worker) as interrupted."

    def add_arguments(self, parser) -> None:  # type: ignore[no-untyped-def]
        parser.add_argument(
            "--minutes", type=int, default=30, help="age after which a streaming reply is stale"
        )

    def handle(self, *args: object, minutes: int, **options: object) -> None:
        cutoff = timezone.now() - dt.timedelta(minutes=minutes)
        closed = Message.objects.filter(status=Status.STREAMING, created_at__lt=cutoff).update(
            status=Status.ERROR,
            error_code="provider",
            error_message="The reply was interrupted (the server stopped while streaming).",
        )
        self.stdout.write(f"Closed {closed} stale streaming repl{'y' if closed == 1 else 'ies'}.")
        # Their budget reservations too: nothing was recorded for them, so nothing is charged.
        released = budget.release_stale(cutoff)
        self.stdout.write(f"Released {released} stale budget reservation(s).")
