"""The append action: add text to the end of a file under FILE_ACTIONS_ROOT, in two steps.

`preview(user, path, content)` changes nothing: it checks the path and content, stores a
pending FileChange and returns a unified diff and a single-use token. `apply(change)` (of a
change found by `pending_by_token` or `pending_by_id`) checks everything again, takes an exclusive lock on the file, checks that what was previewed
is still there, keeps a backup, appends, and fsyncs. `undo(user, change_id)` puts the file back
as it was, if it has not changed since.

The path is refused (nothing is written) when it is absolute, climbs out with `..`, has a NUL
byte, a backslash or a drive letter, is not in NFKC form (Unicode look-alikes such as a
full-width dot), names a dotfile or a denied name, has an extension outside the allow-list, or
passes through a symlink anywhere: the walk opens each directory with O_NOFOLLOW relative to
the one before, never by a joined path string.

A file may grow between preview and confirm (other confirmed appends): the preview stays valid
as long as the bytes it showed are still the file's first bytes. Any other change is a conflict
(409) and answers a fresh preview.
"""

from __future__ import annotations

import datetime as dt
import difflib
import errno
import fcntl
import hashlib
import os
import re
import secrets
import stat
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from ai_chat.actions.checks import root_problem
from ai_chat.actions.errors import ActionRefused
from ai_chat.models import ChangeStatus, FileChange

DRIVE = re.compile(r"^[A-Za-z]:")
UNIT_SUFFIXES = (".service", ".socket", ".timer", ".mount", ".path", ".target")


class FileRefused(ActionRefused):
    """Refused before anything was written; the message says why (status 400)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 400)


class FileConflict(ActionRefused):
    """The file changed since the preview (or since the change, for undo): status 409."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 409)


def _root() -> str:
    """The root, checked again on every use (the system check runs at start only)."""
    root = settings.FILE_ACTIONS_ROOT
    if not root:
        raise FileRefused("File actions are off: FILE_ACTIONS_ROOT is not set.")
    problem = root_problem(root)
    if problem is not None:
        raise FileRefused(
            f"File actions are off: FILE_ACTIONS_ROOT {problem}. An administrator must fix it."
        )
    return str(root)


def check_path(path: Any) -> list[str]:
    """Return the path's parts if its text is acceptable; raise FileRefused otherwise."""
    if not isinstance(path, str) or not path:
        raise FileRefused("Send `path`: a file path relative to the root.")
    if len(path) > 400:
        raise FileRefused("The path is too long.")
    if "\x00" in path:
        raise FileRefused("The path contains a NUL byte.")
    if "\\" in path:
        raise FileRefused("Backslashes are not allowed in paths: use `/`.")
    if DRIVE.match(path):
        raise FileRefused("Drive letters are not allowed: the path is relative to the root.")
    if unicodedata.normalize("NFKC", path) != path:
        raise FileRefused(
            "The path contains look-alike Unicode characters (it is not in NFKC form)."
        )
    if any(unicodedata.category(ch) in {"Cc", "Cf"} for ch in path):
        raise FileRefused("The path contains control characters.")
    if path.startswith("/"):
        raise FileRefused("Absolute paths are not allowed: the path is relative to the root.")
    parts = path.split("/")
    for part in parts:
        if part in {"", ".", ".."}:
            raise FileRefused("Empty, `.` and `..` path segments are not allowed.")
        if part.startswith("."):
            raise FileRefused(f"Dotfiles and dot-directories are not allowed (`{part}`).")
    name = parts[-1]
    if name.lower() in {
        n.lower() for n in settings.FILE_ACTIONS_DENY_NAMES
    } or name.lower().endswith(UNIT_SUFFIXES):
        raise FileRefused(f"Writing to `{name}` is not allowed.")
    extension = os.path.splitext(name)[1].lower()
    if extension not in settings.FILE_ACTIONS_EXTENSIONS:
        raise FileRefused(
            f"The extension `{extension or '(none)'}` is not allowed. Allowed: {', '.join(settings.FILE_ACTIONS_EXTENSIONS)}."
        )
    return parts


def check_content(content: Any) -> bytes:
    if not isinstance(content, str):
        raise FileRefused("Send `content` as text.")
    if not content:
        raise FileRefused("There is nothing to append.")
    if "\x00" in content:
        raise FileRefused("The content contains a NUL byte.")
    try:
        data = content.encode("utf-8")
    except UnicodeEncodeError:
        raise FileRefused("The content is not valid UTF-8 text.") from None
    if len(data) > settings.FILE_ACTIONS_MAX_APPEND_BYTES:
        raise FileRefused(
            f"The content is too large ({len(data):,} bytes; at most {settings.FILE_ACTIONS_MAX_APPEND_BYTES:,})."
        )
    return data


@contextmanager
def _open_parent(parts: list[str]) -> Iterator[int]:
    """Yield a descriptor of the file's directory, walked from the root without following links."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(_root(), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        raise FileRefused("File actions are off: FILE_ACTIONS_ROOT cannot be opened.") from None
    try:
        for part in parts[:-1]:
            try:
                next_fd = os.open(part, flags, dir_fd=fd)
            except FileNotFoundError:
                raise FileRefused(
                    f"The directory `{part}` does not exist under the root."
                ) from None
            except (NotADirectoryError, OSError) as exc:
                raise FileRefused(
                    f"`{part}` is a symlink or not a directory: not allowed."
                ) from exc
            os.close(fd)
            fd = next_fd
        yield fd
    finally:
        os.close(fd)


def _open_file(dir_fd: int, name: str, *, write: bool, create: bool) -> int | None:
    """Open `name` in the directory `dir_fd`: never through a symlink, and only a regular file
    with one link. O_NONBLOCK keeps a FIFO from hanging the open; the type and the link count
    are checked on the opened descriptor (fstat), so nothing can be swapped in between."""
    flags = (os.O_RDWR | os.O_APPEND if write else os.O_RDONLY) | os.O_NOFOLLOW | os.O_CLOEXEC
    flags |= os.O_NONBLOCK
    if create:
        flags |= os.O_CREAT | os.O_EXCL
    try:
        fd = os.open(name, flags, 0o644, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise FileRefused(f"`{name}` is a symlink: not allowed.") from None
        raise FileRefused(f"`{name}` cannot be opened: not allowed.") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise FileRefused(f"`{name}` is not a regular file.")
    if info.st_nlink != 1:
        # A hard link inside the root can point at a file outside it.
        os.close(fd)
        raise FileRefused(f"`{name}` has other hard links: not allowed.")
    return fd


def _read_all(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    if size > settings.FILE_ACTIONS_MAX_FILE_BYTES:
        raise FileRefused("The file is larger than the allowed size.")
    return os.pread(fd, size, 0)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _diff(path: str, before: bytes, data: bytes) -> str:
    old = before.decode("utf-8").splitlines(keepends=True)
    new = (before + data).decode("utf-8").splitlines(keepends=True)
    lines = difflib.unified_diff(old, new, fromfile=f"a/{path}", tofile=f"b/{path}", n=3)
    return "".join(
        line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines
    )


def _current(parts: list[str]) -> bytes | None:
    with _open_parent(parts) as dir_fd:
        fd = _open_file(dir_fd, parts[-1], write=False, create=False)
        if fd is None:
            return None
        try:
            return _read_all(fd)
        finally:
            os.close(fd)


def _check_text(before: bytes) -> None:
    try:
        before.decode("utf-8")
    except UnicodeDecodeError:
        raise FileRefused("The file is not UTF-8 text.") from None


@dataclass
class Preview:
    change: FileChange
    token: str
    diff: str

    def as_json(self) -> dict[str, Any]:
        return {
            "preview": self.diff,
            "token": self.token,
            "change": self.change.pk,
            "path": self.change.path,
        }


def preview(user: Any, path: Any, content: Any) -> Preview:
    """Check, diff and store a pending change; writes nothing to the file."""
    parts = check_path(path)
    data = check_content(content)
    before = _current(parts)
    if before is not None:
        _check_text(before)
    size = len(before or b"")
    if size + len(data) > settings.FILE_ACTIONS_MAX_FILE_BYTES:
        raise FileRefused(
            f"The file would grow past {settings.FILE_ACTIONS_MAX_FILE_BYTES:,} bytes."
        )
    token = secrets.token_urlsafe(32)
    change = FileChange.objects.create(
        user=user,
        path=path,
        content=content,
        token_hash=_sha(token.encode()),
        base_size=size,
        base_hash=_sha(before or b""),
        created_new=before is None,
        expires_at=timezone.now() + dt.timedelta(seconds=settings.FILE_ACTIONS_TOKEN_SECONDS),
    )
    return Preview(change, token, _diff(path, before or b"", data))


def pending_by_token(user: Any, token: Any) -> FileChange:
    if not isinstance(token, str) or not token:
        raise FileRefused("Send the `token` from the preview.")
    change = FileChange.objects.filter(token_hash=_sha(token.encode()), user=user).first()
    if change is None or change.status != ChangeStatus.PENDING:
        raise FileRefused("That token is unknown or has been used.")
    if change.expires_at <= timezone.now():
        raise FileRefused("That token has expired: preview the change again.")
    return change


def pending_by_id(user: Any, change_id: int) -> FileChange:
    """A pending, unexpired change of `user` (for approval cards, which hold no token)."""
    change = FileChange.objects.filter(pk=change_id, user=user).first()
    if change is None or change.status != ChangeStatus.PENDING:
        raise FileRefused("That change is unknown or has already been decided.")
    if change.expires_at <= timezone.now():
        raise FileRefused("The preview has expired: ask for the change again.")
    return change


def apply(change: FileChange) -> FileChange:
    """Append a pending change under an exclusive lock; FileConflict if the file changed."""
    with transaction.atomic():
        # Single use: whoever flips pending → applied first owns the change.
        claimed = FileChange.objects.filter(pk=change.pk, status=ChangeStatus.PENDING).update(
            status=ChangeStatus.APPLIED
        )
        if not claimed:
            raise FileRefused("That change has already been confirmed or rejected.")
        parts = check_path(change.path)
        data = check_content(change.content)
        with _open_parent(parts) as dir_fd:
            fd = _open_file(dir_fd, parts[-1], write=True, create=False)
            if fd is None:
                if not change.created_new:
                    raise FileConflict("The file was removed since the preview.")
                try:
                    fd = _open_file(dir_fd, parts[-1], write=True, create=True)
                except FileExistsError:
                    raise FileConflict(
                        "The file was created by someone else since the preview."
                    ) from None
                assert fd is not None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                before = _read_all(fd)
                if (
                    len(before) < change.base_size
                    or _sha(before[: change.base_size]) != change.base_hash
                ):
                    raise FileConflict("The file changed since the preview.")
                if len(before) + len(data) > settings.FILE_ACTIONS_MAX_FILE_BYTES:
                    raise FileRefused(
                        f"The file would grow past {settings.FILE_ACTIONS_MAX_FILE_BYTES:,} bytes."
                    )
                written = os.write(fd, data)
                if written != len(data):  # pragma: no cover - a full disk
                    os.ftruncate(fd, len(before))
                    raise FileRefused("The disk did not take the whole append; nothing was kept.")
                os.fsync(fd)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
        change.status = ChangeStatus.APPLIED
        change.applied_at = timezone.now()
        change.backup = before
        change.backup_size = len(before)
        change.after_hash = _sha(before + data)
        change.save(update_fields=["status", "applied_at", "backup", "backup_size", "after_hash"])
    return change


def undo(user: Any, change_id: int) -> FileChange:
    """Restore the file as it was before the change, if it has not changed since."""
    change = FileChange.objects.filter(pk=change_id, user=user).first()
    if change is None:
        raise ActionRefused("No such change.", 404)
    if change.status != ChangeStatus.APPLIED:
        raise FileRefused("Only an applied change can be undone.")
    parts = check_path(change.path)
    with transaction.atomic():
        claimed = FileChange.objects.filter(pk=change.pk, status=ChangeStatus.APPLIED).update(
            status=ChangeStatus.UNDONE
        )
        if not claimed:
            raise FileRefused("That change has already been undone.")
        with _open_parent(parts) as dir_fd:
            fd = _open_file(dir_fd, parts[-1], write=True, create=False)
            if fd is None:
                raise FileConflict("The file was removed since the change.")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                now = _read_all(fd)
                if _sha(now) != change.after_hash:
                    raise FileConflict(
                        "The file changed since this change was applied; undo would lose that."
                    )
                backup = bytes(change.backup or b"")
                os.ftruncate(fd, change.backup_size or 0)
                if (
                    os.fstat(fd).st_size != len(backup) or os.pread(fd, len(backup), 0) != backup
                ):  # pragma: no cover
                    raise FileConflict("The restored file does not match its backup.")
                os.fsync(fd)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
            if change.created_new and not backup:
                os.unlink(parts[-1], dir_fd=dir_fd)
    change.status = ChangeStatus.UNDONE
    return change
