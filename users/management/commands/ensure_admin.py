"""Create the first administrator when there is no user yet.

The username and password come from ADMIN_USERNAME / ADMIN_PASSWORD; without a password a
random one is generated and printed once.
"""

from __future__ import annotations

import os
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create an admin account if the database has no user yet."

    def handle(self, *args: object, **options: object) -> None:
        User = get_user_model()
        if User.objects.exists():
            self.stdout.write("Users exist; no admin created.")
            return
        username = os.environ.get("ADMIN_USERNAME") or "admin"
        password = os.environ.get("ADMIN_PASSWORD")
        generated = not password
        if generated:
            password = secrets.token_urlsafe(12)
        User.objects.create_superuser(username=username, email="", password=password)
        if generated:
            self.stdout.write(
                self.style.SUCCESS(
                    f"Created admin account '{username}' with password: {password}\n"
                    "It is shown only this once: sign in and change it."
                )
            )
        else:
            self.stdout.write(self.style.SUCCESS(f"Created admin account '{username}'."))
