"""FILE_ACTIONS_ROOT must not overlap the code, the venv, static or media files or the
database; it must exist and be writable (issue #8.10, #14.5). A system check Error, and the
append action refuses (and audits) the same at use."""

from __future__ import annotations

import json
import os
import sys

import pytest
from django.core.checks import Error

from ai_chat.actions.checks import check_file_actions_root
from ai_chat.models import ActionLog
from tests.conftest import signed_in, user_with_permissions


def errors(settings, root) -> list[Error]:
    settings.FILE_ACTIONS_ROOT = str(root)
    return check_file_actions_root()


def test_a_directory_of_its_own_passes(settings, tmp_path):
    # Like /var/lib/bsepar-panel/workspace: inside a data directory, beside the database.
    data = tmp_path / "var-lib-bsepar-panel"
    (data / "workspace").mkdir(parents=True)
    (data / "media").mkdir()
    settings.MEDIA_ROOT = str(data / "media")
    assert errors(settings, data / "workspace") == []


def test_an_unset_root_is_not_checked(settings):
    settings.FILE_ACTIONS_ROOT = None
    assert check_file_actions_root() == []


def _case(settings, tmp_path, case, request):
    """Set up one bad root; return it."""
    if case == "slash":
        return "/"
    if case == "missing":
        return tmp_path / "nowhere"
    if case == "a file":
        (tmp_path / "file.txt").write_text("x")
        return tmp_path / "file.txt"
    if case == "read-only":
        root = tmp_path / "ro"
        root.mkdir()
        root.chmod(0o500)
        return root
    if case == "the project":
        return settings.BASE_DIR
    if case == "inside the project":
        return settings.BASE_DIR / "ai_chat"
    if case == "above the project":
        return settings.BASE_DIR.parent
    if case == "the venv":
        return sys.prefix
    if case == "inside the venv":
        return os.path.join(sys.prefix, "lib")
    if case == "above STATIC_ROOT":
        settings.STATIC_ROOT = tmp_path / "site" / "static"
        settings.STATIC_ROOT.mkdir(parents=True)
        return tmp_path / "site"
    if case == "above MEDIA_ROOT":
        settings.MEDIA_ROOT = str(tmp_path / "data" / "media")
        (tmp_path / "data" / "media").mkdir(parents=True)
        return tmp_path / "data"
    if case == "above the database":
        request.getfixturevalue("db")  # the test database exists, and NAME is its file
        database = settings.DATABASES["default"]
        if "sqlite" not in database["ENGINE"]:
            pytest.skip("only SQLite keeps the database in a file the panel could reach")
        # The (test) database's own directory holds it and its -wal/-shm/lock files.
        return os.path.dirname(database["NAME"])
    if case == "a symlink to the project":
        os.symlink(settings.BASE_DIR, tmp_path / "innocent")
        return tmp_path / "innocent"
    raise AssertionError(case)


CASES = {
    "slash": "filesystem root",
    "missing": "does not exist",
    "a file": "not a directory",
    "read-only": "not writable",
    "the project": "project directory",
    "inside the project": "project directory",
    "above the project": "project directory",
    "the venv": "virtualenv",
    "inside the venv": "virtualenv",
    "above STATIC_ROOT": "STATIC_ROOT",
    "above MEDIA_ROOT": "MEDIA_ROOT",
    "above the database": "database",
    "a symlink to the project": "project directory",
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_root_is_a_system_check_error(settings, tmp_path, case, request):
    if case == "read-only" and os.geteuid() == 0:
        pytest.skip("root can write anywhere")
    found = errors(settings, _case(settings, tmp_path, case, request))
    assert [e.id for e in found] == ["ai_chat.E001"]
    assert CASES[case] in found[0].msg


@pytest.mark.django_db
@pytest.mark.parametrize("case", ["missing", "the project", "above the database"])
def test_a_bad_root_is_refused_at_use_with_the_same_reason_and_audited(
    settings, tmp_path, case, request
):
    settings.FILE_ACTIONS_ROOT = str(_case(settings, tmp_path, case, request))
    writer = user_with_permissions("wendy", "write_files")
    response = signed_in(writer).post(
        "/api/actions/append/",
        json.dumps({"path": "notes.md", "content": "x\n"}),
        content_type="application/json",
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert "FILE_ACTIONS_ROOT" in error and CASES[case] in error
    assert "symlink" not in error
    assert str(tmp_path) not in error and str(settings.BASE_DIR) not in error
    assert ActionLog.objects.get().outcome == "refused"
