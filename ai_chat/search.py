"""The sidebar's conversation list: pinned first, then the most recent; and its search.

Search compares the normalised forms (core.text.normalize_for_search: Persian and Arabic
letters alike, no diacritics, no half-spaces) with every space removed on both sides, so a
Persian half-space (ZWNJ, U+200C), a plain space and no separator at all match each other:
"می‌خواهم", "می خواهم" and "میخواهم" find the same conversations. The stored columns keep
their spaces; the comparison drops them in SQL (a `contains` scans the rows either way).
"""

from __future__ import annotations

from typing import Any

from django.db.models import F, QuerySet, TextField, Value
from django.db.models.functions import Replace

from ai_chat.models import Conversation, Message
from core.text import normalize_for_search

LIST_SIZE = 100


def search_key(text: str) -> str:
    """`text` as the search compares it: normalised, without any space."""
    return normalize_for_search(text).replace(" ", "")


def _joined(field: str) -> Replace:
    return Replace(F(field), Value(" "), Value(""), output_field=TextField())


def conversations_for(user: Any, query: str = "") -> QuerySet[Conversation]:
    """The user's conversations matching `query` (in a title or a message), pinned first."""
    conversations = Conversation.objects.filter(owner=user)
    needle = search_key(query)
    if needle:
        matching = (
            Message.objects.filter(conversation__owner=user)
            .alias(joined=_joined("search_text"))
            .filter(joined__contains=needle)
        )
        titled = conversations.alias(joined=_joined("title_search")).filter(joined__contains=needle)
        conversations = (
            conversations.filter(pk__in=matching.values("conversation_id").distinct()) | titled
        )
    return conversations.order_by("-pinned", "-updated_at", "-id")


def conversation_list(user: Any, query: str = "") -> list[Conversation]:
    return list(
        conversations_for(user, query).only("id", "title", "updated_at", "pinned")[:LIST_SIZE]
    )
