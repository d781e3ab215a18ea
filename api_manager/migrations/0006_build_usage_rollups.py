"""Build the daily usage rollups and the budget counters from the existing records."""

from django.db import migrations


def build(apps, schema_editor):
    from api_manager import rollups

    rollups.rebuild(
        apps.get_model("api_manager", "UsageRecord"),
        apps.get_model("api_manager", "UsageRollup"),
        apps.get_model("api_manager", "BudgetCounter"),
    )


def clear(apps, schema_editor):
    apps.get_model("api_manager", "UsageRollup").objects.all().delete()
    apps.get_model("api_manager", "BudgetCounter").objects.all().delete()


class Migration(migrations.Migration):
    dependencies = [("api_manager", "0005_usage_rollups")]

    operations = [migrations.RunPython(build, clear)]
