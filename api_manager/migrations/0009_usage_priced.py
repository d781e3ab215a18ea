"""Record whether a call's model had a price (UsageRecord.priced) and sum the tokens of the
calls that had none in the rollups (UsageRollup.unpriced_tokens): the pages then read "no
price" from the rollups instead of matching every rollup row against the price table.

Existing records are decided by today's prices, which is what the pages showed until now:
one query per distinct model id, one UPDATE per model without a price.
"""

from django.db import migrations, models
from django.db.models import F


def decide(apps, schema_editor):
    Record = apps.get_model("api_manager", "UsageRecord")
    Rollup = apps.get_model("api_manager", "UsageRollup")
    Price = apps.get_model("api_manager", "ModelPrice")
    models_used = set(Record.objects.order_by().values_list("model", flat=True).distinct())
    models_used |= set(Rollup.objects.order_by().values_list("model", flat=True).distinct())
    for model in sorted(models_used):
        prefixes = [model[:end] for end in range(1, len(model) + 1)]
        if Price.objects.filter(model__in=prefixes).exists():
            continue
        Record.objects.filter(model=model).update(priced=False)
        Rollup.objects.filter(model=model).update(
            unpriced_tokens=F("input_tokens") + F("output_tokens")
        )


class Migration(migrations.Migration):
    dependencies = [("api_manager", "0008_usage_dimensions_base")]

    operations = [
        # Every existing record starts as priced; `decide` then marks the others.
        migrations.AddField(
            model_name="usagerecord",
            name="priced",
            field=models.BooleanField(default=True, editable=False, null=True),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="usagerollup",
            name="unpriced_tokens",
            field=models.PositiveBigIntegerField(default=0),
        ),
        migrations.RunPython(decide, migrations.RunPython.noop),
    ]
