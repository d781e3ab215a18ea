"""Conversations and their messages."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from ai_chat.actions.cards import Card, cards_of
from api_manager.models import ProviderKey, UsageRecord
from core.markdown import render_markdown
from core.text import normalize_for_search


class Conversation(models.Model):
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations"
    )
    title = models.CharField(_("title"), max_length=200, blank=True)
    title_search = models.CharField(max_length=200, blank=True, editable=False)
    key = models.ForeignKey(
        ProviderKey, on_delete=models.SET_NULL, null=True, blank=True, related_name="conversations"
    )
    model = models.CharField(max_length=200, blank=True)
    system_prompt = models.TextField(_("system prompt"), blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-updated_at", "-id"]
        indexes = [models.Index(fields=["owner", "-updated_at"])]

    def __str__(self) -> str:
        return self.title or f"#{self.pk}"

    def save(self, *args: object, **kwargs: object) -> None:
        self.title_search = normalize_for_search(self.title)[:200]
        update_fields = kwargs.get("update_fields")
        if update_fields is not None and "title" in update_fields:
            kwargs["update_fields"] = {*update_fields, "title_search"}
        super().save(*args, **kwargs)  # type: ignore[arg-type]

    def rename(self, title: str) -> None:
        self.title = title
        self.save(update_fields=["title"])


class Role(models.TextChoices):
    USER = "user", _("user")
    ASSISTANT = "assistant", _("assistant")
    TOOL = "tool", _("tool result")


class Status(models.TextChoices):
    COMPLETE = "complete", _("complete")
    STREAMING = "streaming", _("streaming")
    STOPPED = "stopped", _("stopped")
    ERROR = "error", _("error")


class Message(models.Model):
    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages"
    )
    role = models.CharField(max_length=10, choices=Role.choices)
    content = models.TextField(blank=True)
    # Rendered once when the message is final, so pages never run Markdown per view.
    content_html = models.TextField(blank=True, editable=False)
    search_text = models.TextField(blank=True, editable=False)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.COMPLETE)
    error_code = models.CharField(max_length=20, blank=True)
    error_message = models.CharField(max_length=300, blank=True)
    model = models.CharField(max_length=200, blank=True)
    usage = models.ForeignKey(
        UsageRecord, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    first_token_ms = models.PositiveIntegerField(null=True, blank=True)
    total_ms = models.PositiveIntegerField(null=True, blank=True)
    # Assistant messages: the model's tool calls, each with its approval state and result.
    tool_calls = models.JSONField(default=list, blank=True)
    # Tool messages: which call this result answers.
    tool_call_id = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["conversation", "-id"]),
            models.Index(fields=["status", "created_at"]),
            # The dashboard counts a user's messages of the month: a range per conversation
            # instead of a scan of the whole history (bench/pages.py, 10,000 messages).
            models.Index(
                fields=["conversation", "role", "created_at"], name="ai_chat_msg_conv_role_created"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.role}: {self.content[:40]}"

    @property
    def cards(self) -> list[Card]:
        """The approval cards of the tool calls, typed (a malformed one reads as failed)."""
        return cards_of(self.tool_calls)

    def set_content(self, text: str) -> None:
        """Set the text and everything derived from it."""
        self.content = text
        self.search_text = normalize_for_search(text)
        self.content_html = render_markdown(text) if self.role == Role.ASSISTANT else ""


class ActionKind(models.TextChoices):
    QUERY = "query", _("query")
    APPEND = "append", _("append preview")
    CONFIRM = "confirm", _("append confirm")
    UNDO = "undo", _("undo")
    # A decision on an approval card that matched no action (unknown card, message or tool).
    DECIDE = "decide", _("card decision")


class ActionOutcome(models.TextChoices):
    OK = "ok", _("done")
    REFUSED = "refused", _("refused")
    FORBIDDEN = "forbidden", _("forbidden")
    CONFLICT = "conflict", _("conflict")
    ERROR = "error", _("error")


class ActionLog(models.Model):
    """Every action request, allowed or refused. Written once, never edited."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    kind = models.CharField(max_length=10, choices=ActionKind.choices)
    input = models.TextField(blank=True)
    outcome = models.CharField(max_length=10, choices=ActionOutcome.choices)
    error = models.TextField(blank=True)
    duration_ms = models.PositiveIntegerField(default=0)
    rows = models.PositiveIntegerField(null=True, blank=True)
    path = models.CharField(max_length=500, blank=True)
    file_hash = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [
            ("run_query", "Can run read-only ORM queries through the assistant"),
            ("write_files", "Can append to files under FILE_ACTIONS_ROOT"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.outcome}"

    def save(self, *args: object, **kwargs: object) -> None:
        if not self._state.adding:
            raise PermissionError("The audit log is append-only.")
        super().save(*args, **kwargs)  # type: ignore[arg-type]

    def delete(self, *args: object, **kwargs: object) -> tuple[int, dict[str, int]]:
        raise PermissionError("The audit log is append-only.")


class ChangeStatus(models.TextChoices):
    PENDING = "pending", _("pending")
    APPLIED = "applied", _("applied")
    UNDONE = "undone", _("undone")
    SUPERSEDED = "superseded", _("superseded")
    REJECTED = "rejected", _("rejected")


class FileChange(models.Model):
    """An append: previewed (pending), then applied once, and possibly undone."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    path = models.CharField(max_length=500)
    content = models.TextField()
    token_hash = models.CharField(max_length=64, unique=True)
    # The file as previewed: its size and the hash of those bytes (empty for a new file).
    base_size = models.BigIntegerField(default=0)
    base_hash = models.CharField(max_length=64)
    created_new = models.BooleanField(default=False)
    status = models.CharField(
        max_length=12, choices=ChangeStatus.choices, default=ChangeStatus.PENDING
    )
    expires_at = models.DateTimeField()
    applied_at = models.DateTimeField(null=True, blank=True)
    # The bytes before the append (restored by undo) and the whole file's hash after it.
    backup = models.BinaryField(null=True, blank=True, editable=False)
    backup_size = models.BigIntegerField(null=True, blank=True)
    after_hash = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.path} ({self.status})"
