"""The sidebar's own action: pin or unpin a conversation (rename and delete are the chat
views', which the sidebar's menus post to as the header does)."""

from __future__ import annotations

from django.http import Http404, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from ai_chat.models import Conversation
from core.http import AuthenticatedHttpRequest


@require_POST
def pin(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    """`pinned=1` pins the conversation, anything else unpins it; back to `next` (a page of
    this site) or the conversation. Someone else's conversation is a 404."""
    try:
        conversation = Conversation.objects.get(pk=pk, owner=request.user)
    except Conversation.DoesNotExist:
        raise Http404("No such conversation") from None
    conversation.set_pinned(request.POST.get("pinned") == "1")
    target = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        target = reverse("ai_chat:conversation", args=[pk])
    return HttpResponseRedirect(target)
