"""Rebuilding and checking the usage rollups and the budget counters from the records.

The functions take the model classes so that a data migration can pass its historical
models; `manage.py rebuild_usage_rollups` passes the real ones.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.db.models import Count, F, Max, Q, Sum

from api_manager.models import UsageStatus

DIMENSIONS = ("day", "key_id", "user_id", "provider", "model")
AMOUNTS = ("input_tokens", "output_tokens", "requests", "errors", "cost", "unpriced_tokens")

Totals = dict[tuple[Any, ...], dict[str, Any]]


def _amounts(model: Any) -> tuple[str, ...]:
    """The amounts `model` (a rollup model, maybe a migration's historical one) has."""
    names = {field.name for field in model._meta.get_fields()}
    return tuple(name for name in AMOUNTS if name in names)


def _normal(row: dict[str, Any], amounts: tuple[str, ...]) -> dict[str, Any]:
    normal = {name: int(row[name] or 0) for name in amounts if name != "cost"}
    # Sums of DecimalFields come back as float on SQLite: compare at the column's scale.
    normal["cost"] = Decimal(str(row["cost"] or 0)).quantize(Decimal("0.000001"))
    return normal


def expected(record_model: Any, amounts: tuple[str, ...] = AMOUNTS) -> Totals:
    """The records' sums per rollup row: {(day, key_id, user_id, provider, model): amounts}.

    One GROUP BY over the records: this is the scan the rollups save the pages from.
    """
    sums = {
        "input_tokens": Sum("input_tokens"),
        "output_tokens": Sum("output_tokens"),
        "requests": Count("id"),
        "errors": Count("id", filter=Q(status=UsageStatus.ERROR)),
        "cost": Sum("cost"),
        "unpriced_tokens": Sum(F("input_tokens") + F("output_tokens"), filter=Q(priced=False)),
    }
    # In its own annotate, first: after it, `input_tokens` and `output_tokens` name the sums.
    first = {name: sums[name] for name in amounts if name == "unpriced_tokens"}
    rows = (
        record_model.objects.order_by()
        .values(*DIMENSIONS)
        .annotate(**first)
        .annotate(**{name: sums[name] for name in amounts if name not in first})
        .annotate(key_label=Max("key_label"))
    )
    return {
        tuple(row[d] for d in DIMENSIONS): dict(_normal(row, amounts), key_label=row["key_label"])
        for row in rows
    }


def actual(rollup_model: Any) -> Totals:
    """The rollups' sums per row (rows whose key or user is NULL may be split in two)."""
    amounts = _amounts(rollup_model)
    rows = (
        rollup_model.objects.order_by()
        .values(*DIMENSIONS)
        .annotate(**{name: Sum(name) for name in amounts})
    )
    return {tuple(row[d] for d in DIMENSIONS): _normal(row, amounts) for row in rows}


def month_totals(totals: Totals) -> dict[tuple[int, dt.date], int]:
    """Tokens per (key id, first day of the month), from rollup-shaped totals."""
    months: dict[tuple[int, dt.date], int] = {}
    for (day, key_id, *_rest), amounts in totals.items():
        if key_id is None:
            continue
        month = (key_id, day.replace(day=1))
        months[month] = months.get(month, 0) + amounts["input_tokens"] + amounts["output_tokens"]
    return months


def differences(record_model: Any, rollup_model: Any, counter_model: Any) -> list[str]:
    """What differs between the records' sums and the rollups and counters, one line each."""
    want = expected(record_model, _amounts(rollup_model))
    have = actual(rollup_model)
    problems: list[str] = []
    for dims in sorted(set(want) | set(have), key=repr):
        w = {k: v for k, v in want.get(dims, {}).items() if k in AMOUNTS}
        h = have.get(dims, {})
        if w != h and (w or any(h.values())):
            problems.append(f"rollup {dims}: records {w or 'none'}, rollups {h or 'none'}")
    counters = {
        (c["key_id"], c["month"]): c["used"]
        for c in counter_model.objects.values("key_id", "month", "used")
    }
    months = month_totals(want)
    for month in sorted(set(months) | set(counters), key=repr):
        if months.get(month, 0) != counters.get(month, 0):
            problems.append(
                f"counter {month}: records {months.get(month, 0)}, counter {counters.get(month, 0)}"
            )
    return problems


def rebuild(record_model: Any, rollup_model: Any, counter_model: Any) -> tuple[int, int]:
    """Replace every rollup with the records' sums and set every counter's `used` to its
    month's records (reservations in progress are kept). Returns (rollups, counters).

    One transaction: on PostgreSQL the tables are locked so that no record is saved between
    the sums and the writes (a reply ending meanwhile waits, then adds to the new rows).
    """
    with transaction.atomic():
        if transaction.get_connection().vendor == "postgresql":
            with transaction.get_connection().cursor() as cursor:
                cursor.execute(
                    f"LOCK TABLE {record_model._meta.db_table}, {rollup_model._meta.db_table}, "
                    f"{counter_model._meta.db_table} IN SHARE ROW EXCLUSIVE MODE"
                )
        want = expected(record_model, _amounts(rollup_model))
        rollup_model.objects.all().delete()
        rollup_model.objects.bulk_create(
            (
                rollup_model(**dict(zip(DIMENSIONS, dims, strict=True)), **amounts)
                for dims, amounts in want.items()
            ),
            batch_size=1000,
        )
        months = month_totals(want)
        counter_model.objects.exclude(
            pk__in=[
                c.pk
                for c in counter_model.objects.only("key_id", "month")
                if (c.key_id, c.month) in months
            ]
        ).update(used=0)
        existing = {(c.key_id, c.month): c for c in counter_model.objects.all()}
        for month, used in months.items():
            counter = existing.get(month)
            if counter is None:
                counter_model.objects.create(key_id=month[0], month=month[1], used=used)
            elif counter.used != used:
                counter_model.objects.filter(pk=counter.pk).update(used=used)
    return len(want), len(months)
