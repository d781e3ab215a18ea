"""Backups that restore: a consistent copy of the database and the attachments in one folder.

`manage.py backup` and `manage.py restore` are thin wrappers over `create_backup` and
`restore_backup`. A backup is a folder `bsepar-YYYYmmdd-HHMMSS/` holding:

- `db.sqlite3` (SQLite's online backup API: a consistent snapshot taken while writers run, which
  copying the file in WAL mode is not) or `db.dump` (`pg_dump -Fc`: one snapshot transaction);
- `media/`: the attachments under MEDIA_ROOT;
- `manifest.json`: the engine and when it was taken (no secrets).

Folders are 0700 and files 0600. The encryption keys are never written: without ENCRYPTION_KEYS the
provider keys in a backup cannot be decrypted, so they must be kept separately.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import sqlite3
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.db import connections

FOLDER_RE = re.compile(r"^bsepar-\d{8}-\d{6}$")
SQLITE_FILE = "db.sqlite3"
PG_FILE = "db.dump"
MANIFEST = "manifest.json"


class BackupError(Exception):
    """A backup or restore could not be made; the message says why and is safe to show."""


def _engine(alias: str = "default") -> str:
    engine = connections[alias].vendor
    if engine not in ("sqlite", "postgresql"):
        raise BackupError(f"backups support SQLite and PostgreSQL, not {engine}")
    return engine


@contextmanager
def _private_umask() -> Iterator[None]:
    """Create everything 0600/0700 from the start, so no file is ever readable by others."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def _pg_env(settings_dict: dict) -> tuple[list[str], dict[str, str]]:
    """Connection arguments for pg_dump/pg_restore; the password goes in the environment,
    never on the command line (where `ps` would show it)."""
    args = []
    if settings_dict.get("HOST"):
        args += ["--host", str(settings_dict["HOST"])]
    if settings_dict.get("PORT"):
        args += ["--port", str(settings_dict["PORT"])]
    if settings_dict.get("USER"):
        args += ["--username", str(settings_dict["USER"])]
    env = dict(os.environ)
    if settings_dict.get("PASSWORD"):
        env["PGPASSWORD"] = str(settings_dict["PASSWORD"])
    return args, env


def _run(command: list[str], env: dict[str, str], what: str) -> None:
    try:
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600)
    except FileNotFoundError as exc:
        raise BackupError(
            f"{command[0]} is not installed (apt-get install postgresql-client)"
        ) from exc
    if result.returncode != 0:
        raise BackupError(f"{what} failed: {result.stderr.strip()[-2000:]}")


def _copy_media(source: Path, target: Path) -> int:
    """Copy the tree under `source` into `target` (created), regular files only; return the
    number of files. Symlinks are skipped: an attachment is never a link."""
    target.mkdir(parents=True, exist_ok=True)
    count = 0
    if not source.is_dir():
        return 0
    for root, dirs, files in os.walk(source):
        rel = Path(root).relative_to(source)
        for name in dirs:
            if not (Path(root) / name).is_symlink():
                (target / rel / name).mkdir(exist_ok=True)
        for name in files:
            path = Path(root) / name
            if path.is_symlink() or not path.is_file():
                continue
            shutil.copyfile(path, target / rel / name)
            count += 1
    return count


def _fix_modes(folder: Path) -> None:
    for root, dirs, files in os.walk(folder):
        os.chmod(root, 0o700)
        for name in dirs:
            os.chmod(Path(root) / name, 0o700)
        for name in files:
            os.chmod(Path(root) / name, 0o600)


def create_backup(output: Path | None = None, *, now: dt.datetime | None = None) -> Path:
    """Write a backup folder under `output` (default settings.BACKUP_DIR) and return its path.

    Raises BackupError when the database cannot be copied or the folder exists already.
    """
    output = Path(output or settings.BACKUP_DIR)
    engine = _engine()
    stamp = (now or dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
    final = output / f"bsepar-{stamp}"
    if final.exists():
        raise BackupError(f"{final} exists already; wait a second and run it again")
    # Written under a hidden name and renamed at the end: a folder with the final name is
    # always complete, whatever interrupted a backup.
    partial = output / f".bsepar-{stamp}.partial"
    with _private_umask():
        output.mkdir(parents=True, exist_ok=True)
        if partial.exists():
            shutil.rmtree(partial)
        partial.mkdir()
        try:
            settings_dict = connections["default"].settings_dict
            if engine == "sqlite":
                _backup_sqlite(Path(settings_dict["NAME"]), partial / SQLITE_FILE)
            else:
                args, env = _pg_env(settings_dict)
                _run(
                    [
                        "pg_dump",
                        "--format=custom",
                        "--no-owner",
                        "--file",
                        str(partial / PG_FILE),
                        *args,
                        str(settings_dict["NAME"]),
                    ],
                    env,
                    "pg_dump",
                )
            files = _copy_media(Path(settings.MEDIA_ROOT), partial / "media")
            (partial / MANIFEST).write_text(
                json.dumps(
                    {
                        "format": 1,
                        "engine": engine,
                        "created": dt.datetime.now(dt.UTC).isoformat(),
                        "media_files": files,
                    },
                    indent=2,
                )
                + "\n"
            )
            _fix_modes(partial)
            partial.rename(final)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    return final


def _backup_sqlite(source: Path, target: Path) -> None:
    """SQLite's online backup API: a consistent copy even while other processes write (WAL).

    The copy is made in one step (pages=-1), so it is one read snapshot: in WAL mode that blocks
    no writer, and nothing written after it started is half in it.
    """
    if not source.is_file():
        raise BackupError(f"the database {source} does not exist")
    src = sqlite3.connect(source.resolve().as_uri() + "?mode=ro", uri=True, timeout=30)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst, pages=-1)
            # The copy is a single file: no -wal beside it to lose.
            dst.execute("PRAGMA journal_mode=DELETE")
        finally:
            dst.close()
    except sqlite3.Error as exc:
        raise BackupError(f"the SQLite backup failed: {exc}") from exc
    finally:
        src.close()


def prune(output: Path, keep_days: int, *, now: dt.datetime | None = None) -> list[Path]:
    """Delete backup folders under `output` older than `keep_days` days (by the date in their
    name); return what was deleted. Only folders named like a backup are ever touched."""
    cutoff = (now or dt.datetime.now()) - dt.timedelta(days=keep_days)
    removed = []
    if not output.is_dir():
        return removed
    for path in sorted(output.iterdir()):
        if not (path.is_dir() and not path.is_symlink() and FOLDER_RE.match(path.name)):
            continue
        taken = dt.datetime.strptime(path.name[len("bsepar-") :], "%Y%m%d-%H%M%S")
        if taken < cutoff:
            shutil.rmtree(path)
            removed.append(path)
    return removed


def _read_manifest(folder: Path) -> dict:
    if not folder.is_dir():
        raise BackupError(f"{folder} is not a folder")
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise BackupError(
            f"{folder} is not a bsepar panel backup (no readable {MANIFEST})"
        ) from exc
    if manifest.get("engine") not in ("sqlite", "postgresql"):
        raise BackupError(f"{folder / MANIFEST} names no known database engine")
    return manifest


def _is_empty_installation() -> str | None:
    """None when the database has no tables and MEDIA_ROOT holds no files; else the reason."""
    connection = connections["default"]
    # Connecting to SQLite creates the file: a missing database is empty as it is.
    if connection.vendor != "sqlite" or Path(connection.settings_dict["NAME"]).exists():
        with connection.cursor() as cursor:
            tables = connection.introspection.table_names(cursor)
        connection.close()
        if tables:
            return f"the database already has {len(tables)} table(s)"
    media = Path(settings.MEDIA_ROOT)
    if media.is_dir() and any(p.is_file() for p in media.rglob("*")):
        return f"{media} already holds files"
    return None


def restore_backup(folder: Path) -> dict:
    """Put the backup in `folder` back into this installation, which must be empty (a database
    without tables, no files under MEDIA_ROOT). Return the manifest.

    Raises BackupError, having changed nothing, when the folder is not a backup, is of another
    engine, or the installation is not empty.
    """
    folder = Path(folder)
    manifest = _read_manifest(folder)
    engine = _engine()
    if manifest["engine"] != engine:
        raise BackupError(
            f"this backup is of a {manifest['engine']} database but DATABASE_URL is {engine}; "
            "to move between them see docs/operations.md (dumpdata/loaddata)"
        )
    data = folder / (SQLITE_FILE if engine == "sqlite" else PG_FILE)
    if not data.is_file():
        raise BackupError(f"{data} is missing")
    reason = _is_empty_installation()
    if reason:
        raise BackupError(
            f"restore only goes into an empty installation, and {reason}. Restore into a new "
            "database (or move the current one aside) and an empty MEDIA_ROOT."
        )
    settings_dict = connections["default"].settings_dict
    if engine == "sqlite":
        _restore_sqlite(data, Path(settings_dict["NAME"]))
    else:
        args, env = _pg_env(settings_dict)
        _run(
            [
                "pg_restore",
                "--no-owner",
                "--no-privileges",
                "--exit-on-error",
                "--single-transaction",
                "--dbname",
                str(settings_dict["NAME"]),
                *args,
                str(data),
            ],
            env,
            "pg_restore",
        )
    _copy_media(folder / "media", Path(settings.MEDIA_ROOT))
    _media_modes(Path(settings.MEDIA_ROOT))
    return manifest


def _media_modes(root: Path) -> None:
    """Give restored files the modes the panel writes (FILE_UPLOAD_PERMISSIONS; folders
    FILE_UPLOAD_DIRECTORY_PERMISSIONS or 0750), whatever the umask of the restoring shell: the
    backup's own files are 0600, and nginx's group must read the attachments (deploy/install.sh
    makes their folders setgid to it, which new folders inherit and is kept here)."""
    file_mode = settings.FILE_UPLOAD_PERMISSIONS or 0o640
    dir_mode = settings.FILE_UPLOAD_DIRECTORY_PERMISSIONS or 0o750
    for current, dirs, files in os.walk(root):
        for name in dirs:
            path = Path(current) / name
            if not path.is_symlink():
                os.chmod(path, dir_mode | (path.stat().st_mode & stat.S_ISGID))
        for name in files:
            path = Path(current) / name
            if not path.is_symlink():
                os.chmod(path, file_mode)


def _restore_sqlite(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        src = sqlite3.connect(source.resolve().as_uri() + "?mode=ro", uri=True)
        try:
            dst = sqlite3.connect(target)
            try:
                src.backup(dst, pages=-1)
                # Back to the mode the panel runs in (settings: WAL for every connection).
                dst.execute("PRAGMA journal_mode=WAL")
            finally:
                dst.close()
        finally:
            src.close()
    except sqlite3.Error as exc:
        raise BackupError(f"the SQLite restore failed: {exc}") from exc
