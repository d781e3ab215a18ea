"""Admin: keys show only their last four characters; usage is read-only; prices are editable."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from api_manager.models import ModelPrice, ProviderKey, UsageRecord
from core import crypto


@admin.register(ProviderKey)
class ProviderKeyAdmin(admin.ModelAdmin):
    list_display = ["label", "provider", "masked", "owner", "is_active", "shared", "last_used_at"]
    list_filter = ["provider", "is_active", "shared"]
    search_fields = ["label", "owner__username"]
    # The encrypted secret is not even shown as ciphertext; keys are added in the panel.
    fields = [
        "label",
        "provider",
        "masked",
        "owner",
        "base_url",
        "default_model",
        "is_active",
        "shared",
        "monthly_token_budget",
        "last_used_at",
        "last_error_at",
        "last_error",
    ]
    readonly_fields = ["masked", "provider", "owner", "last_used_at", "last_error_at", "last_error"]

    @admin.display(description="key")
    def masked(self, obj: ProviderKey) -> str:
        return crypto.mask(obj.last4)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(UsageRecord)
class UsageRecordAdmin(admin.ModelAdmin):
    list_display = [
        "created_at",
        "key_label",
        "user",
        "provider",
        "model",
        "input_tokens",
        "output_tokens",
        "estimated",
        "cost",
        "status",
    ]
    list_filter = ["provider", "status", "estimated"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    list_display = ["model", "provider", "input_per_million", "output_per_million"]
    list_filter = ["provider"]
    list_editable = ["input_per_million", "output_per_million"]
