# Separate from 0003: on PostgreSQL a table cannot be altered in the transaction that updated
# its rows while their foreign-key checks are pending.
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("api_manager", "0003_usagerecord_day")]

    operations = [
        migrations.AlterField(
            model_name="usagerecord",
            name="day",
            field=models.DateField(editable=False),
        ),
    ]
