"""The action service: run a query, preview / confirm / undo an append, decide a card.

Every function checks the user's permission itself, records the attempt through
`audit.attempt` (allowed, refused or failed, even when something unexpected raises) and raises
one exception, `ActionRefused(message, status)`, for anything it does not do. Views and the
chat tools call these functions and only map `ActionRefused` to JSON or a card.
"""

from __future__ import annotations

import json
from typing import Any, NoReturn

from django.db import transaction
from django.utils.translation import gettext as _

from ai_chat.actions import audit, files, query
from ai_chat.actions.cards import (
    APPEND_TOOL,
    NOTE_PREFIX,
    QUERY_TOOL,
    Card,
    CardState,
    cards_of,
)
from ai_chat.actions.errors import ActionRefused
from ai_chat.models import ActionKind, ChangeStatus, FileChange, Message, Role

RUN_QUERY = "ai_chat.run_query"
WRITE_FILES = "ai_chat.write_files"
RESULT_ROWS_FOR_MODEL = 100
RESULT_ROWS_FOR_CARD = 50


def _require(user: Any, permission: str) -> None:
    if not user.has_perm(permission):
        message = (
            "You do not have permission to run queries."
            if permission == RUN_QUERY
            else "You do not have permission to change files."
        )
        raise ActionRefused(message, 403)


def refuse_input(user: Any, kind: ActionKind, excerpt: str, message: str) -> NoReturn:
    """Audit and refuse a request whose body could not be read (not JSON, too deep, too big)."""
    with audit.attempt(user, kind, excerpt):
        raise ActionRefused(message, 400)


# -- queries ----------------------------------------------------------------------------------


def run_query(user: Any, data: dict[str, Any]) -> dict[str, Any]:
    """Run `data["code"]` read-only for `user`; return the JSON answer of the contract."""
    with audit.attempt(user, ActionKind.QUERY, data) as entry:
        return _query(user, data, entry)


def _query(user: Any, data: dict[str, Any], entry: audit.Attempt) -> dict[str, Any]:
    _require(user, RUN_QUERY)
    if set(data) != {"code"}:
        raise ActionRefused("Send the query, and only the query, as `code`.")
    answer = query.execute(data["code"], user).as_json()
    entry.rows = answer["count"]
    return answer


# -- appends ----------------------------------------------------------------------------------


def preview_append(user: Any, data: dict[str, Any]) -> dict[str, Any]:
    """Check an append and store it as pending; changes no file. Answers preview and token."""
    path = data.get("path") if isinstance(data.get("path"), str) else ""
    with audit.attempt(user, ActionKind.APPEND, data) as entry:
        entry.path = path
        _require(user, WRITE_FILES)
        result = files.preview(user, data.get("path"), data.get("content"))
        entry.file_hash = result.change.base_hash
        return result.as_json()


def confirm_append(user: Any, data: dict[str, Any]) -> dict[str, Any]:
    """Apply the pending change whose token `data` holds (the token itself is never logged)."""
    with audit.attempt(user, ActionKind.CONFIRM, {"token": "…"}) as entry:
        _require(user, WRITE_FILES)
        change = files.pending_by_token(user, data.get("token"))
        entry.payload = {"change": change.pk}
        return _apply(user, change, entry)


def _apply(user: Any, change: FileChange, entry: audit.Attempt) -> dict[str, Any]:
    """Append `change`; a conflict supersedes it and is refused with a fresh preview."""
    entry.path = change.path
    try:
        applied = files.apply(change)
    except files.FileConflict as exc:
        FileChange.objects.filter(pk=change.pk, status=ChangeStatus.PENDING).update(
            status=ChangeStatus.SUPERSEDED
        )
        message, fresh = exc.message, {}
        try:
            fresh = files.preview(user, change.path, change.content).as_json()
        except files.FileRefused as refused:
            message += f" {refused.message}"
        raise ActionRefused(message, 409, fresh) from None
    entry.file_hash = applied.after_hash
    return {"ok": True, "change": applied.pk}


def undo_change(user: Any, change_id: int) -> dict[str, Any]:
    """Restore the file as it was before change `change_id` of `user`. When an approval card
    applied it, the card becomes `undone` and a note for the model is stored in its
    conversation; the answer then also holds the card (`card`) and its reply (`message`)."""
    with audit.attempt(user, ActionKind.UNDO, {"change": change_id}) as entry:
        _require(user, WRITE_FILES)
        change = files.undo(user, change_id)
        entry.path, entry.file_hash = change.path, change.after_hash
        answer: dict[str, Any] = {"ok": True, "change": change.pk}
        card = _mark_undone(change)
        if card is not None:
            answer.update(card=card.as_json(), message=change.message_id)
        return answer


def _mark_undone(change: FileChange) -> Card | None:
    """Mark the card that applied `change` undone and store the note the next turn sends to
    the model (a `tool` message under NOTE_PREFIX); None when no card applied it."""
    if change.message_id is None or not change.call_id:
        return None
    with transaction.atomic():
        reply = Message.objects.select_for_update().filter(pk=change.message_id).first()
        if reply is None:
            return None
        cards = cards_of(reply.tool_calls)
        card = next((c for c in cards if c.id == change.call_id), None)
        if card is None:
            return None
        card.state = CardState.UNDONE
        reply.tool_calls = [c.as_json() for c in cards]
        reply.save(update_fields=["tool_calls"])
        note = {
            "undone": True,
            "call": card.id,
            "path": change.path,
            "note": "The user undid this change: the file is back as it was before it.",
        }
        Message.objects.create(
            conversation_id=reply.conversation_id,
            role=Role.TOOL,
            tool_call_id=f"{NOTE_PREFIX}{card.id}",
            content=json.dumps(note, ensure_ascii=False),
        )
    return card


# -- approval cards ---------------------------------------------------------------------------


def preview_card(user: Any, card: Card) -> Card:
    """Fill in an append card's diff (a preview, which changes nothing) or refuse the card."""
    if card.name == QUERY_TOOL:
        # A query the validator refuses can never run: the card says why at once, and offers
        # only to tell the assistant (nothing is run or audited until the user decides).
        try:
            query.check(card.arguments.get("code"), user)
        except ActionRefused as exc:
            card.state, card.error = CardState.REFUSED, exc.message
    elif card.name == APPEND_TOOL:
        try:
            answer = preview_append(user, card.arguments)
        except ActionRefused as exc:
            card.state, card.error = CardState.REFUSED, exc.message
        except Exception:
            # Already audited and logged as failed. The card says so: the reply holding it must
            # still be saved, and its stream must still end with `done`.
            card.state, card.error = CardState.REFUSED, "The preview failed unexpectedly."
        else:
            card.diff, card.change = answer["preview"], answer["change"]
    else:
        card.state, card.error = CardState.REFUSED, f"Unknown tool {card.name[:100]!r}."
    return card


def decide_card(
    user: Any, conversation_id: int, message_id: int, call_id: str, *, decision: Any
) -> tuple[Card, bool]:
    """Run (`decision="approve"`) or reject one open card of the user's reply `message_id`;
    return the card and whether every card of the reply is now settled. The result, or the
    refusal, is saved as a `tool` message that the next turn sends back to the model. A bad
    decision, an unknown message or card (404) or a decided card (409) raise ActionRefused.
    Every decision is audited, under the card's action when the card is known."""
    logged = {"message": message_id, "call": call_id[:100], "decision": str(decision)[:20]}
    with audit.attempt(user, ActionKind.DECIDE, logged) as entry:
        if decision not in ("approve", "reject"):  # a tuple: `decision` may be any JSON
            raise ActionRefused(_("Say `approve` or `reject`."))
        approve = decision == "approve"
        reply, card = _claim(user, conversation_id, message_id, call_id, approve)
        entry.kind = {QUERY_TOOL: ActionKind.QUERY, APPEND_TOOL: ActionKind.CONFIRM}.get(
            card.name, ActionKind.DECIDE
        )
        entry.payload = dict(card.arguments, decision=decision)
        try:
            for_model = _settle(user, card, approve, entry)
        except BaseException:
            card.state, card.error = CardState.FAILED, "The action failed unexpectedly."
            _save(reply, card, json.dumps({"error": card.error}))
            raise
        return card, _save(reply, card, for_model)


def _claim(
    user: Any, conversation_id: int, message_id: int, call_id: str, approve: bool
) -> tuple[Message, Card]:
    """Find the card and, when it will run, mark it running: two clicks never run it twice.
    A short transaction that only writes; the action itself runs after it."""
    with transaction.atomic():
        # Only the user's own reply: someone else's is as unknown as a missing one.
        locked = (
            Message.objects.select_for_update(of=("self",))
            .filter(
                pk=message_id,
                conversation_id=conversation_id,
                conversation__owner=user,
                role=Role.ASSISTANT,
            )
            .first()
        )
        if locked is None:
            raise ActionRefused("No such message.", 404)
        cards = cards_of(locked.tool_calls)
        card = next((c for c in cards if c.id == call_id), None)
        if card is None:
            raise ActionRefused("No such action in this message.", 404)
        if not card.is_open:
            raise ActionRefused("This action has already been decided.", 409)
        if approve and card.state == CardState.PENDING:
            card.state = CardState.RUNNING
            locked.tool_calls = [c.as_json() for c in cards]
            locked.save(update_fields=["tool_calls"])
        return locked, card


def _settle(user: Any, card: Card, approve: bool, entry: audit.Attempt) -> str:
    """Decide `card` (in place); return the text sent back to the model."""
    if card.state == CardState.REFUSED:
        card.state = CardState.FAILED
        card.error = card.error or "The action was refused."
        entry.refused_without_raising(card.error)
        return json.dumps({"error": card.error})
    if not approve:
        if card.change is not None:
            FileChange.objects.filter(
                pk=card.change, user=user, status=ChangeStatus.PENDING
            ).update(status=ChangeStatus.REJECTED)
        card.state = CardState.REJECTED
        entry.refused_without_raising("rejected by the user")
        return json.dumps({"error": "The user rejected this action. Do not retry it unless asked."})
    try:
        if card.is_query:
            answer = _query(user, {"code": card.arguments.get("code")}, entry)
            card.state = CardState.DONE
            card.result = {
                "columns": answer["columns"],
                "rows": answer["rows"][:RESULT_ROWS_FOR_CARD],
                "count": answer["count"],
                "truncated": answer["truncated"] or answer["count"] > RESULT_ROWS_FOR_CARD,
            }
            for_model = dict(answer, rows=answer["rows"][:RESULT_ROWS_FOR_MODEL])
            return json.dumps(for_model, ensure_ascii=False, default=str)
        _require(user, WRITE_FILES)
        if card.change is None:
            raise ActionRefused("The previewed change is gone.")
        change = files.pending_by_id(user, card.change)
        answer = _apply(user, change, entry)
    except ActionRefused as exc:
        # The card answers the refusal (the view answers 200 with a failed card).
        entry.outcome, entry.error = audit.outcome_for(exc.status), exc.message
        card.state, card.error = CardState.FAILED, exc.message
        return json.dumps({"error": exc.message})
    card.state, card.change = CardState.APPLIED, answer["change"]
    return json.dumps(
        {"ok": True, "applied_to": change.path, "bytes": len(change.content.encode())}
    )


def _save(reply: Message, card: Card, for_model: str) -> bool:
    """Store the decided card and its `tool` result; return whether all cards are settled."""
    with transaction.atomic():
        locked = Message.objects.select_for_update().get(pk=reply.pk)
        cards = [card if c.id == card.id else c for c in cards_of(locked.tool_calls)]
        locked.tool_calls = [c.as_json() for c in cards]
        locked.save(update_fields=["tool_calls"])
        Message.objects.create(
            conversation_id=locked.conversation_id,
            role=Role.TOOL,
            tool_call_id=card.id,
            content=for_model,
        )
        if card.state == CardState.APPLIED and card.change is not None:
            # So that an undo finds this card (and its conversation) again.
            FileChange.objects.filter(pk=card.change).update(message=locked, call_id=card.id)
    return all(not c.is_open and c.state != CardState.RUNNING for c in cards)
