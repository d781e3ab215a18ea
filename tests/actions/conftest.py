"""Fixtures the action tests share: a user allowed both actions (`workspace`, the
FILE_ACTIONS_ROOT, is tests/conftest.py's: the browser tests use it too)."""

from __future__ import annotations

import pytest

from tests.conftest import user_with_permissions


@pytest.fixture
def operator(db):
    return user_with_permissions("olga", "run_query", "write_files")
