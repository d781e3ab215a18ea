"""Chat pages and the streaming endpoint."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.http import (
    Http404,
    HttpResponse,
    HttpResponseRedirect,
    JsonResponse,
    StreamingHttpResponse,
)
from django.shortcuts import render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from ai_chat import attachments, jobs, search, services
from ai_chat.actions import service as actions
from ai_chat.actions.errors import ActionRefused
from ai_chat.models import ActionKind, Conversation, Message
from api_manager.models import ProviderKey
from core.http import AuthenticatedHttpRequest, InvalidBody, read_json_body


def _get_conversation_for_user(request: AuthenticatedHttpRequest, pk: int) -> Conversation:
    """The conversation `pk` if the signed-in user owns it; Http404 otherwise."""
    try:
        return Conversation.objects.get(pk=pk, owner=request.user)
    except Conversation.DoesNotExist:
        raise Http404("No such conversation") from None


def _conversation_list(request: AuthenticatedHttpRequest, query: str) -> list[Conversation]:
    return search.conversation_list(request.user, query)


@require_GET
def chat_page(request: AuthenticatedHttpRequest, pk: int | None = None) -> HttpResponse:
    # Queries: session, user, conversation list, keys, and for an open conversation: the
    # conversation, one page of messages with their usage, and whether older ones exist.
    query = request.GET.get("q", "").strip()[:200]
    conversation = _get_conversation_for_user(request, pk) if pk is not None else None
    page_messages: list[Message] = []
    has_older = False
    if conversation is not None:
        # The active branch only (other versions are reached by switching).
        page = conversation.messages.filter(active=True).select_related("usage").order_by("-id")
        before = request.GET.get("before", "")
        if before.isdigit():
            page = page.filter(id__lt=int(before))
        size = settings.CHAT_PAGE_MESSAGES
        page_messages = list(page[: size + 1])
        has_older = len(page_messages) > size
        page_messages = page_messages[:size][::-1]
        attachments.load_for(page_messages, with_text=False)
    keys = list(
        ProviderKey.objects.usable_by(request.user)
        .filter(is_active=True)
        .only("id", "label", "provider", "default_model", "owner_id")
    )
    selected_key = (
        conversation.key_id
        if conversation and conversation.key_id
        else (keys[0].id if keys else None)
    )
    context: dict[str, Any] = {
        "page": "chat",
        "conversations": _conversation_list(request, query),
        "conversation": conversation,
        "chat_messages": page_messages,
        "has_older": has_older,
        "keys": keys,
        "selected_key": selected_key,
        "query": query,
        "attach_limits": attachments.limits(),
    }
    return render(request, "ai_chat/chat.html", context)


@require_POST
def rename(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    conversation = _get_conversation_for_user(request, pk)
    title = " ".join(request.POST.get("title", "").split())
    if not title:
        messages.error(request, _("A title cannot be empty."))
    elif len(title) > 200:
        messages.error(request, _("A title is at most 200 characters."))
    else:
        conversation.rename(title)
        messages.success(request, _("Conversation renamed."))
    return HttpResponseRedirect(reverse("ai_chat:conversation", args=[pk]))


@require_POST
def delete(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    conversation = _get_conversation_for_user(request, pk)
    conversation.delete()
    messages.success(request, _("Conversation deleted."))
    return HttpResponseRedirect(reverse("ai_chat:new"))


@require_POST
def decide(
    request: AuthenticatedHttpRequest, pk: int, message_id: int, call_id: str
) -> HttpResponse:
    """Approve (run) or reject one action the assistant proposed; answers the new card."""
    decision = request.POST.get("decision", "")
    try:
        if request.content_type == "application/json":
            try:
                decision = read_json_body(request).get("decision", "")
            except InvalidBody as exc:
                actions.refuse_input(request.user, ActionKind.DECIDE, "", str(exc))
        card, settled = actions.decide_card(
            request.user, pk, message_id, call_id, decision=decision
        )
    except ActionRefused as exc:
        return JsonResponse(exc.as_json(), status=exc.status)
    html = render_to_string(
        "ai_chat/tool_card.html",
        {"card": card, "message": {"conversation_id": pk, "id": message_id}},
        request=request,
    )
    return JsonResponse({"card": card.as_json(), "html": html, "continue": settled})


def _stream_input(request: AuthenticatedHttpRequest) -> dict[str, Any] | str:
    """The turn's input as a dict (form-encoded or JSON), or why the body cannot be read."""
    if request.content_type != "application/json":
        data: dict[str, Any] = request.POST.dict()
        # The one field that repeats: each attachment an edit leaves out.
        if "drop_attachments" in request.POST:
            data["drop_attachments"] = request.POST.getlist("drop_attachments")
        return data
    try:
        return read_json_body(request)
    except InvalidBody as exc:
        return str(exc)


@require_POST
async def stream(request: AuthenticatedHttpRequest) -> HttpResponse:
    """POST /ai-chat/stream/: the reply as server-sent events (see the contract)."""
    data = _stream_input(request)
    if isinstance(data, str):
        return JsonResponse({"error": data}, status=400)
    # LoginRequiredMiddleware has loaded request.user already: reuse it (request.auser()
    # would look the user up a second time).
    try:
        # Attachments are checked (and refused) before anything is saved.
        files = await attachments.from_request(request)
        turn = await services.prepare_turn(request.user, data, files)
    except (attachments.AttachmentRefused, services.TurnRefused) as exc:
        return JsonResponse({"error": exc.message}, status=exc.status)
    # The reply is a job of this process: this response is only its first attached client.
    job = jobs.start(turn)
    return _event_stream(job.events(meta=True))


def _event_stream(events: Any) -> StreamingHttpResponse:
    response = StreamingHttpResponse(events, content_type="text/event-stream; charset=utf-8")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


def _resume_point(request: AuthenticatedHttpRequest) -> int | None:
    """The code point the client holds the reply up to: `Last-Event-ID`, else `?after=`; 0
    when neither is sent; None when one is not a count."""
    value = request.headers.get("Last-Event-ID") or request.GET.get("after") or "0"
    value = value.strip()
    if not value.isascii() or not value.isdigit() or len(value) > 12:
        return None
    return int(value)


@require_GET
async def reattach(request: AuthenticatedHttpRequest, message_id: int) -> HttpResponse:
    """GET /ai-chat/stream/<message_id>/: the reply's events after the client's last id, live
    while it is generated (CONTRACT.md)."""
    after = _resume_point(request)
    if after is None:
        return JsonResponse({"error": _("Last-Event-ID must be a number.")}, status=400)
    try:
        events = await jobs.attach(request.user, message_id, after)
    except jobs.ReplyNotFound:
        raise Http404("No such reply") from None
    return _event_stream(events)


@require_POST
async def stop(request: AuthenticatedHttpRequest, message_id: int) -> HttpResponse:
    """POST /ai-chat/messages/<message_id>/stop/: stop the reply wherever it is generated."""
    try:
        await jobs.request_stop(request.user, message_id)
    except jobs.ReplyNotFound:
        raise Http404("No such reply") from None
    return JsonResponse({"ok": True})


@require_POST
async def switch_version(request: AuthenticatedHttpRequest, message_id: int) -> HttpResponse:
    """POST /ai-chat/messages/<message_id>/version/ with `version=k`: show version k of that
    message's turn; back to the conversation (JSON `{"ok": true}` when asked for JSON)."""
    number = request.POST.get("version", "")
    if not number.isascii() or not number.isdigit() or len(number) > 9:
        return JsonResponse({"error": _("No such version.")}, status=400)
    try:
        conversation = await services.switch_version(request.user, message_id, int(number))
    except services.TurnRefused as exc:
        return JsonResponse({"error": exc.message}, status=exc.status)
    if "application/json" in request.headers.get("Accept", ""):
        return JsonResponse({"ok": True})
    return HttpResponseRedirect(reverse("ai_chat:conversation", args=[conversation.pk]))
