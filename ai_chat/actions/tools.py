"""The actions offered to the model as tools, and what happens to a tool call.

A tool call never runs by itself. When a reply ends with tool calls, `cards_for` turns each one
into an approval card stored on the reply (for an append, the preview — which changes nothing —
is made at once so the card can show the diff). The action service's `decide_card` runs or
rejects one card when the user says so.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from django.conf import settings
from django.core.cache import cache

from ai_chat.actions import service
from ai_chat.actions.audit import storable
from ai_chat.actions.cards import APPEND_TOOL, CALL_ID, QUERY_TOOL, Card, CardState
from api_manager.providers import ToolCall, ToolSpec

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


# What a model sends is untrusted input: ids go into URLs and a CharField(100), names and
# arguments into JSON columns (PostgreSQL's jsonb refuses NUL and lone surrogates).
MAX_NAME_CHARS = 64
MAX_ARGUMENTS_CHARS = 200_000


def _clean(value: Any, depth: int = 0) -> Any:
    """`value` with every string storable; ValueError if it is nested deeper than 20 levels."""
    if depth > 20:
        raise ValueError("nested too deeply")
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, dict):
        return {storable(str(k)): _clean(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v, depth + 1) for v in value]
    return value


def normalise_calls(calls: list[ToolCall]) -> list[tuple[ToolCall, str]]:
    """Each call made safe to store and to put in a URL, with the reason to refuse it ("" if
    none). An id that is not CALL_ID-shaped (a `/`, too long, a repeat) is replaced by a stable
    one derived from it; the same id then goes back to the model with the call's result."""
    result: list[tuple[ToolCall, str]] = []
    seen: set[str] = set()
    for index, call in enumerate(calls):
        call_id = call.id if isinstance(call.id, str) else ""
        if not CALL_ID.match(call_id) or call_id in seen:
            digest = hashlib.sha256(f"{index}:{call_id}".encode("utf-8", "replace")).hexdigest()
            call_id = f"call_{digest[:24]}"
        seen.add(call_id)
        name = storable(str(call.name or ""))[:MAX_NAME_CHARS]
        arguments, problem = call.arguments, ""
        if not isinstance(arguments, dict) or set(arguments) == {"_raw"}:
            arguments, problem = {}, "The tool call's arguments are not a JSON object."
        else:
            try:
                arguments = _clean(arguments)
                size = len(json.dumps(arguments))
            except (ValueError, TypeError, RecursionError):
                arguments, problem = {}, "The tool call's arguments are not valid."
            else:
                if size > MAX_ARGUMENTS_CHARS:
                    arguments, problem = {}, "The tool call's arguments are too large."
        result.append((ToolCall(call_id, name, arguments), problem))
    return result


def cards_for(user: Any, calls: list[ToolCall]) -> list[dict[str, Any]]:
    """Approval cards (as stored on the reply) for a reply's tool calls; nothing is run. An
    append is previewed at once (which changes no file) so its card can show the diff."""
    cards = []
    for call, problem in normalise_calls(calls):
        card = Card(call.id, call.name, call.arguments)
        if problem:
            card.state, card.error = CardState.REFUSED, problem
        else:
            card = service.preview_card(user, card)
        cards.append(card.as_json())
    return cards
