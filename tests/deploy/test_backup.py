"""`manage.py backup` / `restore` round-trip: taken under write load, restored into a fresh
database, every message, provider key (still decrypting) and attachment comes back.

Runs on the suite's database engine: SQLite (online backup API) or PostgreSQL (pg_dump -Fc).
"""

from __future__ import annotations

import grp
import hashlib
import io
import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import close_old_connections, connection

from ai_chat.models import Conversation, Message
from api_manager.models import ProviderKey
from tests import stack

pytestmark = pytest.mark.django_db(transaction=True)

SECRETS = {"openai": "sk-test-openai-0123456789abcdefWXYZ", "anthropic": "sk-ant-test-9876abcd"}
MEDIA = {
    "attachments/2026/11/notes.txt": b"hello\n",
    "attachments/2026/11/image.png": bytes(range(256)) * 40,
    "attachments/deep/er/\u0641\u0627\u06cc\u0644.md": "\u0633\u0644\u0627\u0645".encode(),
}


class Writer(threading.Thread):
    """Saves messages one after another, as chat turns do, until stopped; `written` holds
    the ids of the messages whose save had returned (committed)."""

    def __init__(self, conversation: Conversation) -> None:
        super().__init__(daemon=True)
        self.conversation = conversation
        self.written: list[int] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                message = Message.objects.create(
                    conversation=self.conversation, role="user", content=f"n{len(self.written)}"
                )
                self.written.append(message.pk)
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            close_old_connections()
            connection.close()

    def wait_for(self, count: int, timeout: float = 60.0) -> None:
        import time

        deadline = time.monotonic() + timeout
        while len(self.written) < count:
            assert self.error is None, self.error
            assert time.monotonic() < deadline, f"only {len(self.written)} messages written"
            time.sleep(0.01)


def seed(media_root: Path, alice) -> Conversation:
    for provider, secret in SECRETS.items():
        key = ProviderKey(owner=alice, provider=provider, label=f"{provider} key")
        key.set_secret(secret)
        key.save()
    conversation = Conversation.objects.create(owner=alice, title="backed up")
    for relative, content in MEDIA.items():
        path = media_root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return conversation


def fresh_database(tmp_path: Path) -> tuple[str, object]:
    """A DATABASE_URL for a new, empty database of the suite's engine, and a cleanup."""
    settings_dict = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{tmp_path / 'restored.sqlite3'}", lambda: None
    import psycopg

    name = f"{settings_dict['NAME']}_restored"
    admin = dict(
        host=settings_dict.get("HOST") or "127.0.0.1",
        port=settings_dict.get("PORT") or 5432,
        user=settings_dict.get("USER") or "postgres",
        password=settings_dict.get("PASSWORD") or None,
        dbname="postgres",
        autocommit=True,
    )
    with psycopg.connect(**admin) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(**admin) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return stack.database_url(dict(settings_dict, NAME=name)), drop


INSPECT = """
import hashlib, json
from ai_chat.models import Message
from api_manager.models import ProviderKey
print(json.dumps({
    "messages": sorted(Message.objects.values_list("id", flat=True)),
    "keys": {k.provider: hashlib.sha256(k.get_secret().encode()).hexdigest()
             for k in ProviderKey.objects.all()},
}))
"""


def manage(env: dict[str, str], *args: str, umask: int = -1) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=stack.ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        umask=umask,
    )


def another_group() -> int | None:
    """A group this process may give its files other than its own: as root `nogroup` (the
    group of the test nginx's workers), else one of the user's supplementary groups, or None."""
    if os.geteuid() == 0:
        return grp.getgrnam("nogroup").gr_gid
    others = [gid for gid in os.getgroups() if gid != os.getegid()]
    return others[0] if others else None


def test_a_backup_under_write_load_restores_every_message_key_and_file(tmp_path, settings, alice):
    settings.MEDIA_ROOT = tmp_path / "media"
    conversation = seed(settings.MEDIA_ROOT, alice)
    writer = Writer(conversation)
    writer.start()
    try:
        writer.wait_for(20)
        committed_before = list(writer.written)
        out = io.StringIO()
        call_command("backup", output=tmp_path / "backups", stdout=out)
        written_after = len(writer.written)
        # Keep writing after the backup, so it was taken in the middle of the load.
        writer.wait_for(written_after + 20)
    finally:
        writer.stop.set()
        writer.join(30)
    assert writer.error is None, writer.error
    folder = Path(out.getvalue().strip())
    assert folder.parent == tmp_path / "backups"
    assert folder.name.startswith("bsepar-")

    # Private: the folder 0700 and every file 0600; the encryption keys and the plaintext
    # provider keys appear nowhere in it.
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert files
    for path in folder.rglob("*"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))
    database_file = "db.sqlite3" if connection.vendor == "sqlite" else "db.dump"
    assert (folder / database_file).is_file()
    for path in files:
        data = path.read_bytes()
        assert stack.ENCRYPTION_KEYS.encode() not in data, path
        for secret in SECRETS.values():
            assert secret.encode() not in data, path

    # Restore into a fresh database and an empty MEDIA_ROOT, as a new server would.
    database, drop = fresh_database(tmp_path)
    try:
        env = stack.panel_env(
            database, None, str(tmp_path / "static"), MEDIA_ROOT=str(tmp_path / "media2")
        )
        # As deploy/install.sh leaves it: the attachments folder setgid to nginx's group. The
        # restore runs under a strict umask and must still leave the files readable by it.
        attachments = tmp_path / "media2" / "attachments"
        attachments.mkdir(parents=True)
        group = another_group()
        if group is not None:
            os.chown(attachments, -1, group)
        attachments.chmod(0o2750)
        restored = manage(env, "restore", str(folder), umask=0o077)
        assert restored.returncode == 0, restored.stderr
        inspected = manage(env, "shell", "--no-imports", "-c", INSPECT)
        assert inspected.returncode == 0, inspected.stderr
        state = json.loads(inspected.stdout)
        # The restored database needs no migration: it is the panel's schema as backed up.
        plan = manage(env, "migrate", "--check")
        assert plan.returncode == 0, plan.stdout + plan.stderr
    finally:
        drop()

    restored_ids = set(state["messages"])
    # Every message committed before the backup started is there...
    assert set(committed_before) <= restored_ids
    # ...and the copy is one consistent moment: the writer's messages in it are a prefix of
    # what it wrote, none of them missing in the middle.
    ours = [pk for pk in writer.written if pk in restored_ids]
    assert ours == writer.written[: len(ours)]
    assert restored_ids == set(ours)
    # Each provider key still decrypts with the same ENCRYPTION_KEYS, to the same secret.
    assert state["keys"] == {
        provider: hashlib.sha256(secret.encode()).hexdigest()
        for provider, secret in SECRETS.items()
    }
    for relative, content in MEDIA.items():
        path = tmp_path / "media2" / relative
        assert path.read_bytes() == content
        assert stat.S_IMODE(path.stat().st_mode) == 0o640, (path, oct(path.stat().st_mode))
        for folder_path in path.relative_to(attachments).parents:
            mode = stat.S_IMODE((attachments / folder_path).stat().st_mode)
            assert mode == 0o2750, (folder_path, oct(mode))
        if group is not None:
            assert path.stat().st_gid == group


def test_restore_refuses_an_installation_that_is_not_empty(tmp_path, settings, alice):
    settings.MEDIA_ROOT = tmp_path / "media"
    conversation = seed(settings.MEDIA_ROOT, alice)
    Message.objects.create(conversation=conversation, role="user", content="kept")
    out = io.StringIO()
    call_command("backup", output=tmp_path / "backups", stdout=out)
    folder = Path(out.getvalue().strip())
    Message.objects.create(conversation=conversation, role="user", content="after the backup")

    with pytest.raises(CommandError, match="empty installation"):
        call_command("restore", str(folder))
    assert list(Message.objects.values_list("content", flat=True)) == ["kept", "after the backup"]


def test_restore_refuses_a_folder_that_is_not_a_backup(tmp_path, db):
    (tmp_path / "db.sqlite3").write_bytes(b"not a database")
    with pytest.raises(CommandError, match="not a bsepar panel backup"):
        call_command("restore", str(tmp_path))
    with pytest.raises(CommandError, match="not a folder"):
        call_command("restore", str(tmp_path / "missing"))


def test_restore_refuses_a_backup_of_the_other_engine(tmp_path, db):
    other = "postgresql" if connection.vendor == "sqlite" else "sqlite"
    (tmp_path / "manifest.json").write_text(json.dumps({"format": 1, "engine": other}))
    with pytest.raises(CommandError, match=f"{other} database"):
        call_command("restore", str(tmp_path))


def test_restore_refuses_a_media_root_that_holds_files(tmp_path, settings, alice):
    settings.MEDIA_ROOT = tmp_path / "media"
    seed(settings.MEDIA_ROOT, alice)
    out = io.StringIO()
    call_command("backup", output=tmp_path / "backups", stdout=out)
    folder = Path(out.getvalue().strip())
    database, drop = fresh_database(tmp_path)
    try:
        env = stack.panel_env(
            database, None, str(tmp_path / "static"), MEDIA_ROOT=str(tmp_path / "media")
        )
        result = manage(env, "restore", str(folder))
        assert result.returncode != 0
        assert "already holds files" in result.stderr
        # Nothing was written to the database either.
        tables = manage(
            env,
            "shell",
            "--no-imports",
            "-c",
            "from django.db import connection; print(len(connection.introspection.table_names()))",
        )
        assert tables.stdout.strip() == "0", tables.stdout + tables.stderr
    finally:
        drop()


def test_keep_days_removes_only_old_backup_folders(tmp_path, db, settings):
    settings.MEDIA_ROOT = tmp_path / "media"
    backups = tmp_path / "backups"
    old = backups / "bsepar-20200101-000000"
    recent_name = "bsepar-" + __import__("datetime").datetime.now().strftime("%Y%m%d") + "-000000"
    unrelated = backups / "keep-me-20200101"
    for path in (old, backups / recent_name, unrelated):
        path.mkdir(parents=True)
    err = io.StringIO()
    call_command("backup", output=backups, keep_days=7, stdout=io.StringIO(), stderr=err)
    assert not old.exists()
    assert (backups / recent_name).exists()
    assert unrelated.exists()
    assert str(old) in err.getvalue()
    assert len([p for p in backups.iterdir() if p.name.startswith("bsepar-")]) == 2


def test_the_default_backup_dir_is_in_the_data_directory(tmp_path):
    env = stack.panel_env(
        f"sqlite:///{tmp_path / 'data' / 'db.sqlite3'}", None, str(tmp_path / "static")
    )
    env.pop("MEDIA_ROOT", None)
    env.pop("BACKUP_DIR", None)
    script = (
        "from django.conf import settings; print(settings.MEDIA_ROOT); print(settings.BACKUP_DIR)"
    )
    result = manage(env, "shell", "--no-imports", "-c", script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        str(tmp_path / "data" / "media"),
        str(tmp_path / "data" / "backups"),
    ]
