"""Conversations and their messages."""

from __future__ import annotations

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import models, transaction
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from ai_chat.actions.cards import Card, cards_of
from api_manager.models import ProviderKey, UsageRecord
from core.markdown import render_markdown
from core.models import AppendOnlyModel
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
    # Pinned conversations head the sidebar's list.
    pinned = models.BooleanField(_("pinned"), default=False)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-updated_at", "-id"]
        indexes = [
            models.Index(fields=["owner", "-updated_at"]),
            models.Index(fields=["owner", "-pinned", "-updated_at"], name="conversation_sidebar"),
        ]

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

    def delete(self, *args: object, **kwargs: object) -> tuple[int, dict[str, int]]:
        """Delete the conversation, and its attachments' files once that has committed (a
        rolled-back delete keeps the files its rows still name). Files left behind by other
        deletions are removed by `manage.py remove_orphan_attachments`."""
        rows = Attachment.objects.filter(message__conversation=self)
        with transaction.atomic():
            paths = list(rows.values_list("file", flat=True))
            if paths:
                rows.delete()
            deleted = super().delete(*args, **kwargs)  # type: ignore[arg-type]
        if paths:
            transaction.on_commit(lambda: [default_storage.delete(p) for p in paths])
        return deleted

    def set_pinned(self, pinned: bool) -> None:
        self.pinned = pinned
        self.save(update_fields=["pinned"])


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
    # User messages: how many attachments they carry, so a turn and a page look the rows up
    # only when there are some (no query more for the common message without files).
    attachment_count = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    # Versions and branches. Messages form a tree: `parent` is the message this one follows
    # (None for a conversation's first). Versions of a turn are siblings: same parent, same
    # role; `version` is this one's number among them (1-based) and `versions` how many there
    # are (kept on every sibling, so a page shows "k / n" without counting). `selected` marks
    # the sibling chosen at its fork (kept while its branch is hidden, so switching back
    # restores the branch as it was); `active` marks the branch shown and sent to the model:
    # a message is active when it and all its ancestors are selected.
    parent = models.ForeignKey(
        "self", on_delete=models.CASCADE, null=True, blank=True, related_name="children"
    )
    version = models.PositiveIntegerField(default=1)
    versions = models.PositiveIntegerField(default=1)
    selected = models.BooleanField(default=True)
    active = models.BooleanField(default=True)
    # Set by Stop when the reply's job may run in another process; the process running it
    # polls for it (ai_chat/jobs.py).
    stop_requested = models.BooleanField(default=False)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["conversation", "-id"]),
            models.Index(fields=["status", "created_at"]),
            models.Index(fields=["conversation", "active", "-id"], name="ai_chat_msg_branch"),
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


class ActionLog(AppendOnlyModel):
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

    log_name = "audit log"

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [
            ("run_query", "Can run read-only ORM queries through the assistant"),
            ("write_files", "Can append to files under FILE_ACTIONS_ROOT"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.outcome}"


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
    # The approval card that applied it (none for the JSON endpoint): an undo updates that
    # card and tells the model, in that conversation. No database constraint and no cascade:
    # deleting messages (a regeneration, a conversation) must not cost a query per change
    # table; an undo whose reply is gone simply finds no card.
    message = models.ForeignKey(
        Message,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        null=True,
        blank=True,
        related_name="+",
    )
    call_id = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.path} ({self.status})"


class AttachmentKind(models.TextChoices):
    IMAGE = "image", _("image")
    PDF = "pdf", _("PDF")
    TEXT = "text", _("text")


class Attachment(models.Model):
    """A file sent with a user message, checked and stored by ai_chat/attachments.py.

    `file` is a random name in the default storage (under MEDIA_ROOT); `name` is the user's
    file name, only ever shown. `text` is what a model reads instead of the bytes: a text file's
    content, a PDF's extracted text (empty for an image).
    """

    # No cascade in Python and no constraint: deleting messages stays one DELETE (a cascade
    # would make Django fetch every message first). Conversation.delete removes the rows of
    # its messages; rows whose message is gone otherwise are removed, with their files, by
    # `manage.py remove_orphan_attachments`.
    message = models.ForeignKey(
        Message,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="attachments",
    )
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    file = models.FileField(max_length=200)
    name = models.CharField(max_length=255)
    kind = models.CharField(max_length=10, choices=AttachmentKind.choices)
    content_type = models.CharField(max_length=100)
    size = models.PositiveIntegerField()
    text = models.TextField(blank=True)
    # What the providers bill an attachment by, beside its text (api_manager.budget bounds a
    # turn's input with them): an image's pixel size as stored (after the re-encode), a PDF's
    # page count. Null for other kinds, and for rows from before they were recorded.
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    pages = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_image(self) -> bool:
        return self.kind == AttachmentKind.IMAGE
