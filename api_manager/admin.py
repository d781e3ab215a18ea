"""Admin: keys show only their last four characters; usage is read-only; prices are editable."""

from __future__ import annotations

from functools import cached_property

from django.contrib import admin
from django.core.paginator import Paginator
from django.http import HttpRequest

from api_manager.models import ModelPrice, ProviderKey, UsageRecord, UsageRollup
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


class CappedCountPaginator(Paginator):
    """Counts at most `CAP` rows: `SELECT COUNT(*) FROM (... LIMIT CAP)` stops early, where
    a plain COUNT(*) reads the whole log (a million rows per page view). Past the cap the
    list offers the first CAP rows' pages; the filters narrow it down."""

    CAP = 10_000

    @cached_property
    def count(self) -> int:
        return self.object_list[: self.CAP].count()


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
    # A date filter, not `date_hierarchy`: the hierarchy lists the distinct dates of the
    # whole table on every page view. No full count either (see CappedCountPaginator).
    list_filter = [("created_at", admin.DateFieldListFilter), "provider", "status", "estimated"]
    show_full_result_count = False
    paginator = CappedCountPaginator
    list_select_related = ["user"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    # The records are the log the rollups and budget counters are summed from: deleting one
    # here would make them differ (`manage.py rebuild_usage_rollups --check`).
    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(UsageRollup)
class UsageRollupAdmin(admin.ModelAdmin):
    list_display = [
        "day",
        "key_label",
        "user",
        "provider",
        "model",
        "input_tokens",
        "output_tokens",
        "requests",
        "errors",
        "cost",
    ]
    list_filter = [("day", admin.DateFieldListFilter), "provider"]
    list_select_related = ["user"]
    show_full_result_count = False
    paginator = CappedCountPaginator

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    list_display = ["model", "provider", "input_per_million", "output_per_million"]
    list_filter = ["provider"]
    list_editable = ["input_per_million", "output_per_million"]
