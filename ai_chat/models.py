"""Conversations and their messages."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

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
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["conversation", "-id"]),
            models.Index(fields=["status", "created_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.role}: {self.content[:40]}"

    def set_content(self, text: str) -> None:
        """Set the text and everything derived from it."""
        self.content = text
        self.search_text = normalize_for_search(text)
        self.content_html = render_markdown(text) if self.role == Role.ASSISTANT else ""
