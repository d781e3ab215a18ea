"""Where the append action may write: FILE_ACTIONS_ROOT must be a directory of its own.

A root that overlaps the panel's code, its virtualenv, its static or media files or its database
would let an approved append change what the panel runs or serves (issue #8.10). `root_problem`
says what is wrong with a root; the system check (`manage.py check`, run by the unit's
ExecStartPre and the installer) reports it as an Error, and the append action checks it again on
every use and refuses with the same message.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core import checks


def _real(path: Any) -> Path:
    return Path(os.path.realpath(os.fspath(path)))


def _overlaps(root: Path, other: Path) -> bool:
    """Whether one of the two directories contains the other (or they are the same)."""
    return root == other or root.is_relative_to(other) or other.is_relative_to(root)


def _database_files() -> list[Path]:
    """The SQLite database file (its -wal, -shm, -journal and lock files sit beside it)."""
    found = []
    for database in settings.DATABASES.values():
        name = str(database.get("NAME") or "")
        if "sqlite" in str(database.get("ENGINE", "")) and name and name != ":memory:":
            found.append(_real(name.removeprefix("file:").split("?", 1)[0]))
    return found


def root_problem(root: Any) -> str | None:
    """What makes `root` unfit as FILE_ACTIONS_ROOT, or None if it is fine. The reason names
    no server path: it is also shown to users of the append action."""
    path = _real(root)
    if path == Path(path.anchor):
        return "is the filesystem root `/`"
    if not path.is_dir():
        return "does not exist or is not a directory"
    if not os.access(path, os.W_OK | os.X_OK):
        return "is not writable by the panel's user"
    others = [
        ("the project directory", settings.BASE_DIR),
        ("the virtualenv", sys.prefix),
        ("STATIC_ROOT", settings.STATIC_ROOT),
        ("MEDIA_ROOT", settings.MEDIA_ROOT),
    ]
    overlapping = sorted(
        (abs(len(_real(other).parts) - len(path.parts)), what)
        for what, other in others
        if other and _overlaps(path, _real(other))
    )
    # Every reason, the nearest first: a virtualenv usually sits inside the project directory,
    # and a checkout under /tmp shares its parent with SQLite files there.
    reasons = [f"overlaps {what}" for _, what in overlapping]
    if any(database.is_relative_to(path) for database in _database_files()):
        reasons.append("contains the database (or its -wal/-shm/lock files)")
    if reasons:
        return "; ".join(reasons)
    return None


@checks.register(checks.Tags.security)
def check_file_actions_root(**kwargs: Any) -> list[checks.CheckMessage]:
    root = settings.FILE_ACTIONS_ROOT
    if not root:
        return []
    problem = root_problem(root)
    if problem is None:
        return []
    return [
        checks.Error(
            f"FILE_ACTIONS_ROOT ({_real(root)}) {problem}.",
            hint="Point it at a directory of its own, such as /var/lib/bsepar-panel/workspace, "
            "or leave it unset to turn the append action off.",
            id="ai_chat.E001",
        )
    ]
