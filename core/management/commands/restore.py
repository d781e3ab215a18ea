"""`manage.py restore FOLDER`: see core/backup.py."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from core.backup import BackupError, restore_backup


class Command(BaseCommand):
    help = (
        "Restore a folder written by `manage.py backup` into an empty installation (a database "
        "without tables and an empty MEDIA_ROOT). The same ENCRYPTION_KEYS must be configured "
        "for the provider keys to decrypt."
    )

    def add_arguments(self, parser) -> None:  # type: ignore[no-untyped-def]
        parser.add_argument("folder", type=Path, help="a bsepar-YYYYmmdd-HHMMSS backup folder")

    def handle(self, *args: object, folder: Path, **options: object) -> None:
        try:
            manifest = restore_backup(folder)
        except BackupError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            self.style.SUCCESS(
                f"Restored {folder} (taken {manifest.get('created', '?')}) into this "
                f"installation; attachments in {settings.MEDIA_ROOT}. Run `migrate` if this "
                "release is newer than the backup."
            )
        )
