"""Provider keys (secrets encrypted at rest), usage records with their daily rollups, monthly
budget counters and reservations, and the price table."""

from __future__ import annotations

import datetime as dt
import functools
import unicodedata
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import IntegrityError, connections, models, router, transaction
from django.db.models import Case, F, OuterRef, Q, Subquery, Sum, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.views.decorators.debug import sensitive_variables

from api_manager.providers import ProviderConfig, netguard
from core import crypto


class ProviderName(models.TextChoices):
    OPENAI = "openai", "OpenAI"
    ANTHROPIC = "anthropic", "Anthropic"


def month_start(now: dt.datetime | None = None) -> dt.datetime:
    """The first instant of the current month in the active time zone."""
    now = timezone.localtime(now or timezone.now())
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def month_of(day: dt.date) -> dt.date:
    """The first day of `day`'s month: how budget counters name a month."""
    return day.replace(day=1)


def validate_base_url(url: str) -> None:
    """Raise ValidationError unless `url` may be a key's base URL: an http(s) URL without
    control characters or credentials whose host resolves only to public addresses (or an
    allowed `host:port`, settings.PROVIDER_PRIVATE_HOSTS). Blocking: resolves the name.

    The same checks and messages as the panel's key form; run by `ProviderKey.clean()`, so the
    admin's key form (a ModelForm) cannot save what the panel refuses."""
    if any(unicodedata.category(ch) in {"Cc", "Cf", "Zl", "Zp"} for ch in url):
        raise ValidationError(_("Enter an http:// or https:// URL."))
    if netguard.has_credentials(url):
        raise ValidationError(netguard.CREDENTIALS_MESSAGE)
    try:
        URLValidator(schemes=["http", "https"])(url)
    except ValidationError:
        raise ValidationError(_("Enter an http:// or https:// URL.")) from None
    try:
        netguard.check_url(url)
    except netguard.UnsafeBaseURL as exc:
        raise ValidationError(exc.message) from None


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
        """Annotate `month_in` and `month_out`: tokens used since the month began.

        Summed from this month's daily rollups of each key (a few rows per key and day, found
        through the (key, day) index), not the records, nor the key's older months.
        """
        month = UsageRollup.objects.filter(key=OuterRef("pk"), day__gte=month_start().date())

        def total(field: str) -> Coalesce:
            return Coalesce(
                Subquery(month.order_by().values("key").annotate(t=Sum(field)).values("t")), 0
            )

        return self.annotate(month_in=total("input_tokens"), month_out=total("output_tokens"))


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

    def clean(self) -> None:
        # The admin's form is a ModelForm: this is where it checks the base URL.
        super().clean()
        if self.base_url:
            try:
                validate_base_url(self.base_url)
            except ValidationError as exc:
                raise ValidationError({"base_url": exc.messages}) from None

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
        """Tokens used this month: one row of the key's budget counter, never a scan."""
        counter = self.budget_months.filter(month=month_start().date()).first()
        return counter.used if counter else 0

    def budget_exhausted(self) -> bool:
        """True when this month's used and reserved tokens reach the budget (a hint only:
        api_manager.budget.reserve is what holds the budget under concurrency)."""
        if not self.monthly_token_budget:
            return False
        counter = self.budget_months.filter(month=month_start().date()).first()
        spent = counter.used + counter.reserved if counter else 0
        return spent >= self.monthly_token_budget

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
        return cls.price_for(model, input_tokens, output_tokens) or Decimal("0")

    @classmethod
    def price_for(cls, model: str, input_tokens: int, output_tokens: int) -> Decimal | None:
        """Estimated cost in USD: the longest matching prefix's prices, or None if none match
        (the model has no price: its usage is recorded as such, not as costing $0).

        One query through the unique index on `model`, for the model id's prefixes (a few
        dozen), in SQL written here: it runs at the end of every reply, and the ORM spent
        ten times the statement's own cost building it (0.18 ms against 0.02 ms per call).
        """
        prefixes = [model[:end] for end in range(1, len(model) + 1)]
        if not prefixes:
            return None
        connection = connections[router.db_for_read(cls)]
        with connection.cursor() as cursor:
            cursor.execute(_price_sql(connection.alias, len(prefixes)), prefixes)
            row = cursor.fetchone()
        if row is None:
            return None
        # Raw rows: SQLite returns the prices as floats; the fields turn them into Decimals.
        field = cls._meta.get_field("input_per_million")
        places = Decimal(1).scaleb(-field.decimal_places)
        input_price, output_price = (field.to_python(v).quantize(places) for v in row)
        return (input_price * input_tokens + output_price * output_tokens) / Decimal(1_000_000)


@functools.cache
def _price_sql(alias: str, prefixes: int) -> str:
    """The price of the longest of `prefixes` model ids that has one (ModelPrice.cost_for)."""
    quote = connections[alias].ops.quote_name
    meta = ModelPrice._meta
    model, input_price, output_price = (
        quote(meta.get_field(name).column)
        for name in ("model", "input_per_million", "output_per_million")
    )
    placeholders = ", ".join(["%s"] * prefixes)
    # Only quoted names from the model's metadata are formatted in; values are parameters.
    return (
        f"SELECT {input_price}, {output_price} FROM {quote(meta.db_table)} "  # noqa: S608
        f"WHERE {model} IN ({placeholders}) ORDER BY LENGTH({model}) DESC LIMIT 1"
    )


class UsageStatus(models.TextChoices):
    OK = "ok", _("complete")
    STOPPED = "stopped", _("stopped")
    ERROR = "error", _("error")


class UsageRecordQuerySet(models.QuerySet["UsageRecord"]):
    def record(self, **fields: Any) -> UsageRecord:
        """Save one call's usage record and add it to its daily rollup and its key's month
        counter, in one transaction (joining the caller's, if any: no savepoint, an error
        rolls the caller's transaction back with it)."""
        with transaction.atomic(savepoint=False):
            return self.create(**fields)

    def bulk_create(self, objs, *args, **kwargs):  # type: ignore[no-untyped-def, override]
        """Insert records and add them to the rollups in the same transaction (seeding,
        imports and tests go through here): one increment per rollup row, not per record."""
        objs = list(objs)
        known: dict[str, bool] = {}
        for record in objs:
            record.fill_day()
            record.fill_priced(known)
        with transaction.atomic(savepoint=False):
            created = super().bulk_create(objs, *args, **kwargs)
            add_to_rollups(objs)
        return created


def increment(queryset: models.QuerySet[Any], create: dict[str, Any], **amounts: Any) -> None:
    """Add `amounts` to the row of `queryset` (its dimensions are `create`), or create it.

    Race-safe without an upsert statement: an F() UPDATE first (the row is locked until the
    transaction ends, so concurrent increments queue instead of losing updates); on a miss,
    an INSERT in a savepoint; if a concurrent transaction inserted the same row first, the
    unique constraint refuses ours and the UPDATE, run again, finds the committed row.
    Rows whose dimensions hold NULL (a deleted key or user) are not unique in SQL, so only
    one of them is ever updated (`pk__in ... [:1]`): sums stay right even if two exist.
    """
    label = amounts.pop("key_label", None)
    changes: dict[str, Any] = {name: F(name) + value for name, value in amounts.items()}
    if label is not None:
        changes["key_label"] = label
    one = queryset.model._default_manager.filter(pk__in=queryset.values("pk")[:1])
    if one.update(**changes):
        return
    values = dict(create, **amounts)
    if label is not None:
        values["key_label"] = label
    try:
        with transaction.atomic():
            queryset.model._default_manager.create(**values)
    except IntegrityError:
        if not one.update(**changes):
            raise


@functools.cache
def _upsert_sql(
    model: type[models.Model],
    alias: str,
    dims: tuple[str, ...],
    add: tuple[str, ...],
    replace: tuple[str, ...],
    rest: tuple[str, ...],
) -> str:
    """The statement of `upsert`, built once per model, database and shape of its call."""
    quote = connections[alias].ops.quote_name
    table = quote(model._meta.db_table)

    def column(name: str) -> str:
        return quote(model._meta.get_field(name).column)

    columns = [column(name) for name in (*dims, *add, *replace, *rest)]
    changes = [f"{column(n)} = {table}.{column(n)} + EXCLUDED.{column(n)}" for n in add] + [
        f"{column(n)} = EXCLUDED.{column(n)}" for n in replace
    ]
    placeholders = ", ".join(["%s"] * len(columns))
    conflict = ", ".join(column(name) for name in dims)
    # Only quoted names from the model's metadata are formatted in; values are parameters.
    insert = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})"  # noqa: S608
    return f"{insert} ON CONFLICT ({conflict}) DO UPDATE SET {', '.join(changes)}"


def upsert(
    model: type[models.Model],
    dims: dict[str, Any],
    add: dict[str, Any],
    replace: dict[str, Any] | None = None,
) -> None:
    """Add `add` to the row of `model` whose unique constraint's fields are `dims` (all of
    them, none NULL), or insert that row: one statement, `INSERT ... ON CONFLICT (dims) DO
    UPDATE SET n = n + EXCLUDED.n` (SQLite 3.24+, PostgreSQL). `replace` values are set either
    way (a key's label); the other fields get their defaults on insert and are kept on update.

    Race-safe: on PostgreSQL a concurrent insert of the same row makes this statement wait
    for it and then update it; the row stays locked until the transaction ends. The ORM has
    no such statement (bulk_create's update_conflicts replaces, it cannot add), and its
    `increment` path costs an UPDATE with a subquery, built field by field, per call: this
    is the turn's hot path (one per reply for the daily rollup, one for the budget counter).
    """
    replace = replace or {}
    connection = connections[router.db_for_write(model)]
    rest = {
        field.attname: field.get_default()
        for field in model._meta.concrete_fields
        if not field.primary_key
        and field.attname not in dims
        and field.attname not in add
        and field.attname not in replace
    }
    sql = _upsert_sql(model, connection.alias, tuple(dims), tuple(add), tuple(replace), tuple(rest))
    params = [
        model._meta.get_field(name).get_db_prep_save(value, connection)
        for part in (dims, add, replace, rest)
        for name, value in part.items()
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


# Above this many rollup rows in one batch, `add_to_rollups` reads and writes them in bulk.
BULK_ROLLUP_ROWS = 20
ROLLUP_AMOUNTS = ["input_tokens", "output_tokens", "requests", "errors", "cost", "unpriced_tokens"]


def _add_many(rows: dict[tuple[Any, ...], dict[str, Any]]) -> None:
    """Add many rollup rows' amounts at once (a bulk import: thousands of rows per batch).

    The existing rows of the batch's days are read locked (FOR UPDATE on PostgreSQL; SQLite's
    transaction holds the write lock), changed in memory and written with one bulk UPDATE per
    thousand; the missing ones are inserted together. If a concurrent writer inserted one of
    them first, the batch falls back to one race-safe increment per row.
    """
    with transaction.atomic():
        days = {dims[0] for dims in rows}
        remaining = dict(rows)
        changed = []
        for rollup in UsageRollup.objects.select_for_update().filter(day__in=days):
            dims = (rollup.day, rollup.key_id, rollup.user_id, rollup.provider, rollup.model)
            amounts = remaining.pop(dims, None)
            if amounts is None:
                continue
            for name in ROLLUP_AMOUNTS:
                setattr(rollup, name, getattr(rollup, name) + amounts[name])
            rollup.key_label = amounts["key_label"]
            changed.append(rollup)
        UsageRollup.objects.bulk_update(changed, [*ROLLUP_AMOUNTS, "key_label"], batch_size=1000)
        names = ("day", "key_id", "user_id", "provider", "model")
        try:
            with transaction.atomic():
                UsageRollup.objects.bulk_create(
                    (
                        UsageRollup(**dict(zip(names, dims, strict=True)), **amounts)
                        for dims, amounts in remaining.items()
                    ),
                    batch_size=1000,
                )
        except IntegrityError:
            for dims, amounts in remaining.items():
                values = dict(zip(names, dims, strict=True))
                increment(UsageRollup.objects.filter(**values), values, **amounts)


def add_to_rollups(records: list[UsageRecord]) -> None:
    """Add saved `records` to their daily rollups and their keys' month counters.

    Call inside the transaction that saved them. Records are summed per rollup row first,
    so a batch costs one increment per (day, key, user, provider, model), not per record.
    """
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    months: dict[tuple[int, dt.date], int] = {}
    for record in records:
        dims = (record.day, record.key_id, record.user_id, record.provider, record.model)
        row = rows.setdefault(
            dims,
            {
                "key_label": record.key_label,
                "input_tokens": 0,
                "output_tokens": 0,
                "requests": 0,
                "errors": 0,
                "cost": Decimal("0"),
                "unpriced_tokens": 0,
            },
        )
        row["key_label"] = record.key_label
        row["input_tokens"] += record.input_tokens
        row["output_tokens"] += record.output_tokens
        row["requests"] += 1
        row["errors"] += int(record.status == UsageStatus.ERROR)
        row["cost"] += Decimal(record.cost)
        if not record.priced:
            row["unpriced_tokens"] += record.total_tokens
        if record.key_id is not None:
            month = (record.key_id, month_of(record.day))
            months[month] = months.get(month, 0) + record.total_tokens
    if len(rows) > BULK_ROLLUP_ROWS:
        _add_many(rows)
    else:
        for (day, key_id, user_id, provider, model), amounts in rows.items():
            dims = {
                "day": day,
                "key_id": key_id,
                "user_id": user_id,
                "provider": provider,
                "model": model,
            }
            if key_id is None or user_id is None:
                # NULL never conflicts in SQL: such rows (a deleted key or user) take the slow
                # path, which updates one of them.
                increment(UsageRollup.objects.filter(**dims), dims, **amounts)
                continue
            label = {"key_label": amounts.pop("key_label")}
            upsert(UsageRollup, dims, amounts, label)
    for (key_id, month), tokens in months.items():
        upsert(BudgetCounter, {"key_id": key_id, "month": month}, {"used": tokens})


class UsageDimensions(models.Model):
    """What a usage record and a daily rollup are counted by: the key (null once deleted; its
    label stays), the user (null once deleted), the provider and the model. The reverse
    accessors are Django's defaults (`key.usagerecord_set`, `user.usagerollup_set`, ...)."""

    key = models.ForeignKey(ProviderKey, on_delete=models.SET_NULL, null=True, blank=True)
    key_label = models.CharField(max_length=100, blank=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
    )
    provider = models.CharField(max_length=20, choices=ProviderName.choices)
    model = models.CharField(max_length=200, blank=True)

    class Meta:
        abstract = True


class UsageRecord(UsageDimensions):
    """One provider call. Kept when its key is deleted (key becomes null, label stays).

    `day` is the local date (TIME_ZONE) of `created_at`, stored when the record is saved, so
    that per-day charts group in SQL: SQLite has no time zones and truncated every row's date
    in Python, which made a dashboard with a busy month cost milliseconds per thousand calls.
    """

    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    estimated = models.BooleanField(default=False)
    cost = models.DecimalField(max_digits=14, decimal_places=6, default=Decimal("0"))
    # Whether the model had a price when the call was recorded (`cost` is then its estimate;
    # otherwise the cost is unknown, shown as "no price", not as $0). Left None, saving looks
    # it up (ModelPrice.price_for); it is never None in the database after that.
    priced = models.BooleanField(null=True, editable=False)
    first_token_ms = models.PositiveIntegerField(null=True, blank=True)
    total_ms = models.PositiveIntegerField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=UsageStatus.choices, default=UsageStatus.OK)
    error_code = models.CharField(max_length=20, blank=True)
    # Files the turn sent (ai_chat attachments, history included): their tokens are in
    # input_tokens as the provider reported them.
    attachments = models.PositiveSmallIntegerField(default=0)
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
        """Save; a new record is added to the rollups in the same transaction, so that the
        rollups equal the records' sums whichever way a record is created."""
        self.fill_day()
        self.fill_priced({})
        if not self._state.adding:
            super().save(*args, **kwargs)
            return
        with transaction.atomic(savepoint=False):
            super().save(*args, **kwargs)
            add_to_rollups([self])

    def fill_day(self) -> None:
        if self.day is None:
            self.day = timezone.localdate(self.created_at)

    def fill_priced(self, known: dict[str, bool]) -> None:
        """Decide `priced` if the caller did not (a reply's turn did: it looked the price up);
        `known` caches the answer per model id across a batch."""
        if self.priced is None:
            if self.model not in known:
                known[self.model] = ModelPrice.price_for(self.model, 0, 0) is not None
            self.priced = known[self.model]

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class UsageRollupQuerySet(models.QuerySet["UsageRollup"]):
    def since(self, day: dt.date) -> UsageRollupQuerySet:
        return self.filter(day__gte=day)


class UsageRollup(UsageDimensions):
    """Daily usage per (day, key, user, provider, model): what the pages read.

    Kept in step with UsageRecord by `add_to_rollups`, in the transaction that saves a
    record; `manage.py rebuild_usage_rollups` rebuilds them and `--check` compares them with
    the records' sums. Pages cost the number of rollup rows in their period (days × keys ×
    users × models), whatever the number of calls.
    """

    day = models.DateField()
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    requests = models.PositiveBigIntegerField(default=0)
    errors = models.PositiveBigIntegerField(default=0)
    cost = models.DecimalField(max_digits=18, decimal_places=6, default=Decimal("0"))
    # The tokens of calls whose model had no price (UsageRecord.priced): their cost is unknown.
    unpriced_tokens = models.PositiveBigIntegerField(default=0)

    objects = UsageRollupQuerySet.as_manager()

    class Meta:
        ordering = ["-day"]
        constraints = [
            models.UniqueConstraint(
                fields=["day", "key", "user", "provider", "model"], name="usage_rollup_unique"
            )
        ]
        indexes = [
            models.Index(fields=["key", "day"]),
            models.Index(fields=["user", "day"]),
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.key_label} {self.model}"


class BudgetCounter(models.Model):
    """A key's tokens in one month: `used` (settled, equal to its records' sums) and
    `reserved` (held by replies in progress). api_manager.budget changes `reserved` under a
    row lock so that used + reserved never exceeds the key's budget."""

    key = models.ForeignKey(ProviderKey, on_delete=models.CASCADE, related_name="budget_months")
    month = models.DateField()
    used = models.PositiveBigIntegerField(default=0)
    reserved = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["key", "month"], name="budget_counter_unique")
        ]

    def __str__(self) -> str:
        return f"{self.key_id} {self.month:%Y-%m}: {self.used} + {self.reserved}"


class BudgetReservationManager(models.Manager["BudgetReservation"]):
    def take(self, pk: int) -> bool:
        """Delete reservation `pk`; True if this call deleted it (not settled or released
        before). On PostgreSQL a concurrent delete's lock is waited for, so of two callers
        exactly one gets True. One DELETE in SQL written here: nothing points at a
        reservation, so the ORM's collector would only add its cost (0.13 ms a call)."""
        connection = connections[router.db_for_write(self.model)]
        quote = connection.ops.quote_name
        table, column = quote(self.model._meta.db_table), quote(self.model._meta.pk.column)
        with connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM {table} WHERE {column} = %s", [pk])  # noqa: S608
            return cursor.rowcount == 1


class BudgetReservation(models.Model):
    """Tokens a reply in progress holds against its key's month; deleted when it settles.

    A reservation left by a crashed worker is released by `close_stale_streams`.
    """

    key = models.ForeignKey(ProviderKey, on_delete=models.CASCADE, related_name="+")
    month = models.DateField()
    tokens = models.PositiveBigIntegerField()
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    objects = BudgetReservationManager()

    def __str__(self) -> str:
        return f"{self.key_id} {self.month:%Y-%m}: {self.tokens}"
