"""Provider keys (secrets encrypted at rest), usage records and the price table."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Case, Q, Sum, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.views.decorators.debug import sensitive_variables

from api_manager.providers import ProviderConfig
from core import crypto


class ProviderName(models.TextChoices):
    OPENAI = "openai", "OpenAI"
    ANTHROPIC = "anthropic", "Anthropic"


def month_start(now: dt.datetime | None = None) -> dt.datetime:
    """The first instant of the current month in the active time zone."""
    now = timezone.localtime(now or timezone.now())
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


class ProviderKeyQuerySet(models.QuerySet["ProviderKey"]):
    def usable_by(self, user: object) -> ProviderKeyQuerySet:
        """Keys a user may chat with: their own, and those shared with the team."""
        return self.filter(Q(owner=user) | Q(shared=True))

    def for_turn(
        self, user: object, conversation: Any | None, key_id: int | None
    ) -> ProviderKey | None:
        """The key a chat turn uses, active or not (the caller refuses a disabled one).

        - `key_id` (a key the user may use, else ProviderKey.DoesNotExist);
        - else the conversation's key, while the user may still use it;
        - else the user's newest active key, else the team's newest; None if there is none.

        Naming the conversation's own key is the same as naming none. `conversation` is anything
        with `key_id` and `key` (this app does not import the chat's models); when it carries a
        `key_usable` annotation (`Exists` of `usable_by(user)` on its key, loaded with it), no
        query is spent on that check.
        """
        keys = self.usable_by(user)
        if conversation is not None and conversation.key_id:
            if key_id in (None, conversation.key_id):
                usable = getattr(conversation, "key_usable", None)
                if usable is None:
                    usable = keys.filter(pk=conversation.key_id).exists()
                if usable:
                    return conversation.key
                key_id = None
        if key_id is not None:
            return keys.get(pk=key_id)
        return (
            keys.filter(is_active=True)
            .annotate(theirs=Case(When(owner=user, then=Value(0)), default=Value(1)))
            .order_by("theirs", "-created_at")
            .first()
        )

    def with_month_tokens(self) -> ProviderKeyQuerySet:
        """Annotate `month_tokens`: input plus output tokens used since the month began."""
        since = Q(usage__created_at__gte=month_start())
        return self.annotate(
            month_in=Coalesce(Sum("usage__input_tokens", filter=since), 0),
            month_out=Coalesce(Sum("usage__output_tokens", filter=since), 0),
        )


class ProviderKey(models.Model):
    """An API key for OpenAI or Anthropic (or a compatible endpoint).

    The secret is stored only as a Fernet token (`secret_encrypted`); `last4` is what is shown.
    """

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="provider_keys"
    )
    provider = models.CharField(_("provider"), max_length=20, choices=ProviderName.choices)
    label = models.CharField(_("label"), max_length=100)
    secret_encrypted = models.TextField(editable=False)
    last4 = models.CharField(max_length=4, editable=False)
    base_url = models.CharField(_("base URL"), max_length=500, blank=True)
    default_model = models.CharField(_("default model"), max_length=200, blank=True)
    is_active = models.BooleanField(_("active"), default=True)
    shared = models.BooleanField(_("shared with the team"), default=False)
    monthly_token_budget = models.PositiveBigIntegerField(
        _("monthly token budget"), null=True, blank=True
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True)

    objects = ProviderKeyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["owner", "is_active"])]

    def __str__(self) -> str:
        return f"{self.label} ({self.get_provider_display()} {crypto.mask(self.last4)})"

    def __repr__(self) -> str:
        return f"<ProviderKey {self.pk} {self.provider} {crypto.mask(self.last4)}>"

    # -- the secret --------------------------------------------------------------------
    @sensitive_variables("plaintext")
    def set_secret(self, plaintext: str) -> None:
        self.secret_encrypted = crypto.encrypt(plaintext)
        self.last4 = plaintext[-4:]

    def get_secret(self) -> str:
        """The plaintext key; raises crypto.DecryptionError if no configured key opens it."""
        return crypto.decrypt(self.secret_encrypted)

    @property
    def is_readable(self) -> bool:
        try:
            self.get_secret()
        except crypto.DecryptionError:
            return False
        return True

    @sensitive_variables()
    def provider_config(self) -> ProviderConfig:
        return ProviderConfig(
            provider=self.provider,
            api_key=self.get_secret(),
            base_url=self.base_url,
            timeout=settings.PROVIDER_TIMEOUT,
            max_retries=settings.PROVIDER_MAX_RETRIES,
        )

    # -- state changes -----------------------------------------------------------------
    def toggle(self) -> None:
        self.is_active = not self.is_active
        self.save(update_fields=["is_active"])

    def record_success(self) -> None:
        self.last_used_at = timezone.now()
        self.save(update_fields=["last_used_at"])

    def record_error(self, message: str) -> None:
        self.last_error_at = timezone.now()
        self.last_error = message[:300]
        self.save(update_fields=["last_error_at", "last_error"])

    # -- budget ------------------------------------------------------------------------
    def month_tokens(self) -> int:
        totals = self.usage.filter(created_at__gte=month_start()).aggregate(
            tokens=Coalesce(Sum("input_tokens"), 0) + Coalesce(Sum("output_tokens"), 0)
        )
        return int(totals["tokens"])

    def budget_exhausted(self) -> bool:
        if not self.monthly_token_budget:
            return False
        return self.month_tokens() >= self.monthly_token_budget

    @property
    def budget_used_ratio(self) -> float | None:
        """Fraction of the monthly budget used (needs the `with_month_tokens` annotation)."""
        if not self.monthly_token_budget or not hasattr(self, "month_in"):
            return None
        return (self.month_in + self.month_out) / self.monthly_token_budget


class ModelPrice(models.Model):
    """Estimated price per million tokens. `model` matches a model id exactly or as a prefix."""

    provider = models.CharField(max_length=20, choices=ProviderName.choices)
    model = models.CharField(max_length=200, unique=True)
    input_per_million = models.DecimalField(max_digits=10, decimal_places=4)
    output_per_million = models.DecimalField(max_digits=10, decimal_places=4)

    class Meta:
        ordering = ["provider", "model"]

    def __str__(self) -> str:
        return self.model

    @classmethod
    def cost_for(cls, model: str, input_tokens: int, output_tokens: int) -> Decimal:
        """Estimated cost in USD: the longest matching prefix's prices, or 0 if none match."""
        candidates = [p for p in cls.objects.all() if model.startswith(p.model)]
        if not candidates:
            return Decimal("0")
        price = max(candidates, key=lambda p: len(p.model))
        million = Decimal(1_000_000)
        return (
            price.input_per_million * input_tokens + price.output_per_million * output_tokens
        ) / million


class UsageStatus(models.TextChoices):
    OK = "ok", _("complete")
    STOPPED = "stopped", _("stopped")
    ERROR = "error", _("error")


class UsageRecordQuerySet(models.QuerySet["UsageRecord"]):
    def bulk_create(self, objs, *args, **kwargs):  # type: ignore[no-untyped-def, override]
        objs = list(objs)
        for record in objs:
            record.fill_day()
        return super().bulk_create(objs, *args, **kwargs)


class UsageRecord(models.Model):
    """One provider call. Kept when its key is deleted (key becomes null, label stays).

    `day` is the local date (TIME_ZONE) of `created_at`, stored when the record is saved, so
    that per-day charts group in SQL: SQLite has no time zones and truncated every row's date
    in Python, which made a dashboard with a busy month cost milliseconds per thousand calls.
    """

    key = models.ForeignKey(
        ProviderKey, on_delete=models.SET_NULL, null=True, blank=True, related_name="usage"
    )
    key_label = models.CharField(max_length=100, blank=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="usage",
    )
    provider = models.CharField(max_length=20, choices=ProviderName.choices)
    model = models.CharField(max_length=200, blank=True)
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    estimated = models.BooleanField(default=False)
    cost = models.DecimalField(max_digits=14, decimal_places=6, default=Decimal("0"))
    first_token_ms = models.PositiveIntegerField(null=True, blank=True)
    total_ms = models.PositiveIntegerField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=UsageStatus.choices, default=UsageStatus.OK)
    error_code = models.CharField(max_length=20, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    day = models.DateField(editable=False)

    objects = UsageRecordQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["key", "created_at"]),
            models.Index(fields=["user", "created_at"]),
            models.Index(fields=["created_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.model} {self.input_tokens}+{self.output_tokens}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.fill_day()
        super().save(*args, **kwargs)

    def fill_day(self) -> None:
        if self.day is None:
            self.day = timezone.localdate(self.created_at)

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens
