"""The dashboard: what the team has been doing, and what to do first."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from decimal import Decimal
from typing import Any

from django.db.models import Count, Q, Sum
from django.db.models.functions import Coalesce
from django.http import HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from ai_chat.models import Conversation, Message, Role
from api_manager import pricing, stats
from api_manager.models import ProviderKey, ProviderName, UsageRollup, month_start
from core.charts import stacked_bars
from core.http import AuthenticatedHttpRequest

NEAR_BUDGET = 0.8
RECENT_ERROR_DAYS = 7


def _usage_by_day_key_provider(rollups, first_day: dt.date) -> list[dict[str, Any]]:
    """One query over the daily rollups: tokens and cost per day, key label and provider
    since `first_day`, with the tokens of models that have no price."""
    return list(
        rollups.filter(day__gte=first_day)
        .values("day", "key_label", "provider")
        .annotate(
            tokens_in=Coalesce(Sum("input_tokens"), 0),
            tokens_out=Coalesce(Sum("output_tokens"), 0),
            cost=Coalesce(Sum("cost"), Decimal("0")),
            unpriced=pricing.unpriced_tokens(),
        )
        .order_by("key_label", "day")
    )


def needs_attention(key: ProviderKey, user: Any, since: dt.datetime) -> bool:
    """Whether the dashboard asks `user` to look at `key`: only a key they own (they can fix
    it), that failed since `since` and has not worked since its last error, or is near its
    monthly budget."""
    if key.owner_id != user.pk:
        return False
    failing = (
        key.last_error_at is not None
        and key.last_error_at >= since
        and not (key.last_used_at and key.last_used_at > key.last_error_at)
    )
    return failing or key.near_budget


@require_GET
def index(request: AuthenticatedHttpRequest) -> HttpResponse:
    # Queries: session, user, conversation counts, message counts, usage per day/key/provider,
    # keys with this month's tokens, recent conversations; for admins, usage per user.
    user = request.user
    now = timezone.localtime()
    today_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    this_month = month_start(now)

    conversations = Conversation.objects.filter(owner=user).aggregate(
        today=Count("id", filter=Q(created_at__gte=today_start)),
        month=Count("id", filter=Q(created_at__gte=this_month)),
        total=Count("id"),
    )
    # Only this month's rows are read (the index on conversation, role, created_at): the count
    # does not grow with the user's whole history.
    messages = Message.objects.filter(
        conversation__owner=user, role=Role.USER, created_at__gte=this_month
    ).aggregate(
        today=Count("id", filter=Q(created_at__gte=today_start)),
        month=Count("id", filter=Q(created_at__gte=this_month)),
    )

    # Admins see the team's usage; everyone else their own. Usage is read from the daily
    # rollups only: the page's cost does not grow with the number of calls.
    rollups = UsageRollup.objects.all() if user.is_staff else UsageRollup.objects.filter(user=user)
    days = stats.last_days(30)
    first_day = min(days[0], this_month.date())
    rows = _usage_by_day_key_provider(rollups, first_day)
    day_index = {day: i for i, day in enumerate(days)}
    per_key: dict[str, list[int]] = defaultdict(lambda: [0] * len(days))
    per_provider = {
        p: {"label": label, "tokens_in": 0, "tokens_out": 0, "cost": Decimal("0"), "unpriced": 0}
        for p, label in ProviderName.choices
    }
    for row in rows:
        if row["day"] in day_index:
            per_key[row["key_label"] or "—"][day_index[row["day"]]] += (
                row["tokens_in"] + row["tokens_out"]
            )
        if row["day"] >= this_month.date() and row["provider"] in per_provider:
            totals = per_provider[row["provider"]]
            totals["tokens_in"] += row["tokens_in"]
            totals["tokens_out"] += row["tokens_out"]
            totals["cost"] += row["cost"]
            totals["unpriced"] += row["unpriced"]
    chart = stacked_bars(days, list(per_key.items()))

    keys = list(ProviderKey.objects.usable_by(user).with_month_tokens())
    recent_error = now - dt.timedelta(days=RECENT_ERROR_DAYS)
    for k in keys:
        # Decided here once, so the template does not repeat the threshold.
        k.near_budget = k.budget_used_ratio is not None and k.budget_used_ratio >= NEAR_BUDGET
    attention = [k for k in keys if needs_attention(k, user, recent_error)]
    recent = list(Conversation.objects.filter(owner=user).only("id", "title", "updated_at")[:6])

    team: list[dict[str, Any]] = []
    if user.is_staff:
        team = list(
            UsageRollup.objects.filter(day__gte=this_month.date(), user__isnull=False)
            .values("user__username")
            .annotate(
                requests=Sum("requests"),
                tokens=Coalesce(Sum("input_tokens"), 0) + Coalesce(Sum("output_tokens"), 0),
                cost=Coalesce(Sum("cost"), Decimal("0")),
                unpriced=pricing.unpriced_tokens(),
            )
            .order_by("-tokens")[:20]
        )

    context = {
        "page": "dashboard",
        "conversations": conversations,
        "messages_count": messages,
        "providers": list(per_provider.values()),
        "month_cost": sum((p["cost"] for p in per_provider.values()), Decimal("0")),
        "keys_active": sum(1 for k in keys if k.is_active),
        "keys_total": len(keys),
        "attention": attention,
        "chart": chart,
        "recent": recent,
        "team": team,
        "team_scope": user.is_staff,
    }
    return render(request, "dashboard/index.html", context)
