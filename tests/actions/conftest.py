"""Fixtures the action tests share: a user allowed both actions, and a FILE_ACTIONS_ROOT."""

from __future__ import annotations

import pytest

from tests.conftest import user_with_permissions


@pytest.fixture
def operator(db):
    return user_with_permissions("olga", "run_query", "write_files")


@pytest.fixture
def workspace(tmp_path, settings):
    root = tmp_path / "ws"
    root.mkdir()
    (root / "notes.md").write_text("# Notes\n")
    settings.FILE_ACTIONS_ROOT = str(root)
    return root
