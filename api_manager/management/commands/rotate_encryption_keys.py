"""Re-encrypt every stored secret with the newest key in ENCRYPTION_KEYS."""

from __future__ import annotations

from django.core.management.base import BaseCommand
from django.db import transaction

from api_manager.models import ProviderKey
from core import crypto


class Command(BaseCommand):
    help = "Re-encrypt every provider key with the newest ENCRYPTION_KEYS entry."

    def handle(self, *args: object, **options: object) -> None:
        rotated = unreadable = 0
        with transaction.atomic():
            for key in ProviderKey.objects.select_for_update().only("id", "secret_encrypted"):
                try:
                    key.secret_encrypted = crypto.rotate(key.secret_encrypted)
                except crypto.DecryptionError:
                    unreadable += 1
                    self.stderr.write(
                        f"key {key.pk}: unreadable with the configured keys; enter it again"
                    )
                    continue
                key.save(update_fields=["secret_encrypted"])
                rotated += 1
        self.stdout.write(
            self.style.SUCCESS(f"Re-encrypted {rotated} key(s); {unreadable} unreadable.")
        )
