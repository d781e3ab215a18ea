"""Remove attachment files and rows that nothing refers to any more."""

from __future__ import annotations

import datetime
from typing import Any

from django.core.files.storage import default_storage
from django.core.management.base import BaseCommand
from django.utils import timezone

from ai_chat.attachments import PREFIX
from ai_chat.models import Attachment, Message


class Command(BaseCommand):
    help = (
        "Delete attachment rows whose message is gone (with their files) and files under "
        "MEDIA_ROOT/attachments that no row names. Files younger than --min-age-minutes are "
        "kept: a turn writes its files just before it saves their rows."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--min-age-minutes", type=int, default=60)
        parser.add_argument("--dry-run", action="store_true", help="only list what would go")

    def handle(self, *args: Any, min_age_minutes: int, dry_run: bool, **options: Any) -> None:
        rows = Attachment.objects.exclude(message_id__in=Message.objects.values("id"))
        orphan_rows = list(rows.values_list("id", "file"))
        if orphan_rows and not dry_run:
            Attachment.objects.filter(pk__in=[pk for pk, _ in orphan_rows]).delete()
        # The files rows with a message still name (in a dry run the orphan rows are there yet).
        known = set(
            Attachment.objects.filter(message_id__in=Message.objects.values("id")).values_list(
                "file", flat=True
            )
        )
        cutoff = timezone.now() - datetime.timedelta(minutes=min_age_minutes)
        # An edited message's new version names the same files as the old one: a file goes
        # only when no remaining row names it.
        paths = sorted({path for _, path in orphan_rows} - known)
        for path in _files(PREFIX):
            if path in known or path in paths:
                continue
            if default_storage.get_modified_time(path) < cutoff:
                paths.append(path)
        for path in paths:
            if not dry_run:
                default_storage.delete(path)
            self.stdout.write(path)
        verb = "would remove" if dry_run else "removed"
        self.stdout.write(f"{verb} {len(orphan_rows)} rows and {len(paths)} files")


def _files(directory: str) -> list[str]:
    """Every file under `directory` of the default storage (listed through its API)."""
    try:
        folders, names = default_storage.listdir(directory)
    except FileNotFoundError:
        return []
    found = [f"{directory}/{name}" for name in names]
    for folder in folders:
        found += _files(f"{directory}/{folder}")
    return found
