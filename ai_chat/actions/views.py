"""The action endpoints (JSON over POST): they call the action service and map ActionRefused
to a JSON answer. The service checks permissions and writes the audit log."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.http import HttpResponse, JsonResponse
from django.template.loader import render_to_string
from django.views.decorators.http import require_POST

from ai_chat.actions import service
from ai_chat.actions.cards import Card
from ai_chat.actions.errors import ActionRefused
from ai_chat.models import ActionKind, Message
from core.http import AuthenticatedHttpRequest, InvalidBody, body_excerpt, read_json_body


def _answer(
    request: AuthenticatedHttpRequest,
    kind: ActionKind,
    action: Callable[[Any, dict[str, Any]], dict[str, Any]],
    *,
    log_body: bool = True,
) -> JsonResponse:
    try:
        try:
            data = read_json_body(request)
        except InvalidBody as exc:
            excerpt = body_excerpt(request) if log_body else ""
            service.refuse_input(request.user, kind, excerpt, str(exc))
        return JsonResponse(action(request.user, data))
    except ActionRefused as exc:
        return JsonResponse(exc.as_json(), status=exc.status)


@require_POST
def query_view(request: AuthenticatedHttpRequest) -> HttpResponse:
    return _answer(request, ActionKind.QUERY, service.run_query)


@require_POST
def append_view(request: AuthenticatedHttpRequest) -> HttpResponse:
    return _answer(request, ActionKind.APPEND, service.preview_append)


@require_POST
def confirm_view(request: AuthenticatedHttpRequest) -> HttpResponse:
    # The body holds a token: a refused body is not copied into the log.
    return _answer(request, ActionKind.CONFIRM, service.confirm_append, log_body=False)


@require_POST
def undo_view(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    try:
        answer = service.undo_change(request.user, pk)
    except ActionRefused as exc:
        return JsonResponse(exc.as_json(), status=exc.status)
    if "card" in answer:
        # The chat replaces the card with this one (its true state, without Undo).
        conversation_id = Message.objects.values_list("conversation_id", flat=True).get(
            pk=answer["message"]
        )
        answer["html"] = render_to_string(
            "ai_chat/tool_card.html",
            {
                "card": Card.from_json(answer["card"]),
                "message": {"conversation_id": conversation_id, "id": answer["message"]},
            },
            request=request,
        )
    return JsonResponse(answer)
