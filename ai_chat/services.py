"""One chat turn: check it → save the user's message → stream the reply → save it.

`prepare_turn` validates the input (ai_chat/forms.py), does every check that can refuse a turn
before anything streams (raising `TurnRefused`), and starts the turn of its kind: a new
message, a regenerated reply, or a continuation after an action's result. `run_turn` is the
async generator behind the `text/event-stream` answer: it yields the contract's events and
saves the reply once, at the end, whole or partial, with its usage. No database write happens
per token.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.translation import gettext as _

from ai_chat.actions.cards import is_note
from ai_chat.actions.tools import cards_for, tools_for
from ai_chat.forms import TurnForm, TurnKind
from ai_chat.models import Conversation, Message, Role, Status
from api_manager import budget
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
    """A started turn: its rows as they were saved before the stream, the key and the request."""

    conversation: Conversation
    user_message: Message
    reply: Message
    key: ProviderKey
    config: ProviderConfig
    request: ChatRequest
    user: Any
    # Tokens held against the key's monthly budget until `_finish` settles them.
    reservation: budget.Reservation | None = None


def sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


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
    # Notes about settled cards (an undo) wait until the calls open at the time are answered:
    # nothing may come between a tool call and its results.
    notes: list[str] = []

    def add_notes() -> None:
        for note in notes:
            text = f"[Panel note about your earlier action: {note}]"
            if history and history[-1]["role"] == "user":
                history[-1]["content"] += "\n\n" + text
            else:
                history.append({"role": "user", "content": text})
        notes.clear()

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
        if message.role == Role.TOOL and is_note(message.tool_call_id):
            notes.append(message.content)
            if not open_calls:
                add_notes()
            continue
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
        add_notes()
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
    add_notes()
    return history


@dataclass
class _Checked:
    """A turn that passed every check, before anything is written."""

    user: Any
    conversation: Conversation | None
    key: ProviderKey
    config: ProviderConfig
    model: str
    system: str | None
    # Earlier messages of the conversation, newest first (before this turn's rows exist).
    earlier: list[Message]
    now: datetime.datetime


def _conversation_for(user: Any, conversation_id: int | None) -> Conversation | None:
    """The user's conversation `conversation_id` (None for a new one); TurnRefused (404) if
    there is no such conversation of theirs."""
    if conversation_id is None:
        return None
    # One query: the conversation, its key, and whether the user may still use that key.
    conversation = (
        Conversation.objects.select_related("key")
        .annotate(
            key_usable=Exists(ProviderKey.objects.usable_by(user).filter(pk=OuterRef("key_id")))
        )
        .filter(pk=conversation_id, owner=user)
        .first()
    )
    if conversation is None:
        raise TurnRefused(_("No such conversation."), status=404)
    return conversation


def _key_for(
    user: Any, conversation: Conversation | None, key_id: int | None
) -> tuple[ProviderKey, ProviderConfig]:
    """The turn's key and its decrypted configuration; TurnRefused if it cannot be used."""
    try:
        key = ProviderKey.objects.for_turn(user, conversation, key_id)
    except ProviderKey.DoesNotExist:
        raise TurnRefused(_("No such API key."), status=404) from None
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
    return key, config


def _earlier(conversation: Conversation | None) -> list[Message]:
    """The conversation's latest messages that may go into the context, newest first."""
    if conversation is None:
        return []
    return list(
        conversation.messages.filter(
            Q(role__in=[Role.USER, Role.TOOL]) | ~Q(content="") | ~Q(tool_calls=[])
        )
        .order_by("-id")
        .only("id", "conversation_id", "role", "content", "status", "tool_calls", "tool_call_id")[
            :200
        ]
    )


def _check(user: Any, form: TurnForm) -> _Checked:
    """Everything that can refuse a turn, before anything is written (raises TurnRefused)."""
    data = form.cleaned_data
    conversation = _conversation_for(user, data["conversation"])
    key, config = _key_for(user, conversation, data["key"])
    model = data["model"] or key.default_model or (conversation.model if conversation else "")
    if not model:
        raise TurnRefused(_("Choose a model: this key has no default model."))
    return _Checked(
        user=user,
        conversation=conversation,
        key=key,
        config=config,
        model=model,
        system=data["system"],
        earlier=_earlier(conversation),
        now=timezone.now(),
    )


def _save_conversation(checked: _Checked, title: str = "") -> Conversation:
    """Create the conversation (titled after `title`), or save what this turn changed in it."""
    conversation = checked.conversation
    if conversation is None:
        return Conversation.objects.create(
            owner=checked.user,
            title=" ".join(title.split())[:80],
            key=checked.key,
            model=checked.model,
            system_prompt=checked.system or "",
            created_at=checked.now,
            updated_at=checked.now,
        )
    # Saved only when something changed; `updated_at` is bumped when the reply is saved.
    changed: dict[str, Any] = {"key": checked.key, "model": checked.model}
    if checked.system is not None:
        changed["system_prompt"] = checked.system
    changed = {k: v for k, v in changed.items() if getattr(conversation, k) != v}
    for name, value in changed.items():
        setattr(conversation, name, value)
    if changed:
        conversation.save(update_fields=list(changed))
    return conversation


def _reply_row(checked: _Checked, conversation: Conversation) -> Message:
    """The reply's row, `streaming` until `_finish` saves what arrived (not saved here)."""
    return Message(
        conversation=conversation,
        role=Role.ASSISTANT,
        status=Status.STREAMING,
        model=checked.model,
        created_at=checked.now,
    )


@dataclass
class _Started:
    """The rows a kind of turn wrote, and the messages its request is built from."""

    conversation: Conversation
    user_message: Message
    reply: Message
    # Newest first; trimmed to fit when the request is built.
    history: list[Message]


def _new_message(checked: _Checked, text: str) -> _Started:
    """A new user message and its reply (a new conversation when there is none)."""
    conversation = _save_conversation(checked, title=text)
    user_message = Message(conversation=conversation, role=Role.USER, created_at=checked.now)
    user_message.set_content(text)
    reply = _reply_row(checked, conversation)
    # One INSERT for the user's message and the `streaming` reply row.
    Message.objects.bulk_create([user_message, reply])
    return _Started(conversation, user_message, reply, [user_message, *checked.earlier])


def _regenerate(checked: _Checked) -> _Started:
    """A new reply to the last user message, replacing every reply after it."""
    last_user = next((m for m in checked.earlier if m.role == Role.USER), None)
    if checked.conversation is None or last_user is None:
        raise TurnRefused(_("Nothing to regenerate yet."))
    conversation = _save_conversation(checked)
    # Drop every reply after the last user message (empty failed ones included).
    conversation.messages.filter(role=Role.ASSISTANT, pk__gt=last_user.pk).delete()
    reply = _reply_row(checked, conversation)
    reply.save()
    history = [m for m in checked.earlier if not (m.role == Role.ASSISTANT and m.pk > last_user.pk)]
    return _Started(conversation, last_user, reply, history)


def _continue(checked: _Checked) -> _Started:
    """The model's next reply after the results of the actions it asked for."""
    earlier = checked.earlier
    if checked.conversation is None or not earlier or earlier[0].role != Role.TOOL:
        raise TurnRefused(_("There is no action result to continue from."))
    user_message = next((m for m in earlier if m.role == Role.USER), earlier[0])
    conversation = _save_conversation(checked)
    reply = _reply_row(checked, conversation)
    reply.save()
    return _Started(conversation, user_message, reply, earlier)


def _prepare(user: Any, data: dict[str, Any]) -> Turn:
    """Check the turn (TurnRefused if it cannot start), then start it according to its kind:
    save the user's message (for a new one) and the `streaming` reply row; return the turn
    with the request to send."""
    form = TurnForm(data)
    if not form.is_valid():
        message, status = form.refusal()
        raise TurnRefused(message, status=status)
    checked = _check(user, form)
    # One short transaction for whichever kind of turn: a kind refuses before it writes, and
    # anything refused later in it undoes the rows.
    with transaction.atomic():
        if form.kind == TurnKind.REGENERATE:
            started = _regenerate(checked)
        elif form.kind == TurnKind.CONTINUE:
            started = _continue(checked)
        else:
            started = _new_message(checked, form.cleaned_data["message"])
        history = build_history(started.history, settings.CHAT_CONTEXT_CHARS)
        tools = tools_for(user)
        # Last in the transaction: a refusal undoes the rows above; the counter stays locked
        # only until the commit.
        reservation = _reserve_budget(
            checked.key, history, started.conversation.system_prompt, tools
        )
    request = ChatRequest(
        model=checked.model,
        messages=history,
        system=started.conversation.system_prompt,
        max_tokens=reservation.max_tokens if reservation else settings.CHAT_MAX_OUTPUT_TOKENS,
        tools=tools,
    )
    return Turn(
        started.conversation,
        started.user_message,
        started.reply,
        checked.key,
        checked.config,
        request,
        user,
        reservation,
    )


def _reserve_budget(
    key: ProviderKey, history: list[dict[str, Any]], system: str, tools: Any
) -> budget.Reservation | None:
    """Hold the turn's worst case (input bytes + output cap) against the key's monthly
    budget; raise TurnRefused (429) when the budget cannot cover a short reply."""
    try:
        return budget.reserve(
            key, budget.input_bound(history, system, tools), settings.CHAT_MAX_OUTPUT_TOKENS
        )
    except budget.BudgetExceeded:
        raise TurnRefused(
            _("The API key “%(label)s” has used its monthly token budget.") % {"label": key.label},
            status=429,
        ) from None


async def prepare_turn(user: Any, data: dict[str, Any]) -> Turn:
    """Check and start a turn (core.db: on a database thread, which holds no connection
    afterwards: a stream may stay open for minutes and must not tie one up)."""
    return await db.run(_prepare, user, data)


def estimate_tokens(chars: int) -> int:
    """A rough token count (about four characters a token) for when the provider said nothing."""
    return max(1, (chars + 3) // 4) if chars else 0


@dataclass(frozen=True)
class CountedUsage:
    """The tokens recorded for a turn; `estimated` when any count is ours, not the provider's."""

    input_tokens: int
    output_tokens: int
    estimated: bool


def count_usage(request: ChatRequest, text: str, usage: Usage | None) -> CountedUsage:
    """The provider's counts where it reported them, an estimate where it did not (a stream
    stopped or cut before the provider's final usage report). The one place that estimates."""
    reported_in = usage.input_tokens if usage is not None else None
    reported_out = usage.output_tokens if usage is not None else None
    input_tokens = reported_in
    if input_tokens is None:
        chars = sum(len(m["content"] or "") for m in request.messages) + len(request.system)
        input_tokens = estimate_tokens(chars)
    output_tokens = reported_out if reported_out is not None else estimate_tokens(len(text))
    return CountedUsage(
        input_tokens, output_tokens, estimated=reported_in is None or reported_out is None
    )


@dataclass(frozen=True)
class SavedReply:
    """What `_finish` saved: everything the stream's `done` event reports."""

    message_id: int
    status: str
    html: str
    usage: CountedUsage
    first_token_ms: int | None
    total_ms: int
    tool_calls: list[dict[str, Any]]
    cards_html: str

    def done_data(self) -> dict[str, Any]:
        """The data of the stream's `done` event (CONTRACT.md)."""
        return {
            "message": self.message_id,
            "status": self.status,
            "usage": {
                "input_tokens": self.usage.input_tokens,
                "output_tokens": self.usage.output_tokens,
                "estimated": self.usage.estimated,
            },
            "html": self.html,
            "first_token_ms": self.first_token_ms,
            "total_ms": self.total_ms,
            "tool_calls": self.tool_calls,
            "cards_html": self.cards_html,
        }


def _finish(
    turn: Turn,
    text: str,
    status: str,
    usage: Usage | None,
    error: ProviderError | None,
    first_ms: int | None,
    total_ms: int,
    calls: list[ToolCall] | None = None,
) -> SavedReply:
    """Save the reply, its usage record and the key's last-used/last-error; return what was saved.

    Tool calls become approval cards on the reply (nothing runs until the user approves).
    Everything slow comes first (Markdown, the cards, which may read files for a preview, the
    price lookup); then one short transaction only writes.
    """
    counted = count_usage(turn.request, text, usage)
    usage_status = {Status.COMPLETE: UsageStatus.OK, Status.STOPPED: UsageStatus.STOPPED}.get(
        status, UsageStatus.ERROR
    )
    cost = ModelPrice.cost_for(turn.request.model, counted.input_tokens, counted.output_tokens)
    # A copy: the turn keeps the row as it was started; the caller gets what was saved.
    reply = copy.copy(turn.reply)
    reply.set_content(text)
    reply.status = status
    reply.first_token_ms = first_ms
    reply.total_ms = total_ms
    reply.error_code = error.code if error else ""
    reply.error_message = error.message[:300] if error else ""
    if calls and error is None:
        reply.tool_calls = cards_for(turn.user, calls)
    cards_html = render_cards(reply) if reply.tool_calls else ""
    with transaction.atomic():
        reply.usage = UsageRecord.objects.record(
            key=turn.key,
            key_label=turn.key.label,
            user_id=turn.user.pk,
            provider=turn.key.provider,
            model=turn.request.model,
            input_tokens=counted.input_tokens,
            output_tokens=counted.output_tokens,
            estimated=counted.estimated,
            cost=cost,
            first_token_ms=first_ms,
            total_ms=total_ms,
            status=usage_status,
            error_code=error.code if error else ("cancelled" if status == Status.STOPPED else ""),
        )
        budget.settle(turn.reservation)
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
    return SavedReply(
        message_id=reply.pk,
        status=status,
        html=reply.content_html,
        usage=counted,
        first_token_ms=first_ms,
        total_ms=total_ms,
        tool_calls=reply.tool_calls,
        cards_html=cards_html,
    )


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

    async def finish(status: str, error: ProviderError | None) -> SavedReply:
        # Shielded: a second cancellation must not lose what arrived.
        return await asyncio.shield(
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
    saved = await finish(Status.COMPLETE, None)
    yield sse("done", saved.done_data())


def render_cards(message: Message) -> str:
    """The approval cards of `message`, as the page shows them."""
    return render_to_string("ai_chat/tool_cards.html", {"message": message})
