"""GET /ai-chat/c/<id>/export/?format=md|json: a conversation as a download (owner only).

Until a conversation has versions (#11), every message is exported in order; once versions
exist this must follow the active branch, as the contract says.
"""

from __future__ import annotations

import json
from typing import Any

from django.http import Http404, HttpResponse, JsonResponse
from django.utils import timezone
from django.utils.http import content_disposition_header
from django.utils.text import slugify
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET

from ai_chat.models import Conversation, Message, Role
from core.http import AuthenticatedHttpRequest

FORMATS = {"md": "text/markdown; charset=utf-8", "json": "application/json; charset=utf-8"}
EXPORTED_ROLES = (Role.USER, Role.ASSISTANT)


def filename_for(conversation: Conversation, extension: str) -> str:
    """A safe file name from the title: letters (Persian ones too), digits and dashes only,
    never a path; `conversation-<id>` when nothing is left of the title."""
    # slugify drops the Persian half-space (ZWNJ), which would join the letters around it.
    title = conversation.title.replace("\u200c", " ")
    stem = slugify(title, allow_unicode=True)[:80].strip("-_") or "conversation"
    return f"{stem}-{conversation.pk}.{extension}"


def _messages(conversation: Conversation) -> list[Message]:
    """The active branch: the versions the page shows, not the other branches of an edit."""
    return list(
        conversation.messages.filter(role__in=EXPORTED_ROLES, active=True)
        .order_by("id")
        .only("id", "role", "content", "status", "model", "tool_calls", "created_at")
    )


def as_json(conversation: Conversation, messages: list[Message]) -> dict[str, Any]:
    return {
        "id": conversation.pk,
        "title": conversation.title,
        "system_prompt": conversation.system_prompt,
        "created_at": conversation.created_at.isoformat(),
        "exported_at": timezone.now().isoformat(),
        "messages": [
            {
                "id": m.pk,
                "role": m.role,
                "content": m.content,
                "status": m.status,
                "model": m.model,
                "created_at": m.created_at.isoformat(),
                "actions": [
                    {"name": c.name, "arguments": c.arguments, "state": str(c.state)}
                    for c in m.cards
                ],
            }
            for m in messages
        ],
    }


def as_markdown(conversation: Conversation, messages: list[Message]) -> str:
    names = {Role.USER: _("User"), Role.ASSISTANT: _("Assistant")}
    parts = [f"# {conversation.title or _('Untitled')}", ""]
    if conversation.system_prompt:
        parts += [f"> {line}" for line in conversation.system_prompt.splitlines()] + [""]
    for m in messages:
        heading = f"## {names.get(m.role, m.role)}"
        if m.model:
            heading += f" ({m.model})"
        parts += [heading, "", m.content.rstrip(), ""]
        for card in m.cards:
            parts += [f"- {card.name}: {card.state.label}", ""]
    return "\n".join(parts).rstrip() + "\n"


@require_GET
def export(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    # Queries: session, user, the conversation (owned), its messages.
    kind = request.GET.get("format", "md")
    if kind not in FORMATS:
        return JsonResponse({"error": _("Choose the format: md or json.")}, status=400)
    try:
        conversation = Conversation.objects.get(pk=pk, owner=request.user)
    except Conversation.DoesNotExist:
        raise Http404("No such conversation") from None
    messages = _messages(conversation)
    if kind == "json":
        body = json.dumps(as_json(conversation, messages), ensure_ascii=False, indent=2)
    else:
        body = as_markdown(conversation, messages)
    response = HttpResponse(body, content_type=FORMATS[kind])
    response["Content-Disposition"] = content_disposition_header(
        True, filename_for(conversation, kind)
    )
    return response
