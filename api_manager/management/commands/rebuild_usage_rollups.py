"""Rebuild the daily usage rollups and the budget counters from the usage records.

`--check` changes nothing: it compares them with the records' sums and exits non-zero when
they differ (for a cron job or a check after a restore).
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from api_manager import rollups
from api_manager.models import BudgetCounter, UsageRecord, UsageRollup


class Command(BaseCommand):
    help = "Rebuild the daily usage rollups from the usage records (--check: only compare)."

    def add_arguments(self, parser) -> None:  # type: ignore[no-untyped-def]
        parser.add_argument(
            "--check",
            action="store_true",
            help="change nothing; exit 1 if the rollups differ from the records' sums",
        )

    def handle(self, *args: object, check: bool, **options: object) -> None:
        if check:
            problems = rollups.differences(UsageRecord, UsageRollup, BudgetCounter)
            if problems:
                for line in problems[:50]:
                    self.stderr.write(line)
                raise CommandError(
                    f"{len(problems)} rollup or counter rows differ from the usage records: "
                    "run `manage.py rebuild_usage_rollups`.",
                    returncode=1,
                )
            self.stdout.write("The usage rollups equal the records' sums.")
            return
        count, months = rollups.rebuild(UsageRecord, UsageRollup, BudgetCounter)
        self.stdout.write(f"Rebuilt {count} daily rollups and {months} monthly key counters.")
