"""One chat turn: resolve the key → save the user's message → stream the reply → save it.

`prepare_turn` does every check that can refuse a turn before anything streams (raising
`TurnRefused`), and saves the user's message. `run_turn` is the async generator behind the
`text/event-stream` answer: it yields the contract's events and saves the reply once, at the
end, whole or partial, with its usage. No database write happens per token.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Case, Q, Value, When
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.translation import gettext as _

from ai_chat.actions.tools import cards_for, tools_for
from ai_chat.models import Conversation, Message, Role, Status
from api_manager.models import ModelPrice, ProviderKey, UsageRecord, UsageStatus
from api_manager.providers import (
    ChatRequest,
    ProviderConfig,
    ProviderError,
    ToolCall,
    Usage,
    get_provider,
)
from core import crypto, db

logger = logging.getLogger(__name__)


class TurnRefused(Exception):
    """A turn that cannot start; `message` is safe to show, `status` is the HTTP status."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass
class Turn:
    conversation: Conversation
    user_message: Message
    reply: Message
    key: ProviderKey
    config: ProviderConfig
    request: ChatRequest
    user: Any


def sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def _flag(value: Any) -> bool:
    return str(value or "").lower() in {"1", "true", "on", "yes"}


def _as_int(value: Any, what: str) -> int | None:
    if value in (None, ""):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise TurnRefused(_("The %(what)s id is not valid.") % {"what": what}) from None


def build_history(messages: list[Message], budget_chars: int) -> list[dict[str, Any]]:
    """The messages to send, oldest first, trimmed from the oldest to fit `budget_chars`.

    `messages` are newest first. A message is sent whole or not at all; failed replies with no
    text are skipped; the history starts with a user turn and never has two user or two plain
    assistant turns in a row (they are joined). A tool call always travels with its results: a
    call the user never decided gets a result saying so.
    """
    picked: list[Message] = []
    used = 0
    for message in messages:
        if message.role == Role.ASSISTANT and not message.content and not message.tool_calls:
            continue
        cost = len(message.content)
        if picked and used + cost > budget_chars:
            break
        picked.append(message)
        used += cost
    picked.reverse()
    while picked and picked[0].role != Role.USER:
        picked.pop(0)
    history: list[dict[str, Any]] = []
    open_calls: list[str] = []

    def close_open_calls() -> None:
        for call_id in open_calls:
            history.append(
                {
                    "role": "tool",
                    "tool_call_id": call_id,
                    "content": '{"error": "Not run: the user did not approve it."}',
                }
            )
        open_calls.clear()

    for message in picked:
        if message.role == Role.TOOL:
            if message.tool_call_id in open_calls:
                open_calls.remove(message.tool_call_id)
                history.append(
                    {
                        "role": "tool",
                        "tool_call_id": message.tool_call_id,
                        "content": message.content,
                    }
                )
            continue
        close_open_calls()
        cards = message.cards if message.role == Role.ASSISTANT else []
        if cards:
            calls = [ToolCall(card.id, card.name, card.arguments) for card in cards]
            history.append({"role": "assistant", "content": message.content, "tool_calls": calls})
            open_calls.extend(c.id for c in calls)
        elif history and history[-1]["role"] == message.role and "tool_calls" not in history[-1]:
            history[-1]["content"] += "\n\n" + message.content
        else:
            history.append({"role": message.role, "content": message.content})
    close_open_calls()
    return history


def _prepare(user: Any, data: dict[str, Any]) -> Turn:
    """Check everything, save the user's message and a `streaming` reply row; return the turn."""
    regenerate = _flag(data.get("regenerate"))
    resume = _flag(data.get("continue"))
    text = str(data.get("message") or "")
    if resume and regenerate:
        raise TurnRefused(_("Choose either regenerate or continue."))
    if not regenerate and not resume:
        if not text.strip():
            raise TurnRefused(_("Write a message first."))
        if len(text) > settings.CHAT_MAX_MESSAGE_CHARS:
            raise TurnRefused(
                _("The message is too long (%(n)d characters at most).")
                % {"n": settings.CHAT_MAX_MESSAGE_CHARS},
                status=413,
            )
        if "\x00" in text:
            raise TurnRefused(_("The message contains a NUL character."))

    conversation: Conversation | None = None
    conversation_id = _as_int(data.get("conversation"), "conversation")
    if conversation_id is not None:
        # One query for the conversation and its key.
        conversation = (
            Conversation.objects.select_related("key")
            .filter(pk=conversation_id, owner=user)
            .first()
        )
        if conversation is None:
            raise TurnRefused(_("No such conversation."), status=404)
    elif regenerate or resume:
        raise TurnRefused(_("Nothing to regenerate in a new conversation."))

    def usable(candidate: ProviderKey | None) -> ProviderKey | None:
        if candidate is not None and (candidate.owner_id == user.pk or candidate.shared):
            return candidate
        return None

    key_id = _as_int(data.get("key"), "key")
    keys = ProviderKey.objects.usable_by(user)
    key: ProviderKey | None = None
    if conversation is not None and conversation.key_id and key_id in (None, conversation.key_id):
        key = usable(conversation.key)
    elif key_id is not None:
        key = keys.filter(pk=key_id).first()
        if key is None:
            raise TurnRefused(_("No such API key."), status=404)
    if key is None:
        # The default: the user's newest active key, else the team's newest.
        key = (
            keys.filter(is_active=True)
            .annotate(theirs=Case(When(owner=user, then=Value(0)), default=Value(1)))
            .order_by("theirs", "-created_at")
            .first()
        )
    if key is None:
        raise TurnRefused(_("There is no active API key: add one under API keys."), status=409)
    if not key.is_active:
        raise TurnRefused(
            _("The API key “%(label)s” is disabled.") % {"label": key.label}, status=409
        )
    try:
        config = key.provider_config()
    except crypto.DecryptionError:
        raise TurnRefused(
            _("The API key “%(label)s” is unreadable: enter it again.") % {"label": key.label},
            status=409,
        ) from None
    if key.budget_exhausted():
        raise TurnRefused(
            _("The API key “%(label)s” has used its monthly token budget.") % {"label": key.label},
            status=429,
        )

    model = (
        str(data.get("model") or "").strip()
        or key.default_model
        or (conversation.model if conversation else "")
    )
    if not model:
        raise TurnRefused(_("Choose a model: this key has no default model."))
    if len(model) > 200 or any(ch.isspace() for ch in model):
        raise TurnRefused(_("The model name is not valid."))

    system = data.get("system")
    now = timezone.now()
    # Earlier messages, newest first, for the context (before this turn's rows exist).
    earlier: list[Message] = []
    if conversation is not None:
        earlier = list(
            conversation.messages.filter(
                Q(role__in=[Role.USER, Role.TOOL]) | ~Q(content="") | ~Q(tool_calls=[])
            )
            .order_by("-id")
            .only(
                "id", "conversation_id", "role", "content", "status", "tool_calls", "tool_call_id"
            )[:200]
        )
    with transaction.atomic():
        if conversation is None:
            conversation = Conversation.objects.create(
                owner=user,
                title=" ".join(text.split())[:80],
                key=key,
                model=model,
                system_prompt=str(system or "")[: settings.CHAT_MAX_MESSAGE_CHARS],
                created_at=now,
                updated_at=now,
            )
        else:
            # Saved only when something changed; `updated_at` is bumped when the reply is saved.
            changed = {"key": key, "model": model}
            if system is not None:
                changed["system_prompt"] = str(system)[: settings.CHAT_MAX_MESSAGE_CHARS]
            changed = {k: v for k, v in changed.items() if getattr(conversation, k) != v}
            for name, value in changed.items():
                setattr(conversation, name, value)
            if changed:
                conversation.save(update_fields=list(changed))
        reply = Message(
            conversation=conversation,
            role=Role.ASSISTANT,
            status=Status.STREAMING,
            model=model,
            created_at=now,
        )
        if regenerate:
            last_user = next((m for m in earlier if m.role == Role.USER), None)
            if last_user is None:
                raise TurnRefused(_("Nothing to regenerate yet."))
            # Drop every reply after the last user message (empty failed ones included).
            conversation.messages.filter(role=Role.ASSISTANT, pk__gt=last_user.pk).delete()
            earlier = [m for m in earlier if not (m.role == Role.ASSISTANT and m.pk > last_user.pk)]
            user_message = last_user
            reply.save()
        elif resume:
            if not earlier or earlier[0].role != Role.TOOL:
                raise TurnRefused(_("There is no action result to continue from."))
            user_message = next((m for m in earlier if m.role == Role.USER), earlier[0])
            reply.save()
        else:
            user_message = Message(conversation=conversation, role=Role.USER, created_at=now)
            user_message.set_content(text)
            # One INSERT for the user's message and the `streaming` reply row.
            Message.objects.bulk_create([user_message, reply])
            earlier.insert(0, user_message)
    request = ChatRequest(
        model=model,
        messages=build_history(earlier, settings.CHAT_CONTEXT_CHARS),
        system=conversation.system_prompt,
        max_tokens=settings.CHAT_MAX_OUTPUT_TOKENS,
        tools=tools_for(user),
    )
    return Turn(conversation, user_message, reply, key, config, request, user)


async def prepare_turn(user: Any, data: dict[str, Any]) -> Turn:
    """Check and start a turn (core.db: on a database thread, which holds no connection
    afterwards: a stream may stay open for minutes and must not tie one up)."""
    return await db.run(_prepare, user, data)


def estimate_tokens(text: str) -> int:
    """A rough token count (about four characters a token) for when the provider said nothing."""
    return max(1, (len(text) + 3) // 4) if text else 0


def _finish(
    turn: Turn,
    text: str,
    status: str,
    usage: Usage | None,
    error: ProviderError | None,
    first_ms: int | None,
    total_ms: int,
    calls: list[ToolCall] | None = None,
) -> None:
    """Save the reply, its usage record and the key's last-used/last-error, in one transaction.

    Tool calls become approval cards on the reply (nothing runs until the user approves).
    """
    request_chars = sum(len(m["content"] or "") for m in turn.request.messages) + len(
        turn.request.system
    )
    input_tokens = (
        usage.input_tokens if usage and usage.input_tokens else estimate_tokens("x" * request_chars)
    )
    output_tokens = usage.output_tokens if usage and not usage.estimated else 0
    estimated = usage is None or usage.estimated or not usage.input_tokens
    if estimated and text:
        output_tokens = max(output_tokens, estimate_tokens(text))
    usage_status = {Status.COMPLETE: UsageStatus.OK, Status.STOPPED: UsageStatus.STOPPED}.get(
        status, UsageStatus.ERROR
    )
    with transaction.atomic():
        record = UsageRecord.objects.create(
            key=turn.key,
            key_label=turn.key.label,
            user_id=turn.user.pk,
            provider=turn.key.provider,
            model=turn.request.model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            estimated=estimated,
            cost=ModelPrice.cost_for(turn.request.model, input_tokens, output_tokens),
            first_token_ms=first_ms,
            total_ms=total_ms,
            status=usage_status,
            error_code=error.code if error else ("cancelled" if status == Status.STOPPED else ""),
        )
        reply = turn.reply
        reply.set_content(text)
        reply.status = status
        reply.usage = record
        reply.first_token_ms = first_ms
        reply.total_ms = total_ms
        reply.error_code = error.code if error else ""
        reply.error_message = error.message[:300] if error else ""
        if calls and error is None:
            reply.tool_calls = cards_for(turn.user, calls)
        reply.save(
            update_fields=[
                "tool_calls",
                "content",
                "content_html",
                "search_text",
                "status",
                "usage",
                "first_token_ms",
                "total_ms",
                "error_code",
                "error_message",
            ]
        )
        Conversation.objects.filter(pk=turn.conversation.pk).update(updated_at=timezone.now())
        if error is not None and error.code != "cancelled":
            turn.key.record_error(error.message)
        else:
            turn.key.record_success()
    turn.reply.usage = record


async def run_turn(turn: Turn) -> AsyncIterator[str]:
    """Yield the stream's events; save the reply once at the end, however the stream ends."""
    yield sse(
        "meta",
        {
            "conversation": turn.conversation.pk,
            "user_message": turn.user_message.pk,
            "message": turn.reply.pk,
        },
    )
    started = time.monotonic()
    first_ms: int | None = None
    pieces: list[str] = []
    usage: Usage | None = None
    calls: list[ToolCall] = []
    stream = get_provider(turn.config).stream(turn.request)
    heartbeat = settings.CHAT_HEARTBEAT_SECONDS
    # One task reads the provider into a queue; this generator drains it. Pieces that arrived
    # while the last event was being sent go out together (coalesced under load), a lone
    # piece goes out at once (word by word when idle).
    queue: asyncio.Queue[Any] = asyncio.Queue()
    done = object()

    async def produce() -> None:
        try:
            async for chunk in stream:
                queue.put_nowait(chunk)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # handed to the consumer, which reports it
            queue.put_nowait(exc)
        else:
            queue.put_nowait(done)

    producer = asyncio.ensure_future(produce())

    def elapsed_ms() -> int:
        return int((time.monotonic() - started) * 1000)

    async def finish(status: str, error: ProviderError | None) -> None:
        # Shielded: a second cancellation must not lose what arrived.
        await asyncio.shield(
            db.run(
                _finish, turn, "".join(pieces), status, usage, error, first_ms, elapsed_ms(), calls
            )
        )

    try:
        finished = False
        while not finished:
            try:
                async with asyncio.timeout(heartbeat):
                    batch = [await queue.get()]
            except TimeoutError:
                # A comment line: keeps proxies from closing an idle stream (a slow first token).
                yield ": keep-alive\n\n"
                continue
            while not queue.empty():
                batch.append(queue.get_nowait())
            text: list[str] = []
            failure: BaseException | None = None
            for item in batch:
                if item is done:
                    finished = True
                elif isinstance(item, BaseException):
                    failure = item
                else:
                    if item.usage is not None:
                        usage = item.usage
                    if item.tool_call is not None:
                        calls.append(item.tool_call)
                    if item.text:
                        text.append(item.text)
            if text:
                if first_ms is None:
                    first_ms = elapsed_ms()
                piece = "".join(text)
                pieces.append(piece)
                yield sse("delta", {"text": piece})
            if failure is not None:
                raise failure
    except ProviderError as exc:
        await finish(Status.ERROR, exc)
        yield sse("error", {"message": exc.message, "code": exc.code})
        return
    except asyncio.CancelledError:
        # The browser went away (Django cancels the response on disconnect): close the
        # provider's stream now, keep what arrived as `stopped`, then let the cancel go on.
        producer.cancel()
        await asyncio.wait({producer})
        await stream.aclose()
        await finish(Status.STOPPED, None)
        raise
    except Exception:
        producer.cancel()
        logger.exception("chat stream failed for conversation %s", turn.conversation.pk)
        error = ProviderError(_("Something went wrong while streaming the reply."))
        await finish(Status.ERROR, error)
        yield sse("error", {"message": error.message, "code": error.code})
        return
    await finish(Status.COMPLETE, None)
    record = turn.reply.usage
    yield sse(
        "done",
        {
            "message": turn.reply.pk,
            "usage": {
                "input_tokens": record.input_tokens,
                "output_tokens": record.output_tokens,
                "estimated": record.estimated,
            },
            "html": turn.reply.content_html,
            "first_token_ms": first_ms,
            "total_ms": turn.reply.total_ms,
            "tool_calls": turn.reply.tool_calls,
            "cards_html": render_cards(turn.reply) if turn.reply.tool_calls else "",
        },
    )


def render_cards(message: Message) -> str:
    """The approval cards of `message`, as the page shows them."""
    return render_to_string("ai_chat/tool_cards.html", {"message": message})
