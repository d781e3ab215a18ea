"""Admin: conversations for support, and the read-only audit log of actions."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from ai_chat.models import ActionLog, Conversation, FileChange
from core.admin import ReadOnlyAdmin


@admin.register(ActionLog)
class ActionLogAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "user", "kind", "outcome", "rows", "path", "duration_ms", "error"]
    list_filter = ["kind", "outcome", "created_at"]
    search_fields = ["user__username", "input", "error", "path"]
    date_hierarchy = "created_at"


@admin.register(FileChange)
class FileChangeAdmin(admin.ModelAdmin):
    list_display = ["created_at", "user", "path", "status", "applied_at"]
    list_filter = ["status"]
    exclude = ["token_hash", "backup"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ["title", "owner", "model", "updated_at"]
    search_fields = ["title", "owner__username"]
    exclude = ["title_search"]
