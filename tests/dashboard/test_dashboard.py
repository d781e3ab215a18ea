"""The dashboard: cards, chart, recent conversations, team usage, empty state, query budget."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.utils import timezone

from ai_chat.models import Conversation, Message, Role
from api_manager.models import UsageRecord, UsageRollup
from tests.conftest import make_key


def usage(key, user, count, tokens=(10, 20), cost="0.01"):
    now = timezone.now()
    UsageRecord.objects.bulk_create(
        UsageRecord(
            key=key,
            key_label=key.label,
            user=user,
            provider=key.provider,
            model="m",
            input_tokens=tokens[0],
            output_tokens=tokens[1],
            cost=Decimal(cost),
            created_at=now - dt.timedelta(minutes=i),
        )
        for i in range(count)
    )


def test_an_empty_dashboard_says_to_add_a_key_first(alice_client):
    html = alice_client.get("/").content.decode()
    assert "Add an API key" in html
    assert "No conversations yet" in html


def test_the_dashboard_shows_counts_tokens_cost_and_recent_conversations(alice_client, alice):
    key = make_key(alice, label="Daily key")
    conversation = Conversation.objects.create(owner=alice, title="Yesterday's plan")
    Message.objects.create(conversation=conversation, role=Role.USER, content="hi")
    usage(key, alice, 3)
    html = alice_client.get("/").content.decode()
    assert "Yesterday&#x27;s plan" in html
    assert "90" in html  # 3 × 30 tokens this month for OpenAI
    assert "$0.0300" in html
    assert "<rect" in html  # the chart has bars
    assert "Daily key" in html  # the chart's legend names the key
    assert "Add an API key" not in html


def test_a_user_sees_only_their_own_usage_and_no_team_table(alice_client, alice, bob):
    bob_key = make_key(bob, label="Bob key")
    usage(bob_key, bob, 5, tokens=(1000, 1000))
    html = alice_client.get("/").content.decode()
    assert "Bob key" not in html
    assert "Team usage" not in html


def test_an_admin_sees_the_team_usage_per_user(admin_client, alice, bob):
    usage(make_key(alice), alice, 2)
    usage(make_key(bob, label="b"), bob, 1)
    html = admin_client.get("/").content.decode()
    assert "Team usage this month" in html
    assert "alice" in html and "bob" in html


def test_keys_with_recent_errors_or_near_budget_need_attention(alice_client, alice):
    failing = make_key(alice, label="Failing key")
    failing.record_error("The provider rejected the API key (401).")
    near = make_key(alice, label="Thrifty key", monthly_token_budget=100)
    usage(near, alice, 3)  # 90 of 100
    html = alice_client.get("/").content.decode()
    assert "Keys that need attention" in html
    assert "Failing key" in html
    assert "near its monthly budget" in html


@pytest.mark.parametrize("size", [3, 300])
def test_the_dashboard_query_count_is_constant(
    admin_client, admin_user, alice, django_assert_num_queries, size
):
    keys = [make_key(alice, label=f"k{i}") for i in range(3)]
    for i in range(size):
        conversation = Conversation.objects.create(owner=admin_user, title=f"c{i}")
        Message.objects.create(conversation=conversation, role=Role.USER, content="x")
    for key in keys:
        usage(key, alice, size)
    # 1 session, 2 user, 3 conversation counts, 4 message counts, 5 rollups by day/key/provider,
    # 6 keys with month tokens (rollups), 7 recent conversations, 8 team rollups per user
    with django_assert_num_queries(8):
        response = admin_client.get("/")
    assert response.status_code == 200


def test_usage_is_grouped_by_day_in_sql_not_row_by_row(alice_client, alice):
    """The day of each call is stored with it: the charts group in SQL. (Truncating
    `created_at` to a local date made SQLite call a Python function for every row of the
    month, and PostgreSQL convert every row's time zone.)"""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    key = make_key(alice)
    usage(key, alice, 20)
    with CaptureQueriesContext(connection) as ctx:
        assert alice_client.get("/").status_code == 200
        assert alice_client.get(f"/api-manager/keys/{key.pk}/usage/").status_code == 200
    sql = "\n".join(q["sql"] for q in ctx.captured_queries)
    assert '"day"' in sql
    assert "django_datetime_cast_date" not in sql
    assert "AT TIME ZONE" not in sql


def test_a_calls_day_is_its_local_date_in_time_zone(settings, alice):
    from api_manager.stats import daily

    settings.TIME_ZONE = "Asia/Tehran"  # UTC+03:30
    key = make_key(alice)
    yesterday = timezone.now().astimezone(dt.UTC) - dt.timedelta(days=1)
    late = yesterday.replace(hour=21, minute=0, second=0, microsecond=0)
    record = UsageRecord.objects.create(
        key=key, provider=key.provider, input_tokens=1, output_tokens=2, created_at=late
    )
    assert record.day == (late + dt.timedelta(hours=3, minutes=30)).date()
    assert record.day == yesterday.date() + dt.timedelta(days=1)
    days = {d.date: d.requests for d in daily(UsageRollup.objects.all(), days=3)}
    assert days[record.day] == 1
    assert sum(days.values()) == 1


@pytest.mark.parametrize("staff", [False, True])
def test_the_usage_pages_read_the_rollups_not_the_records(
    client, admin_user, alice, django_assert_num_queries, staff
):
    """Their cost must not grow with the number of calls: no query touches the records."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    user = admin_user if staff else alice
    client.force_login(user)
    key = make_key(user)
    usage(key, user, 20)
    with CaptureQueriesContext(connection) as ctx:
        for path in ["/", "/api-manager/settings/", f"/api-manager/keys/{key.pk}/usage/"]:
            assert client.get(path).status_code == 200
    sql = "\n".join(q["sql"] for q in ctx.captured_queries)
    assert "api_manager_usagerollup" in sql
    assert "api_manager_usagerecord" not in sql


def test_the_charts_bars_escape_their_labels_and_keep_svg_numbers_in_any_language():
    """The bars are built in Python (core.charts.Chart.rects), not in the template's loop: a
    key's label is escaped in the bar's title, and the coordinates are plain numbers with a
    dot in Persian too (SVG does not read Persian digits or separators), while the title's
    count is in the language's digits."""
    import re

    from django.utils import translation

    from core.charts import stacked_bars

    days = [dt.date(2026, 11, 1), dt.date(2026, 11, 2)]
    hostile = '<script>alert("x")</script> & key'
    for language in ("en", "fa"):
        with translation.override(language):
            svg = str(stacked_bars(days, [(hostile, [1234, 0]), ("b", [1, 3])]).rects())
        assert "<script>" not in svg
        assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; key" in svg
        assert svg.count("<rect ") == 3
        for number in re.findall(r'(?:x|y|width|height)="([^"]*)"', svg):
            assert re.fullmatch(r"\d+(\.\d+)?", number), number
        assert ("۱٬۲۳۴" if language == "fa" else "1,234") in svg
