"""Template context shared by every page."""

from __future__ import annotations

from django.http import HttpRequest
from django.utils.translation import get_language_bidi


def panel(request: HttpRequest) -> dict[str, object]:
    return {"LANGUAGE_DIR": "rtl" if get_language_bidi() else "ltr"}
