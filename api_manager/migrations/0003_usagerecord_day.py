"""UsageRecord.day: the local date of created_at, stored, for per-day charts grouped in SQL."""

from django.db import migrations, models
from django.utils import timezone


def fill_days(apps, schema_editor):
    UsageRecord = apps.get_model("api_manager", "UsageRecord")
    batch = []
    for record in (
        UsageRecord.objects.filter(day__isnull=True).only("id", "created_at").iterator(2000)
    ):
        record.day = timezone.localdate(record.created_at)
        batch.append(record)
        if len(batch) == 2000:
            UsageRecord.objects.bulk_update(batch, ["day"])
            batch.clear()
    UsageRecord.objects.bulk_update(batch, ["day"])


class Migration(migrations.Migration):
    dependencies = [("api_manager", "0002_default_prices")]

    operations = [
        migrations.AddField(
            model_name="usagerecord",
            name="day",
            field=models.DateField(editable=False, null=True),
        ),
        migrations.RunPython(fill_days, migrations.RunPython.noop),
    ]
