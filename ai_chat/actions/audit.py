"""The audit log of actions: one row per attempt, allowed, refused or failed.

Every action runs inside `attempt(...)`, which times it and writes the row when the body ends,
however it ends: normally (allowed, or the outcome the body chose), by `ActionRefused`
(refused, forbidden or conflict, from the status), or by any other exception (failed; the
exception goes on). The row is written after the body's own transactions have ended, so a
refusal that rolled back the body's writes is still recorded.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ai_chat.actions.errors import ActionRefused
from ai_chat.models import ActionKind, ActionLog, ActionOutcome

logger = logging.getLogger(__name__)

MAX_INPUT_CHARS = 20_000
MAX_ERROR_CHARS = 2000


def storable(text: str) -> str:
    """Text any database can store: NUL bytes and lone surrogates are escaped, not lost."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def _as_text(payload: Any) -> str:
    if isinstance(payload, str):
        return payload
    try:
        return json.dumps(payload, ensure_ascii=False, default=str)
    except (TypeError, ValueError, RecursionError):
        return repr(payload)[:MAX_INPUT_CHARS]


def outcome_for(status: int) -> ActionOutcome:
    if status == 403:
        return ActionOutcome.FORBIDDEN
    if status == 409:
        return ActionOutcome.CONFLICT
    if status >= 500:
        return ActionOutcome.ERROR
    return ActionOutcome.REFUSED


@dataclass
class Attempt:
    """What the body of `attempt` tells the audit row (all optional)."""

    kind: str
    payload: Any
    outcome: str = ActionOutcome.OK
    error: str = ""
    rows: int | None = None
    path: str = ""
    file_hash: str = ""

    def refused_without_raising(self, message: str) -> None:
        """Record a refusal the caller answers normally (a user rejecting a card)."""
        self.outcome, self.error = ActionOutcome.REFUSED, message


@contextmanager
def attempt(user: Any, kind: ActionKind | str, payload: Any) -> Iterator[Attempt]:
    """Time the body and write one ActionLog row for it, even when it raises."""
    entry = Attempt(kind=kind, payload=payload)
    started = time.monotonic()
    try:
        yield entry
    except ActionRefused as exc:
        entry.outcome, entry.error = outcome_for(exc.status), exc.message
        logger.info("action %s refused for user %s: %s", entry.kind, _user_id(user), exc.message)
        raise
    except BaseException as exc:
        entry.outcome = ActionOutcome.ERROR
        entry.error = f"{type(exc).__name__}: {exc}"
        logger.exception("action %s failed for user %s", entry.kind, _user_id(user))
        raise
    finally:
        _write(user, entry, started)


def _user_id(user: Any) -> Any:
    return getattr(user, "pk", None)


def _write(user: Any, entry: Attempt, started: float) -> None:
    try:
        ActionLog.objects.create(
            user=user if getattr(user, "is_authenticated", False) else None,
            kind=entry.kind,
            input=storable(_as_text(entry.payload))[:MAX_INPUT_CHARS],
            outcome=entry.outcome,
            error=storable(entry.error)[:MAX_ERROR_CHARS],
            duration_ms=int((time.monotonic() - started) * 1000),
            rows=entry.rows,
            path=storable(entry.path)[:500],
            file_hash=entry.file_hash,
        )
    except Exception:
        # The audit must never hide the action's own outcome; a lost row is logged loudly.
        logger.exception("could not write the audit row of a %s action", entry.kind)
        raise
