"""Approval cards: what the chat shows for each tool call of a reply, and their states.

A reply's cards are stored as JSON on `Message.tool_calls`; `Card` is their one type. Reading
is tolerant (`Card.from_json`): a stored value of the wrong shape becomes a failed card, never an
exception on a page. The states are `CardState`, used by Python, the card template (which writes
them into `data-state`) and the JS (which reads them from the page, never spells them out).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from django.db import models
from django.utils.translation import gettext_lazy as _

QUERY_TOOL = "run_query"
APPEND_TOOL = "append_to_file"
# Tool call ids as stored and put into URLs: what a model may send is normalised to this
# (ai_chat/actions/tools.py); anything else stored earlier is shown but cannot be decided.
CALL_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class CardState(models.TextChoices):
    PENDING = "pending", _("waiting for your approval")
    RUNNING = "running", _("running")
    REFUSED = "refused", _("not run")
    DONE = "done", _("ran")
    APPLIED = "applied", _("applied")
    REJECTED = "rejected", _("rejected")
    FAILED = "failed", _("not run")
    UNDONE = "undone", _("undone")


# A note about a card stored after its result (an undo) is a `tool` message whose
# tool_call_id is this prefix and the call's id: it can never match an open call (CALL_ID has no
# colon), and the history sends it to the model as a note in the conversation.
NOTE_PREFIX = "note:"

# A card in these states still waits for the user (a refused one: to tell the model).
OPEN_STATES = frozenset({CardState.PENDING, CardState.REFUSED})


@dataclass
class Card:
    id: str
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    state: CardState = CardState.PENDING
    error: str = ""
    diff: str = ""
    change: int | None = None
    result: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, data: Any) -> Card:
        """A card from its stored JSON; anything malformed makes a failed card."""
        if not isinstance(data, dict):
            return cls("", "", state=CardState.FAILED, error=str(_("This action is unreadable.")))
        try:
            state = CardState(data.get("state"))
        except ValueError:
            state = CardState.FAILED
        change = data.get("change")
        result = data.get("result")
        arguments = data.get("arguments")
        return cls(
            id=str(data.get("id") or ""),
            name=str(data.get("name") or ""),
            arguments=arguments if isinstance(arguments, dict) else {},
            state=state,
            error=str(data.get("error") or ""),
            diff=str(data.get("diff") or ""),
            change=change if type(change) is int else None,
            result=result if isinstance(result, dict) else None,
        )

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "arguments": self.arguments,
            "state": str(self.state),
        }
        for name in ("error", "diff", "change", "result"):
            value = getattr(self, name)
            if value not in ("", None):
                data[name] = value
        return data

    @property
    def is_query(self) -> bool:
        return self.name == QUERY_TOOL

    @property
    def awaits_approval(self) -> bool:
        return self.state == CardState.PENDING

    @property
    def was_refused(self) -> bool:
        return self.state == CardState.REFUSED

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_STATES

    @property
    def can_decide(self) -> bool:
        """Whether the page offers buttons (the id must be safe in the decide URL)."""
        return self.is_open and bool(CALL_ID.match(self.id))

    @property
    def can_undo(self) -> bool:
        return self.state == CardState.APPLIED and self.change is not None

    @property
    def diff_lines(self) -> list[tuple[str, str]]:
        """The diff's lines, each with its CSS class: `add`, `del`, `hunk`, `meta` (the file
        names) or "" (context). Classes, not inline styles: the CSP allows none."""
        lines: list[tuple[str, str]] = []
        for line in self.diff.splitlines():
            if line.startswith(("+++", "---")):
                kind = "meta"
            elif line.startswith("@@"):
                kind = "hunk"
            else:
                kind = {"+": "add", "-": "del"}.get(line[:1], "")
            lines.append((kind, line))
        return lines


def cards_of(tool_calls: Any) -> list[Card]:
    """The cards stored on a reply (`Message.tool_calls`), whatever was stored there."""
    if not isinstance(tool_calls, list):
        return []
    return [Card.from_json(item) for item in tool_calls]


def is_note(tool_call_id: str) -> bool:
    """Whether a `tool` message is a note about a settled card (see NOTE_PREFIX)."""
    return tool_call_id.startswith(NOTE_PREFIX)
