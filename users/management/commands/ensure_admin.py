"""Create the first administrator when there is no user yet, and print `make run`'s banner.

The username and password come from ADMIN_USERNAME / ADMIN_PASSWORD; without a password a
random one is generated, printed once and written to `.admin-password` in the data directory
(mode 0600), so it is not lost when the server's log scrolls it away. With `--url` the command
ends with a banner: where the panel is served, the admin user, and where its password is.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser

PASSWORD_FILE = ".admin-password"


def password_file() -> Path:
    return Path(settings.DATA_DIR) / PASSWORD_FILE


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path`, readable by its owner only (0600 from the first byte: the file is
    created with that mode, and an older file's mode is tightened before it is rewritten)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
    finally:
        os.close(fd)


class Command(BaseCommand):
    help = "Create an admin account if the database has no user yet; --url prints the banner."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--url", help="the address the panel is served at, for the banner")

    def handle(self, *args: object, **options: object) -> None:
        User = get_user_model()
        if User.objects.exists():
            self.stdout.write("Users exist; no admin created.")
        else:
            self.create_admin(User)
        if options.get("url"):
            self.banner(str(options["url"]), User)

    def create_admin(self, User) -> None:  # type: ignore[no-untyped-def]
        username = os.environ.get("ADMIN_USERNAME") or "admin"
        password = os.environ.get("ADMIN_PASSWORD")
        generated = not password
        if generated:
            password = secrets.token_urlsafe(12)
        User.objects.create_superuser(username=username, email="", password=password)
        if generated:
            write_private(password_file(), f"{password}\n")
            self.stdout.write(
                self.style.SUCCESS(
                    f"Created admin account '{username}' with password: {password}\n"
                    f"It is shown only this once, and kept in {password_file()} (readable only "
                    "by you): sign in, change it, then delete that file."
                )
            )
        else:
            self.stdout.write(self.style.SUCCESS(f"Created admin account '{username}'."))

    def banner(self, url: str, User) -> None:  # type: ignore[no-untyped-def]
        admin = User.objects.filter(is_superuser=True).order_by("pk").first()
        stored = password_file()
        if admin is None:
            who, where = "none (python manage.py createsuperuser)", "—"
        elif stored.exists():
            who, where = admin.get_username(), f"in {stored} (mode 0600), unless changed since"
        else:
            who, where = admin.get_username(), "the one you chose (ADMIN_PASSWORD or changed since)"
        lines = [
            f"bsepar panel: {url}",
            f"Admin user:   {who}",
            f"Password:     {where}",
            "Address:      HOST and PORT (make run HOST=0.0.0.0 PORT=8080); Ctrl+C stops it.",
        ]
        rule = "=" * max(len(line) for line in lines)
        self.stdout.write("\n".join(["", rule, *lines, rule, ""]))
