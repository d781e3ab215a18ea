"""The actions offered to the model as tools, and what happens to a tool call.

A tool call never runs by itself. When a reply ends with tool calls, `cards_for` turns each one
into an approval card stored on the reply (for an append, the preview — which changes nothing —
is made at once so the card can show the diff). `decide` runs or rejects one card when the user
says so, through the same checked and audited code as the action endpoints, and stores the
result as a `tool` message that the next turn sends back to the model.
"""

from __future__ import annotations

import json
import time
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import transaction

from ai_chat.actions import audit, files
from ai_chat.actions import views as actions
from ai_chat.models import ActionKind, ActionOutcome, ChangeStatus, FileChange, Message, Role
from api_manager.providers import ToolCall, ToolSpec

QUERY_TOOL = "run_query"
APPEND_TOOL = "append_to_file"
RESULT_ROWS_FOR_MODEL = 100
RESULT_ROWS_FOR_CARD = 50


OFFER_CACHE_SECONDS = 60


def tools_for(user: Any) -> list[ToolSpec]:
    """The tools this user may be offered: none without the matching permission.

    What is offered is cached for a minute (it costs permission queries on every turn);
    running an action always checks the permission afresh.
    """
    offer = cache.get_or_set(
        f"bsepar:tool-offer:{user.pk}",
        lambda: [user.has_perm("ai_chat.run_query"), user.has_perm("ai_chat.write_files")],
        OFFER_CACHE_SECONDS,
    )
    may_query, may_write = offer
    tools: list[ToolSpec] = []
    if may_query:
        models = ", ".join(
            f"{name} ({', '.join(entry['fields'])})"
            for name, entry in settings.ACTIONS_QUERY_MODELS.items()
        )
        tools.append(
            ToolSpec(
                QUERY_TOOL,
                "Run one read-only Django ORM query and get its rows. Write a single expression such as "
                'Message.objects.filter(role="user").values("conversation__title").annotate(n=Count("id"))'
                '.order_by("-n")[:10]. Allowed: filter, exclude, order_by, values, values_list, distinct, '
                "annotate, aggregate, count, first, last, exists, slices; Q, F and Count/Sum/Avg/Min/Max; "
                f"literal values only. Models and fields: {models}. The user approves each query before it runs.",
                {
                    "type": "object",
                    "properties": {"code": {"type": "string", "description": "The ORM expression"}},
                    "required": ["code"],
                },
            )
        )
    if settings.FILE_ACTIONS_ROOT and may_write:
        tools.append(
            ToolSpec(
                APPEND_TOOL,
                "Append text (for example a function) to the end of a text file in the workspace. The path is "
                f"relative to the workspace root; allowed extensions: {', '.join(settings.FILE_ACTIONS_EXTENSIONS)}. "
                "The user sees a diff and approves it before anything is written.",
                {
                    "type": "object",
                    "properties": {
                        "path": {
                            "type": "string",
                            "description": "File path relative to the workspace root",
                        },
                        "content": {"type": "string", "description": "The exact text to append"},
                    },
                    "required": ["path", "content"],
                },
            )
        )
    return tools


def cards_for(user: Any, calls: list[ToolCall]) -> list[dict[str, Any]]:
    """Approval cards for a reply's tool calls (nothing is run)."""
    cards = []
    for call in calls:
        card: dict[str, Any] = {
            "id": call.id,
            "name": call.name,
            "arguments": call.arguments,
            "state": "pending",
        }
        if call.name == APPEND_TOOL:
            status, answer = actions.append_preview(
                user, call.arguments if isinstance(call.arguments, dict) else {}
            )
            if status == 200:
                card.update({"diff": answer["preview"], "change": answer["change"]})
            else:
                card.update({"state": "refused", "error": answer["error"]})
        elif call.name != QUERY_TOOL:
            card.update({"state": "refused", "error": f"Unknown tool {call.name!r}."})
        cards.append(card)
    return cards


class DecisionRefused(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def decide(user: Any, reply: Message, call_id: str, approve: bool) -> tuple[dict[str, Any], bool]:
    """Run or reject one pending card of `reply`; return (the card, whether all are settled)."""
    with transaction.atomic():
        reply = Message.objects.select_for_update().get(pk=reply.pk)
        cards = list(reply.tool_calls or [])
        card = next((c for c in cards if c.get("id") == call_id), None)
        if card is None:
            raise DecisionRefused("No such action in this message.", status=404)
        if card["state"] not in {"pending", "refused"}:
            raise DecisionRefused("This action has already been decided.", status=409)
        for_model = _settle(user, card, approve)
        Message.objects.create(
            conversation_id=reply.conversation_id,
            role=Role.TOOL,
            tool_call_id=call_id,
            content=for_model,
        )
        reply.tool_calls = cards
        reply.save(update_fields=["tool_calls"])
    settled = all(c["state"] not in {"pending", "refused"} for c in cards)
    return card, settled


def _settle(user: Any, card: dict[str, Any], approve: bool) -> str:
    """Update `card` in place; return the text sent back to the model."""
    arguments = card.get("arguments") if isinstance(card.get("arguments"), dict) else {}
    if not approve or card["state"] == "refused":
        if card.get("change"):
            FileChange.objects.filter(
                pk=card["change"], user=user, status=ChangeStatus.PENDING
            ).update(status=ChangeStatus.REJECTED)
        if card["state"] == "refused":
            card["state"] = "failed"
            return json.dumps({"error": card.get("error", "The action was refused.")})
        card["state"] = "rejected"
        started = time.monotonic()
        kind = ActionKind.QUERY if card["name"] == QUERY_TOOL else ActionKind.CONFIRM
        audit.record(
            user,
            kind,
            arguments,
            ActionOutcome.REFUSED,
            started=started,
            error="rejected by the user",
        )
        return json.dumps({"error": "The user rejected this action. Do not retry it unless asked."})
    if card["name"] == QUERY_TOOL:
        status, answer = actions.run_query(user, {"code": arguments.get("code")})
        if status != 200:
            card.update({"state": "failed", "error": answer["error"]})
            return json.dumps({"error": answer["error"]})
        card.update(
            {
                "state": "done",
                "result": {
                    "columns": answer["columns"],
                    "rows": answer["rows"][:RESULT_ROWS_FOR_CARD],
                    "count": answer["count"],
                    "truncated": answer["truncated"] or answer["count"] > RESULT_ROWS_FOR_CARD,
                },
            }
        )
        for_model = dict(answer, rows=answer["rows"][:RESULT_ROWS_FOR_MODEL])
        return json.dumps(for_model, ensure_ascii=False, default=str)
    change = FileChange.objects.filter(pk=card.get("change"), user=user).first()
    if change is None:
        card.update({"state": "failed", "error": "The previewed change is gone."})
        return json.dumps({"error": card["error"]})
    if not user.has_perm("ai_chat.write_files"):
        audit.record(
            user,
            ActionKind.CONFIRM,
            {"change": change.pk},
            ActionOutcome.FORBIDDEN,
            started=time.monotonic(),
            error="no permission",
        )
        card.update({"state": "failed", "error": "You do not have permission to change files."})
        return json.dumps({"error": card["error"]})
    try:
        change = files.pending_by_id(user, change.pk)
    except files.FileRefused as exc:
        card.update({"state": "failed", "error": str(exc)})
        return json.dumps({"error": str(exc)})
    status, answer = actions.apply_change(user, change, {"change": change.pk}, time.monotonic())
    if status != 200:
        card.update({"state": "failed", "error": answer["error"]})
        return json.dumps({"error": answer["error"]})
    card.update({"state": "applied", "change": answer["change"]})
    return json.dumps(
        {"ok": True, "applied_to": change.path, "bytes": len(change.content.encode())}
    )
