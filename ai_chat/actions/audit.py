"""The audit log of actions: one row per request, allowed or refused."""

from __future__ import annotations

import json
import time
from typing import Any

from ai_chat.models import ActionLog

MAX_INPUT_CHARS = 20_000


def storable(text: str) -> str:
    """Text any database can store: NUL bytes and lone surrogates are escaped, not lost."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def record(
    user: Any,
    kind: str,
    payload: Any,
    outcome: str,
    *,
    started: float,
    error: str = "",
    rows: int | None = None,
    path: str = "",
    file_hash: str = "",
) -> ActionLog:
    try:
        text = (
            payload
            if isinstance(payload, str)
            else json.dumps(payload, ensure_ascii=False, default=str)
        )
    except (TypeError, ValueError):
        text = repr(payload)
    return ActionLog.objects.create(
        user=user if getattr(user, "is_authenticated", False) else None,
        kind=kind,
        input=storable(text)[:MAX_INPUT_CHARS],
        outcome=outcome,
        error=storable(error)[:2000],
        duration_ms=int((time.monotonic() - started) * 1000),
        rows=rows,
        path=storable(path)[:500],
        file_hash=file_hash,
    )
