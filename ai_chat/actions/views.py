"""The action endpoints (JSON over POST). Every request is written to the audit log."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.db import DatabaseError
from django.http import HttpResponse, JsonResponse
from django.views.decorators.http import require_POST

from ai_chat.actions import audit, files, query
from ai_chat.models import ActionKind, ActionOutcome, ChangeStatus, FileChange
from core.http import AuthenticatedHttpRequest

logger = logging.getLogger(__name__)


class BadBody(Exception):
    pass


def _body(request: AuthenticatedHttpRequest) -> dict[str, Any]:
    try:
        raw = request.body
    except RequestDataTooBig:
        raise BadBody("The request is too large.") from None
    try:
        data = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise BadBody("The request body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise BadBody("The request body must be a JSON object.")
    return data


def _raw_excerpt(request: AuthenticatedHttpRequest) -> str:
    try:
        return request.body[:2000].decode(errors="replace")
    except RequestDataTooBig:
        return "(body too large)"


def _refuse(
    request, kind, payload, started, message, status=400, outcome=ActionOutcome.REFUSED, **extra
) -> JsonResponse:  # type: ignore[no-untyped-def]
    audit.record(
        request.user,
        kind,
        payload,
        outcome,
        started=started,
        error=message,
        path=extra.pop("path", ""),
    )
    logger.info("action %s refused for user %s: %s", kind, request.user.pk, message)
    return JsonResponse({"error": message, **extra}, status=status)


def run_query(user: Any, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Run a query for `user` with auditing; return (HTTP status, JSON answer). Shared by the
    endpoint and the chat's approval cards."""
    started = time.monotonic()
    if not user.has_perm("ai_chat.run_query"):
        audit.record(
            user,
            ActionKind.QUERY,
            payload,
            ActionOutcome.FORBIDDEN,
            started=started,
            error="no permission",
        )
        return 403, {"error": "You do not have permission to run queries."}
    try:
        _spec, result = query.execute(payload, user)
    except query.QueryRefused as exc:
        audit.record(
            user, ActionKind.QUERY, payload, ActionOutcome.REFUSED, started=started, error=str(exc)
        )
        return 400, {"error": str(exc)}
    except DatabaseError as exc:
        message = "The database refused or stopped the query (it may have taken too long)."
        audit.record(
            user,
            ActionKind.QUERY,
            payload,
            ActionOutcome.ERROR,
            started=started,
            error=f"{message} {exc}",
        )
        return 400, {"error": message}
    answer = result.as_json()
    audit.record(
        user, ActionKind.QUERY, payload, ActionOutcome.OK, started=started, rows=answer["count"]
    )
    return 200, answer


def append_preview(user: Any, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    started = time.monotonic()
    path = payload.get("path") if isinstance(payload.get("path"), str) else ""
    if not user.has_perm("ai_chat.write_files"):
        audit.record(
            user,
            ActionKind.APPEND,
            payload,
            ActionOutcome.FORBIDDEN,
            started=started,
            error="no permission",
            path=path,
        )
        return 403, {"error": "You do not have permission to change files."}
    try:
        result = files.preview(user, payload.get("path"), payload.get("content"))
    except files.FileRefused as exc:
        audit.record(
            user,
            ActionKind.APPEND,
            payload,
            ActionOutcome.REFUSED,
            started=started,
            error=str(exc),
            path=path,
        )
        return 400, {"error": str(exc)}
    audit.record(
        user,
        ActionKind.APPEND,
        payload,
        ActionOutcome.OK,
        started=started,
        path=path,
        file_hash=result.change.base_hash,
    )
    return 200, result.as_json()


def apply_change(
    user: Any, change: FileChange, payload: Any, started: float
) -> tuple[int, dict[str, Any]]:
    """Apply a pending change with auditing; a conflict supersedes it and answers a fresh preview."""

    def log(outcome: str, **fields: Any) -> None:
        audit.record(user, ActionKind.CONFIRM, payload, outcome, started=started, **fields)

    try:
        applied = files.apply(change)
    except files.FileRefused as exc:
        log(ActionOutcome.REFUSED, error=str(exc), path=change.path)
        return 400, {"error": str(exc)}
    except files.FileConflict as exc:
        FileChange.objects.filter(pk=change.pk, status=ChangeStatus.PENDING).update(
            status=ChangeStatus.SUPERSEDED
        )
        answer: dict[str, Any] = {"error": str(exc)}
        try:
            answer.update(files.preview(user, change.path, change.content).as_json())
        except files.FileRefused as refused:
            answer["error"] += f" {refused}"
        log(ActionOutcome.CONFLICT, error=str(exc), path=change.path)
        return 409, answer
    log(ActionOutcome.OK, path=applied.path, file_hash=applied.after_hash)
    return 200, {"ok": True, "change": applied.pk}


def _answer(status: int, data: dict[str, Any]) -> JsonResponse:
    return JsonResponse(data, status=status)


def _json_action(request: AuthenticatedHttpRequest, kind: str, handler) -> JsonResponse:  # type: ignore[no-untyped-def]
    """Read the JSON body (a bad one is refused and logged) and answer what `handler` says."""
    started = time.monotonic()
    try:
        payload = _body(request)
    except BadBody as exc:
        return _refuse(request, kind, _raw_excerpt(request), started, str(exc))
    return _answer(*handler(request.user, payload))


@require_POST
def query_view(request: AuthenticatedHttpRequest) -> HttpResponse:
    return _json_action(request, ActionKind.QUERY, run_query)


@require_POST
def append_view(request: AuthenticatedHttpRequest) -> HttpResponse:
    return _json_action(request, ActionKind.APPEND, append_preview)


@require_POST
def confirm_view(request: AuthenticatedHttpRequest) -> HttpResponse:
    started = time.monotonic()
    try:
        payload = _body(request)
    except BadBody as exc:
        return _refuse(request, ActionKind.CONFIRM, "", started, str(exc))
    logged = {"token": "…"}  # the token itself is never logged
    if not request.user.has_perm("ai_chat.write_files"):
        return _refuse(
            request,
            ActionKind.CONFIRM,
            logged,
            started,
            "You do not have permission to change files.",
            status=403,
            outcome=ActionOutcome.FORBIDDEN,
        )
    try:
        change = files.pending_by_token(request.user, payload.get("token"))
    except files.FileRefused as exc:
        return _refuse(request, ActionKind.CONFIRM, logged, started, str(exc))
    return _answer(*apply_change(request.user, change, {"change": change.pk}, started))


@require_POST
def undo_view(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    started = time.monotonic()
    payload = {"change": pk}
    if not request.user.has_perm("ai_chat.write_files"):
        return _refuse(
            request,
            ActionKind.UNDO,
            payload,
            started,
            "You do not have permission to change files.",
            status=403,
            outcome=ActionOutcome.FORBIDDEN,
        )
    try:
        change = files.undo(request.user, pk)
    except LookupError:
        return _refuse(request, ActionKind.UNDO, payload, started, "No such change.", status=404)
    except files.FileRefused as exc:
        return _refuse(request, ActionKind.UNDO, payload, started, str(exc))
    except files.FileConflict as exc:
        return _refuse(
            request,
            ActionKind.UNDO,
            payload,
            started,
            str(exc),
            status=409,
            outcome=ActionOutcome.CONFLICT,
        )
    audit.record(
        request.user,
        ActionKind.UNDO,
        payload,
        ActionOutcome.OK,
        started=started,
        path=change.path,
        file_hash=change.after_hash,
    )
    return JsonResponse({"ok": True, "change": change.pk})
