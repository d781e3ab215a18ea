"""Usage aggregations: one query each, whatever the amount of data."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from django.db.models import QuerySet, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from api_manager import pricing
from api_manager.models import UsageRollup


@dataclass
class Day:
    date: dt.date
    input_tokens: int = 0
    output_tokens: int = 0
    requests: int = 0
    errors: int = 0
    cost: Decimal = Decimal("0")
    # Tokens of models without a price: their cost is unknown, not 0.
    unpriced_tokens: int = 0

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


def last_days(count: int = 30) -> list[dt.date]:
    today = timezone.localdate()
    return [today - dt.timedelta(days=offset) for offset in range(count - 1, -1, -1)]


def since(count: int) -> dt.datetime:
    first = last_days(count)[0]
    return timezone.make_aware(dt.datetime.combine(first, dt.time.min))


def daily(rollups: QuerySet[UsageRollup], days: int = 30) -> list[Day]:
    """Per day totals of `rollups` for the last `days` days, oldest first, gaps filled
    (the tokens of models without a price counted apart: `unpriced_tokens`).

    Reads the daily rollups: the cost is the number of rollup rows in the period (days ×
    users × models of the selection), not the number of calls.
    """
    rows = (
        rollups.filter(day__gte=last_days(days)[0])
        .values("day")
        .annotate(
            unpriced=pricing.unpriced_tokens(),
            input_tokens=Coalesce(Sum("input_tokens"), 0),
            output_tokens=Coalesce(Sum("output_tokens"), 0),
            requests=Coalesce(Sum("requests"), 0),
            errors=Coalesce(Sum("errors"), 0),
            cost=Coalesce(Sum("cost"), Decimal("0")),
        )
        .order_by("day")
    )
    by_day = {row["day"]: row for row in rows}
    result = []
    for date in last_days(days):
        row = by_day.get(date)
        if row:
            result.append(
                Day(
                    date,
                    row["input_tokens"],
                    row["output_tokens"],
                    row["requests"],
                    row["errors"],
                    Decimal(row["cost"]),
                    row["unpriced"],
                )
            )
        else:
            result.append(Day(date))
    return result


def totals(days: list[Day]) -> Day:
    total = Day(days[-1].date if days else timezone.localdate())
    for day in days:
        total.input_tokens += day.input_tokens
        total.output_tokens += day.output_tokens
        total.requests += day.requests
        total.errors += day.errors
        total.cost += day.cost
        total.unpriced_tokens += day.unpriced_tokens
    return total


def with_usage(days: list[Day]) -> list[Day]:
    """The days that have any usage (a table lists these, not rows of zeros)."""
    return [day for day in days if day.requests or day.tokens or day.errors]
