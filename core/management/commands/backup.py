"""`manage.py backup [--output DIR] [--keep-days N]`: see core/backup.py."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from core.backup import BackupError, create_backup, prune


class Command(BaseCommand):
    help = (
        "Back up the database (a consistent copy, taken while the panel runs) and the "
        "attachments into DIR/bsepar-YYYYmmdd-HHMMSS/ and print its path. The encryption "
        "keys are not in it: keep ENCRYPTION_KEYS separately."
    )

    def add_arguments(self, parser) -> None:  # type: ignore[no-untyped-def]
        parser.add_argument(
            "--output",
            type=Path,
            default=None,
            help="where to write the backup folder (default: BACKUP_DIR, backups/ in the data directory)",
        )
        parser.add_argument(
            "--keep-days",
            type=int,
            default=None,
            help="afterwards, delete backup folders in DIR older than this many days",
        )

    def handle(
        self, *args: object, output: Path | None, keep_days: int | None, **options: object
    ) -> None:
        if keep_days is not None and keep_days < 1:
            raise CommandError("--keep-days must be at least 1")
        output = output or Path(settings.BACKUP_DIR)
        try:
            folder = create_backup(output)
        except BackupError as exc:
            raise CommandError(str(exc)) from exc
        # The path alone on stdout, so scripts can use it; pruning reports go to stderr.
        self.stdout.write(str(folder))
        if keep_days is not None:
            for removed in prune(output, keep_days):
                self.stderr.write(f"removed {removed}")
