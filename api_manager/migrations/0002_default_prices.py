"""Default estimated prices (USD per million tokens); edit them in the admin."""

from decimal import Decimal

from django.db import migrations

DEFAULTS = [
    ("openai", "gpt-4o-mini", "0.15", "0.60"),
    ("openai", "gpt-4o", "2.50", "10.00"),
    ("openai", "gpt-4.1-nano", "0.10", "0.40"),
    ("openai", "gpt-4.1-mini", "0.40", "1.60"),
    ("openai", "gpt-4.1", "2.00", "8.00"),
    ("openai", "gpt-5-mini", "0.25", "2.00"),
    ("openai", "gpt-5", "1.25", "10.00"),
    ("openai", "o3", "2.00", "8.00"),
    ("openai", "o4-mini", "1.10", "4.40"),
    ("anthropic", "claude-opus-4", "15.00", "75.00"),
    ("anthropic", "claude-sonnet-4", "3.00", "15.00"),
    ("anthropic", "claude-3-7-sonnet", "3.00", "15.00"),
    ("anthropic", "claude-3-5-haiku", "0.80", "4.00"),
    ("anthropic", "claude-haiku-4", "1.00", "5.00"),
]


def add(apps, schema_editor):
    ModelPrice = apps.get_model("api_manager", "ModelPrice")
    for provider, model, inp, out in DEFAULTS:
        ModelPrice.objects.get_or_create(
            model=model,
            defaults={"provider": provider, "input_per_million": Decimal(inp), "output_per_million": Decimal(out)},
        )


def remove(apps, schema_editor):
    apps.get_model("api_manager", "ModelPrice").objects.filter(model__in=[d[1] for d in DEFAULTS]).delete()


class Migration(migrations.Migration):
    dependencies = [("api_manager", "0001_initial")]
    operations = [migrations.RunPython(add, remove)]
