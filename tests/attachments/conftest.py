from __future__ import annotations

import pytest

# The browser test's live server and Chromium (tests/browser/conftest.py).
from tests.browser.conftest import chromium, live_asgi, open_page  # noqa: F401


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    """Each test stores its attachments in a directory of its own."""
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


def stored_files(media) -> list:
    return sorted(p for p in media.rglob("*") if p.is_file()) if media.exists() else []
