"""Admin: the read-only security event log, and the read-only admin other logs use too."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from core.models import SecurityEvent


class ReadOnlyAdmin(admin.ModelAdmin):
    """An append-only log in the admin: every field shown, nothing added, changed or deleted."""

    def get_readonly_fields(self, request: HttpRequest, obj: object = None) -> list[str]:
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(SecurityEvent)
class SecurityEventAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "kind", "username", "actor", "address", "detail"]
    list_filter = ["kind", "created_at"]
    search_fields = ["username", "actor", "address", "detail"]
    date_hierarchy = "created_at"
