"""The usage page and the query budgets of the key pages at small and large data."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.utils import timezone

from api_manager.models import ModelPrice, UsageRecord, UsageStatus
from tests.conftest import make_key


def add_usage(key, user, count: int) -> None:
    now = timezone.now()
    UsageRecord.objects.bulk_create(
        UsageRecord(
            key=key,
            key_label=key.label,
            user=user,
            provider=key.provider,
            model="gpt-4o-mini",
            input_tokens=10,
            output_tokens=20,
            cost=Decimal("0.001"),
            status=UsageStatus.ERROR if i % 10 == 0 else UsageStatus.OK,
            created_at=now - dt.timedelta(hours=i % 72),
        )
        for i in range(count)
    )


def test_the_usage_page_shows_days_tokens_errors_cost_and_a_chart(alice_client, alice):
    key = make_key(alice, label="Used key")
    add_usage(key, alice, 30)
    html = alice_client.get(f"/api-manager/keys/{key.id}/usage/").content.decode()
    assert "Used key" in html
    assert "<svg" in html and "<rect" in html
    assert "300" in html  # 30 × 10 input tokens
    assert "600" in html  # 30 × 20 output tokens
    assert "$0.0300" in html


def test_the_usage_page_of_a_key_without_usage_says_so(alice_client, alice):
    key = make_key(alice)
    html = alice_client.get(f"/api-manager/keys/{key.id}/usage/").content.decode()
    assert "No usage in this period yet" in html


def test_prices_give_an_estimated_cost_by_longest_prefix(db):
    # gpt-4o-mini must not be priced as gpt-4o.
    assert ModelPrice.cost_for("gpt-4o-mini-2024-07-18", 1_000_000, 0) == Decimal("0.15")
    assert ModelPrice.cost_for("gpt-4o", 0, 1_000_000) == Decimal("10")
    assert ModelPrice.cost_for("unknown-model", 1000, 1000) == 0


def test_a_price_is_one_query_for_the_models_prefixes_not_the_whole_table(
    db, django_assert_num_queries
):
    ModelPrice.objects.bulk_create(
        ModelPrice(provider="openai", model=f"ft:m{i}", input_per_million=1, output_per_million=1)
        for i in range(300)
    )
    ModelPrice.objects.create(
        provider="openai", model="x-mod", input_per_million="0.0375", output_per_million="1.2345"
    )
    ModelPrice.objects.create(
        provider="openai", model="x-model", input_per_million="0.05", output_per_million="2"
    )
    with django_assert_num_queries(1) as queries:
        assert ModelPrice.cost_for("x-mod-7", 1_000_000, 2_000_000) == Decimal("2.5065")
    # Found through the unique index on `model` by the prefixes of the model id.
    assert "WHERE" in queries.captured_queries[0]["sql"].upper()
    assert ModelPrice.cost_for("x-model-2025", 1_000_000, 1_000_000) == Decimal("2.05")
    with django_assert_num_queries(0):
        assert ModelPrice.cost_for("", 10, 10) == 0


def test_the_settings_page_shows_tokens_this_month(alice_client, alice):
    key = make_key(alice)
    add_usage(key, alice, 3)
    html = alice_client.get("/api-manager/settings/").content.decode()
    assert "90" in html


def test_the_settings_page_counts_only_this_months_tokens(alice_client, alice):
    from api_manager.models import ProviderKey, month_start

    key = make_key(alice)
    UsageRecord.objects.record(key=key, provider="openai", input_tokens=30, output_tokens=60)
    UsageRecord.objects.record(
        key=key,
        provider="openai",
        input_tokens=1000,
        output_tokens=1000,
        created_at=month_start() - dt.timedelta(days=2),
    )
    annotated = ProviderKey.objects.with_month_tokens().get(pk=key.pk)
    assert (annotated.month_in, annotated.month_out) == (30, 60)
    html = alice_client.get("/api-manager/settings/").content.decode()
    assert "2,090" not in html and "2090" not in html


@pytest.mark.parametrize("size", [3, 300])
def test_the_settings_page_query_count_is_constant(
    alice_client, alice, django_assert_num_queries, size
):
    keys = [make_key(alice, label=f"k{i}") for i in range(size if size < 10 else 30)]
    for key in keys[:3]:
        add_usage(key, alice, size)
    # 1 session, 2 user, 3 keys with month tokens (rollups) and owners
    with django_assert_num_queries(3):
        response = alice_client.get("/api-manager/settings/")
    assert response.status_code == 200


@pytest.mark.parametrize("size", [3, 300])
def test_the_usage_page_query_count_is_constant(
    alice_client, alice, django_assert_num_queries, size
):
    key = make_key(alice)
    add_usage(key, alice, size)
    # 1 session, 2 user, 3 key, 4 the key's daily rollups
    with django_assert_num_queries(4):
        response = alice_client.get(f"/api-manager/keys/{key.id}/usage/")
    assert response.status_code == 200
