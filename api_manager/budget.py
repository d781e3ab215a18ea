"""Monthly token budgets that hold under concurrency: reserve before the call, settle after.

A key's month is one `BudgetCounter` row: `used` (the month's records' tokens, added in the
transaction that saves each record) and `reserved` (held by replies in progress). A turn
reserves, before it calls the provider, an upper bound of what it can cost: its input (the
UTF-8 bytes of everything sent, a bound on the token count, since every token of a byte-level
BPE tokenizer covers at least one byte; images and PDF pages by what the providers bill for
them, `image_tokens` and `pdf_page_tokens`) plus its output cap. The cap is lowered to what is
left of the budget, so a nearly spent budget still allows a short reply. The counter row is
locked while the reservation is decided (SELECT ... FOR UPDATE on PostgreSQL; on SQLite the
transaction took the write lock at BEGIN IMMEDIATE), so used + reserved never exceeds the
budget, however many turns start at once on however many servers.

When the reply ends, however it ends, `settle` releases the reservation in the transaction
that saves its usage record (which adds the real tokens to `used`). A worker that crashed
leaves its reservation behind; `close_stale_streams` releases those (`release_stale`).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F

from api_manager.models import (
    BudgetCounter,
    BudgetReservation,
    ProviderKey,
    month_start,
    upsert,
)

# Tokens a provider adds around each message (role markers, separators): a few in every
# format we know; 8 keeps the bound an upper bound.
PER_MESSAGE_TOKENS = 8
# The smallest reply worth starting: below this a turn is refused rather than cut to nothing.
MIN_REPLY_TOKENS = 16


# Images, as the providers bill them (their documentation, 2025), each a bound for the pixel
# size we send (attachments are re-encoded and scaled to CHAT_IMAGE_MAX_SIDE before storing):
# - Anthropic: about width × height / 750 tokens (larger images are scaled down first, so
#   counting our size is an upper bound);
# - OpenAI, tiled models (gpt-4o, o1, o3, ...; `detail` auto may be high): fitted in 2048 ×
#   2048, then the shortest side down to 768, 170 tokens per 512-pixel tile plus 85; gpt-4o-mini
#   bills the same image as 5667 per tile plus 2833 (its tokens are priced lower);
# - OpenAI, patch models (gpt-4.1-mini/nano, o4-mini, ...): one token per 32-pixel patch, at
#   most 1536 patches, times a model factor of at most 2.46 (gpt-4.1-nano).
# The bound is the largest of these: a model we do not know is billed no more than the worst.
ANTHROPIC_PIXELS_PER_TOKEN = 750
OPENAI_TILE = 512
OPENAI_TILE_TOKENS = (85, 170)  # base, per tile
OPENAI_TILE_TOKENS_BY_MODEL = {"gpt-4o-mini": (2833, 5667)}
OPENAI_PATCH = 32
OPENAI_MAX_PATCHES = 1536
OPENAI_PATCH_FACTOR = 2.46
# A PDF sent as a document is billed per page as its text and an image of the page (both
# providers): each page is bounded by the largest page image (the providers scale a page to
# at most 1568 pixels (Anthropic) or 8 tiles (OpenAI)) plus a dense page's text. The PDF's
# extracted text, sent with it for the fallback, is counted by its bytes on top.
PDF_PAGE_SIDE = 1568
PDF_PAGE_TEXT_TOKENS = 3000


class BudgetExceeded(Exception):
    """The key's monthly budget cannot cover this turn's input and a short reply."""


@dataclass(frozen=True)
class Reservation:
    """Tokens held for one reply: `max_tokens` is the output cap to send to the provider."""

    id: int
    key_id: int
    month: dt.date
    tokens: int
    max_tokens: int


def _utf8(text: str | None) -> int:
    return len(text.encode("utf-8")) if text else 0


def _tile_tokens(width: int, height: int, model: str) -> int:
    """OpenAI's tiled models, high detail: fit in 2048 × 2048, shortest side down to 768."""
    scale = min(1.0, 2048 / max(width, height))
    width, height = width * scale, height * scale
    scale = min(1.0, 768 / min(width, height))
    width, height = width * scale, height * scale
    tiles = math.ceil(width / OPENAI_TILE) * math.ceil(height / OPENAI_TILE)
    base, per_tile = next(
        (costs for name, costs in OPENAI_TILE_TOKENS_BY_MODEL.items() if name in model),
        OPENAI_TILE_TOKENS,
    )
    return base + per_tile * tiles


def image_tokens(width: int, height: int, model: str = "") -> int:
    """An upper bound of the input tokens of one image of `width` × `height` pixels, for
    `model` (any provider's): the largest of what the providers bill for it."""
    width, height = max(1, width), max(1, height)
    anthropic = math.ceil(width * height / ANTHROPIC_PIXELS_PER_TOKEN)
    patches = math.ceil(width / OPENAI_PATCH) * math.ceil(height / OPENAI_PATCH)
    patched = math.ceil(min(patches, OPENAI_MAX_PATCHES) * OPENAI_PATCH_FACTOR)
    return max(anthropic, _tile_tokens(width, height, model), patched)


def pdf_page_tokens(model: str = "") -> int:
    """An upper bound of one PDF page sent as a document: its image at the largest size a
    provider renders it (a square of PDF_PAGE_SIDE, or OpenAI's 8 tiles of 768 × 2048) plus
    a dense page's text."""
    page_image = max(
        image_tokens(PDF_PAGE_SIDE, PDF_PAGE_SIDE, model), _tile_tokens(768, 2048, model)
    )
    return page_image + PDF_PAGE_TEXT_TOKENS


def _part_tokens(part: dict[str, Any], model: str) -> int:
    """What an image or document part costs beyond its text (its bytes are counted apart).
    An image of unknown size counts as the largest we store."""
    if part.get("type") == "image":
        side = settings.CHAT_IMAGE_MAX_SIDE
        return image_tokens(part.get("width") or side, part.get("height") or side, model)
    if part.get("type") == "document":
        # Rows from before page counts were recorded got theirs from their file (migration
        # ai_chat 0008); one whose file could not be read cannot be sent either.
        return (part.get("pages") or 1) * pdf_page_tokens(model)
    return 0


def input_bound(
    messages: Iterable[dict[str, Any]], system: str = "", tools: Any = (), model: str = ""
) -> int:
    """An upper bound of the input tokens of a request to `model`: the bytes of the text
    sent, plus what its images and PDF pages are billed.

    Counts every message's content (text parts of a list content too, and the parts' other
    fields but their base64 data), tool calls' arguments, the system prompt and the tools'
    names, descriptions and schemas, plus a few tokens per message for the provider's
    framing. Bytes, not characters: a Persian letter is two bytes and can be a token of its
    own. Images by their pixel size (`image_tokens`), PDFs sent as documents by their pages
    (`pdf_page_tokens`).
    """
    total = _utf8(system) + PER_MESSAGE_TOKENS
    for message in messages:
        total += PER_MESSAGE_TOKENS
        content = message.get("content")
        if isinstance(content, str):
            total += _utf8(content)
        elif content:
            parts = [
                {k: v for k, v in part.items() if k != "data"} if isinstance(part, dict) else part
                for part in content
            ]
            total += _utf8(json.dumps(parts, ensure_ascii=False, default=str))
            total += sum(_part_tokens(part, model) for part in parts if isinstance(part, dict))
        for call in message.get("tool_calls") or ():
            arguments = getattr(call, "arguments", call)
            total += _utf8(getattr(call, "name", "")) + PER_MESSAGE_TOKENS
            total += _utf8(json.dumps(arguments, ensure_ascii=False, default=str))
    for tool in tools or ():
        total += PER_MESSAGE_TOKENS + _utf8(tool.name) + _utf8(tool.description)
        total += _utf8(json.dumps(tool.parameters, ensure_ascii=False, default=str))
    return total


def _current_month(now: dt.datetime | None = None) -> dt.date:
    return month_start(now).date()


def reserve(
    key: ProviderKey, input_tokens: int, max_output: int, now: dt.datetime | None = None
) -> Reservation | None:
    """Hold `input_tokens` plus up to `max_output` tokens of the key's month.

    Returns None for a key without a budget (nothing to hold). The reservation's
    `max_tokens` is `max_output` lowered to what the budget has left. Raises
    `BudgetExceeded` if what is left cannot cover the input and a short reply
    (`MIN_REPLY_TOKENS`, or `max_output` if smaller); then nothing is reserved.
    Joins the caller's transaction if there is one (the reservation is undone with it).
    """
    budget = key.monthly_token_budget
    if not budget:
        return None
    month = _current_month(now)
    with transaction.atomic():
        dims = {"key_id": key.pk, "month": month}
        # Make sure the month's row exists (one race-safe upsert, which on PostgreSQL also
        # locks it until the commit), then read it locked: the decision below reads used and
        # reserved, and no other turn may decide in between.
        upsert(BudgetCounter, dims, {"reserved": 0})
        counter = BudgetCounter.objects.select_for_update().get(**dims)
        left = budget - counter.used - counter.reserved - input_tokens
        output = min(max_output, left)
        if output < min(MIN_REPLY_TOKENS, max_output):
            raise BudgetExceeded(key.label)
        tokens = input_tokens + output
        upsert(BudgetCounter, dims, {"reserved": tokens})
        held = BudgetReservation.objects.create(key_id=key.pk, month=month, tokens=tokens)
    return Reservation(held.pk, key.pk, month, tokens, output)


def settle(reservation: Reservation | int | None) -> None:
    """Release a reservation (or its id, for a caller that stored only that): call it in the
    transaction that saves the reply's usage record (the record adds the real tokens to the
    month's `used`). Settling twice, or after `release_stale`, does nothing.

    Joins the caller's transaction without a savepoint: an error rolls it back whole."""
    if reservation is None:
        return
    with transaction.atomic(savepoint=False):
        if isinstance(reservation, Reservation):
            # Whoever deletes the row releases its tokens: the DELETE decides, so settling
            # twice, or racing `release_stale` (whose lock this waits for), releases once.
            if not BudgetReservation.objects.take(reservation.id):
                return
            key_id, month, tokens = reservation.key_id, reservation.month, reservation.tokens
        else:
            held = BudgetReservation.objects.select_for_update().filter(pk=reservation).first()
            if held is None:
                return
            held.delete()
            key_id, month, tokens = held.key_id, held.month, held.tokens
        # The reservation made the counter's row: this adds to it (one statement).
        upsert(BudgetCounter, {"key_id": key_id, "month": month}, {"reserved": -tokens})


def release_stale(before: dt.datetime) -> int:
    """Release reservations made before `before` (their worker died mid-reply: a live reply
    settles within CHAT_MAX_REPLY_SECONDS). No usage record exists for such a reply, so
    nothing is charged. Returns how many were released."""
    released = 0
    with transaction.atomic():
        stale = list(BudgetReservation.objects.select_for_update().filter(created_at__lt=before))
        for held in stale:
            BudgetCounter.objects.filter(key_id=held.key_id, month=held.month).update(
                reserved=F("reserved") - held.tokens
            )
            released += 1
        BudgetReservation.objects.filter(pk__in=[held.pk for held in stale]).delete()
    return released
