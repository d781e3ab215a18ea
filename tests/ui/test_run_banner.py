"""Issue #12.11: `make run` ends with a banner (the address, the admin user and where its
password is); a generated password is printed once and kept in a 0600 file in the data dir."""

from __future__ import annotations

import re
import stat
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

MAKEFILE = Path(__file__).resolve().parents[2] / "Makefile"


@pytest.fixture
def data_dir(settings, tmp_path, monkeypatch):
    settings.DATA_DIR = tmp_path / "data"
    monkeypatch.delenv("ADMIN_USERNAME", raising=False)
    monkeypatch.delenv("ADMIN_PASSWORD", raising=False)
    return settings.DATA_DIR


def run(*args: str) -> str:
    out = StringIO()
    call_command("ensure_admin", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_a_generated_password_is_printed_once_and_kept_in_a_private_file(data_dir):
    said = run("--url", "http://127.0.0.1:8000/")
    stored = data_dir / ".admin-password"
    password = stored.read_text().strip()
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    admin = get_user_model().objects.get()
    assert admin.is_superuser and admin.check_password(password)
    assert said.count(password) == 1  # in the creation line, not in the banner
    banner = said[said.index("bsepar panel: ") :]
    assert "http://127.0.0.1:8000/" in banner
    assert re.search(r"Admin user: +admin\n", banner)
    assert str(stored) in banner and password not in banner

    # The next start prints the banner again, never the password, and keeps the file.
    again = run("--url", "http://0.0.0.0:8080/")
    assert password not in again
    assert "no admin created" in again and "http://0.0.0.0:8080/" in again
    assert str(stored) in again
    assert stored.read_text().strip() == password


@pytest.mark.django_db
def test_a_chosen_password_is_neither_printed_nor_written(data_dir, monkeypatch):
    monkeypatch.setenv("ADMIN_USERNAME", "root")
    monkeypatch.setenv("ADMIN_PASSWORD", "a chosen secret 42")
    said = run("--url", "http://127.0.0.1:8000/")
    assert "a chosen secret 42" not in said
    assert not (data_dir / ".admin-password").exists()
    assert re.search(r"Admin user: +root\n", said)
    assert "ADMIN_PASSWORD" in said


@pytest.mark.django_db
def test_an_old_password_file_is_made_private_when_rewritten(data_dir):
    data_dir.mkdir()
    old = data_dir / ".admin-password"
    old.write_text("stale\n")
    old.chmod(0o644)
    run()
    assert stat.S_IMODE(old.stat().st_mode) == 0o600
    assert old.read_text().strip() != "stale"


def test_make_run_prints_the_banner_last_before_serving():
    recipe = MAKEFILE.read_text().split("\nrun:", 1)[1].split("\n\n", 1)[0]
    commands = [line.strip() for line in recipe.splitlines()[1:] if line.startswith("\t")]
    assert "ensure_admin --url http://$(HOST):$(PORT)/" in commands[-2]
    assert "gunicorn" in commands[-1]
