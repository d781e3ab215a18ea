"""Daily usage rollups: kept in step with the records, under concurrency too; rebuilt and
checked by `manage.py rebuild_usage_rollups`; the admin's record list does not count the log."""

from __future__ import annotations

import datetime as dt
import threading
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from api_manager import rollups
from api_manager.models import (
    BudgetCounter,
    ProviderKey,
    UsageRecord,
    UsageRollup,
    UsageStatus,
    month_of,
    upsert,
)
from tests.conftest import make_key


def record(key, user, **fields) -> UsageRecord:
    values = {
        "key": key,
        "key_label": key.label if key else "",
        "user": user,
        "provider": "openai",
        "model": "gpt-4o-mini",
        "input_tokens": 10,
        "output_tokens": 20,
        "cost": Decimal("0.001"),
    }
    values.update(fields)
    return UsageRecord.objects.record(**values)


def consistent() -> list[str]:
    return rollups.differences(UsageRecord, UsageRollup, BudgetCounter)


def test_saving_a_record_adds_it_to_its_daily_rollup_and_month_counter(alice):
    key = make_key(alice)
    record(key, alice)
    record(key, alice, input_tokens=1, output_tokens=2, status=UsageStatus.ERROR)
    record(key, alice, model="gpt-4o")
    rows = {r.model: r for r in UsageRollup.objects.all()}
    assert set(rows) == {"gpt-4o-mini", "gpt-4o"}
    mini = rows["gpt-4o-mini"]
    assert (mini.input_tokens, mini.output_tokens, mini.requests, mini.errors) == (11, 22, 2, 1)
    assert mini.cost == Decimal("0.002")
    assert mini.day == timezone.localdate() and mini.key_label == key.label
    counter = BudgetCounter.objects.get(key=key)
    assert counter.month == month_of(timezone.localdate())
    assert counter.used == 11 + 22 + 30
    assert consistent() == []


def test_an_upsert_adds_to_its_row_or_inserts_it_and_keeps_the_other_fields(alice):
    key = make_key(alice)
    dims = {"key_id": key.pk, "month": month_of(timezone.localdate())}
    upsert(BudgetCounter, dims, {"used": 5})
    counter = BudgetCounter.objects.get()
    assert (counter.used, counter.reserved) == (5, 0)  # inserted, `reserved` by its default
    BudgetCounter.objects.update(reserved=7)
    upsert(BudgetCounter, dims, {"used": 3})
    upsert(BudgetCounter, dims, {"reserved": -2})
    counter.refresh_from_db()
    assert (counter.used, counter.reserved) == (8, 5)
    assert BudgetCounter.objects.count() == 1


def test_a_rollup_row_adds_exact_costs_and_takes_the_keys_newest_label(alice):
    key = make_key(alice)
    record(key, alice, cost=Decimal("0.000001"))
    record(key, alice, cost=Decimal("0.123457"))
    key.label = "renamed"
    key.save()
    record(key, alice, cost=Decimal("0.000002"), status=UsageStatus.ERROR)
    rollup = UsageRollup.objects.get()
    assert rollup.cost == Decimal("0.123460")
    assert (rollup.requests, rollup.errors, rollup.input_tokens) == (3, 1, 30)
    assert rollup.key_label == "renamed"
    assert consistent() == []


def test_a_records_rollup_is_saved_or_lost_with_it(alice):
    key = make_key(alice)
    with pytest.raises(RuntimeError):
        from django.db import transaction

        with transaction.atomic():
            record(key, alice)
            raise RuntimeError("the reply's save failed")
    assert not UsageRollup.objects.exists()
    assert not BudgetCounter.objects.filter(used__gt=0).exists()


def test_bulk_created_records_are_summed_per_rollup_row(alice, bob):
    key = make_key(alice)
    now = timezone.now()
    UsageRecord.objects.bulk_create(
        UsageRecord(
            key=key,
            key_label=key.label,
            user=alice if i % 2 else bob,
            provider="openai",
            model="m",
            input_tokens=i,
            output_tokens=1,
            created_at=now - dt.timedelta(days=i % 3),
        )
        for i in range(60)
    )
    assert UsageRollup.objects.count() <= 6
    assert consistent() == []


def test_a_large_batch_is_added_in_bulk_to_new_and_existing_rollups(alice, bob):
    key = make_key(alice)
    now = timezone.now()

    def batch(count: int) -> list[UsageRecord]:
        return [
            UsageRecord(
                key=key,
                key_label=key.label,
                user=alice if i % 2 else bob,
                provider="openai",
                model=f"m{i % 3}",
                input_tokens=i,
                output_tokens=2,
                status=UsageStatus.ERROR if i % 7 == 0 else UsageStatus.OK,
                cost=Decimal("0.000100"),
                created_at=now - dt.timedelta(days=i % 10),
            )
            for i in range(count)
        ]

    record(key, alice, model="m1")  # one row exists before the batch
    UsageRecord.objects.bulk_create(batch(300))
    # 30 (day, user, model) combinations (i % 30), plus alice's m1 row of today.
    assert UsageRollup.objects.count() == 31
    UsageRecord.objects.bulk_create(batch(120))  # their rows exist now
    assert UsageRollup.objects.count() == 31
    assert consistent() == []


def test_deleting_a_key_or_a_user_keeps_the_rollups_equal_to_the_records(alice, bob):
    alice_key, bob_key = make_key(alice), make_key(bob, label="b")
    for key, user in [(alice_key, alice), (bob_key, bob), (alice_key, bob)]:
        record(key, user)
    ProviderKey.objects.filter(pk__in=[alice_key.pk, bob_key.pk]).delete()
    bob.delete()
    assert consistent() == []
    # The deleted key's label stays on its usage (the dashboard's chart groups by it).
    assert set(UsageRollup.objects.values_list("key_label", flat=True)) == {"openai key", "b"}


@pytest.mark.django_db(transaction=True)
def test_rollups_equal_the_records_after_concurrent_saves(django_db_blocker):
    """Eight threads save records for the same rollup rows at once (on PostgreSQL, eight
    connections racing to create and increment the same rows)."""
    from django.contrib.auth.models import User

    users = [User.objects.create_user(f"u{i}") for i in range(2)]
    keys = [make_key(users[0], label=f"k{i}") for i in range(2)]
    threads, per_thread = 8, 25
    start = threading.Barrier(threads)
    failures: list[BaseException] = []

    def work(n: int) -> None:
        try:
            start.wait(timeout=30)
            for i in range(per_thread):
                record(keys[(n + i) % 2], users[i % 2], input_tokens=n + 1, output_tokens=i)
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)
        finally:
            connections.close_all()

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert not failures
    assert UsageRecord.objects.count() == threads * per_thread
    assert consistent() == []
    # Exactly one row per (day, key, user, provider, model) when key and user are set.
    assert UsageRollup.objects.count() == 4
    assert sum(UsageRollup.objects.values_list("requests", flat=True)) == threads * per_thread


def test_the_rebuild_command_checks_and_rebuilds(alice, capsys):
    key = make_key(alice)
    for _ in range(3):
        record(key, alice)
    call_command("rebuild_usage_rollups", "--check")
    assert "equal" in capsys.readouterr().out

    # Drift: a record changed behind the rollups' back, a rollup lost, a counter wrong.
    UsageRecord.objects.filter(pk=UsageRecord.objects.first().pk).update(input_tokens=500)
    BudgetCounter.objects.update(used=1)
    with pytest.raises(CommandError) as failed:
        call_command("rebuild_usage_rollups", "--check")
    assert failed.value.returncode == 1
    problems = consistent()
    assert any(p.startswith("rollup") for p in problems)
    assert any(p.startswith("counter") for p in problems)

    UsageRollup.objects.all().delete()
    call_command("rebuild_usage_rollups")
    assert "Rebuilt 1 daily rollups and 1 monthly key counters" in capsys.readouterr().out
    call_command("rebuild_usage_rollups", "--check")
    rollup = UsageRollup.objects.get()
    assert (rollup.input_tokens, rollup.requests) == (520, 3)
    assert BudgetCounter.objects.get().used == 520 + 60


def test_the_tokens_of_calls_without_a_price_are_summed_apart_and_checked(alice):
    key = make_key(alice)
    record(key, alice)  # gpt-4o-mini: priced
    record(key, alice, model="local-llama", cost=0)  # no price: decided when saved
    record(key, alice, model="local-llama", cost=0, input_tokens=1, output_tokens=1)
    UsageRecord.objects.bulk_create(
        [
            UsageRecord(key=key, user=alice, provider="openai", model="local-llama"),
            UsageRecord(key=key, user=alice, provider="openai", model="gpt-4o", output_tokens=7),
        ]
    )
    assert dict(UsageRecord.objects.values_list("model", "priced").distinct()) == {
        "gpt-4o-mini": True,
        "gpt-4o": True,
        "local-llama": False,
    }
    rows = dict(UsageRollup.objects.values_list("model", "unpriced_tokens"))
    assert rows == {"gpt-4o-mini": 0, "gpt-4o": 0, "local-llama": 32}
    assert consistent() == []

    # Drift in the unpriced tokens is found by --check and repaired by the rebuild.
    UsageRollup.objects.filter(model="local-llama").update(unpriced_tokens=0)
    assert any("local-llama" in p for p in consistent())
    with pytest.raises(CommandError):
        call_command("rebuild_usage_rollups", "--check")
    call_command("rebuild_usage_rollups")
    assert UsageRollup.objects.get(model="local-llama").unpriced_tokens == 32
    assert consistent() == []


def test_the_rebuild_keeps_reservations_in_progress(alice):
    key = make_key(alice)
    record(key, alice)
    BudgetCounter.objects.update(reserved=70, used=0)
    call_command("rebuild_usage_rollups")
    counter = BudgetCounter.objects.get()
    assert (counter.used, counter.reserved) == (30, 70)


@pytest.mark.parametrize("size", [3, 300])
def test_the_admin_usage_list_does_not_count_the_whole_log(
    admin_client, alice, django_assert_num_queries, size
):
    key = make_key(alice)
    UsageRecord.objects.bulk_create(
        UsageRecord(key=key, key_label=key.label, user=alice, provider="openai", model="m")
        for _ in range(size)
    )
    # 1 session, 2 user, 3 count capped by a LIMIT, 4 the page of records with their users
    with CaptureQueriesContext(connection) as ctx, django_assert_num_queries(4):
        response = admin_client.get("/admin/api_manager/usagerecord/")
    assert response.status_code == 200
    counts = [q["sql"] for q in ctx.captured_queries if "COUNT(" in q["sql"].upper()]
    assert len(counts) == 1 and "LIMIT" in counts[0].upper()


def migrated_back_to(migration: str):
    """Migrate api_manager back to `migration`; return its historical apps, a user and a key
    made with them."""
    from django.db.migrations.executor import MigrationExecutor

    before = [("api_manager", migration)]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    old = executor.loader.project_state(before).apps
    user = old.get_model("auth", "User").objects.create(username="old")
    key = old.get_model("api_manager", "ProviderKey").objects.create(
        owner=user, provider="openai", label="old key", secret_encrypted="x", last4="abcd"
    )
    return old, user, key


def migrate_forward() -> None:
    """Apply every migration (the ones after `migrated_back_to`'s)."""
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


@pytest.mark.django_db(transaction=True)
def test_the_migration_builds_rollups_and_counters_from_existing_records():
    old, user, key = migrated_back_to("0005_usage_rollups")
    Record = old.get_model("api_manager", "UsageRecord")
    today = timezone.localdate()
    for i in range(5):
        Record.objects.create(
            key=key,
            key_label="old key",
            user=user,
            provider="openai",
            model="m",
            input_tokens=10,
            output_tokens=i,
            status="error" if i == 0 else "ok",
            day=today,
        )
    assert not old.get_model("api_manager", "UsageRollup").objects.exists()

    migrate_forward()  # 0006 and anything after it
    assert consistent() == []
    rollup = UsageRollup.objects.get()
    assert (rollup.input_tokens, rollup.output_tokens, rollup.requests, rollup.errors) == (
        50,
        10,
        5,
        1,
    )
    assert BudgetCounter.objects.get(key_id=key.pk).used == 60


@pytest.mark.django_db(transaction=True)
def test_the_migration_marks_the_existing_usage_of_models_without_a_price():
    old, user, key = migrated_back_to("0008_usage_dimensions_base")
    Record = old.get_model("api_manager", "UsageRecord")
    Rollup = old.get_model("api_manager", "UsageRollup")
    # A transactional test before this one may have flushed 0002's default prices.
    old.get_model("api_manager", "ModelPrice").objects.get_or_create(
        model="gpt-4o-mini",
        defaults={"provider": "openai", "input_per_million": 1, "output_per_million": 1},
    )
    today = timezone.localdate()
    for model, cost in [("gpt-4o-mini-2024-07-18", "0.01"), ("local-llama", "0")]:
        dims = {"key": key, "user": user, "provider": "openai", "model": model}
        Record.objects.create(
            **dims, key_label="old key", input_tokens=10, output_tokens=5, cost=cost, day=today
        )
        Rollup.objects.create(
            **dims,
            key_label="old key",
            day=today,
            input_tokens=10,
            output_tokens=5,
            requests=1,
            cost=cost,
        )

    migrate_forward()
    assert dict(UsageRecord.objects.values_list("model", "priced")) == {
        "gpt-4o-mini-2024-07-18": True,  # priced by its prefix
        "local-llama": False,
    }
    assert dict(UsageRollup.objects.values_list("model", "unpriced_tokens")) == {
        "gpt-4o-mini-2024-07-18": 0,
        "local-llama": 15,
    }
    # The rows above were made by hand, without month counters: only the rollups are compared.
    assert [p for p in consistent() if p.startswith("rollup")] == []
