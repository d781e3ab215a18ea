"""The database cache's table, so a fresh install (and every test database) has it.

The default cache (settings.CACHES) is Django's DatabaseCache on the table
settings.CACHE_TABLE; `createcachetable` would only create it when that is the configured cache,
but the processes of one installation may be configured differently (tests use locmem while the
gunicorn processes they start use the database cache on the same database), so the table is
created here unconditionally. Any other DatabaseCache table configured is created as well.
"""

from django.conf import settings
from django.core.management import call_command
from django.core.management.commands.createcachetable import Command as CreateCacheTable
from django.db import migrations


def create(apps, schema_editor):
    alias = schema_editor.connection.alias
    # The command's own method, so the table is exactly what DatabaseCache expects.
    command = CreateCacheTable()
    command.verbosity = 0
    command.create_table(alias, settings.CACHE_TABLE, dry_run=False)
    call_command("createcachetable", database=alias, verbosity=0)


def drop(apps, schema_editor):
    schema_editor.execute(f"DROP TABLE IF EXISTS {schema_editor.quote_name(settings.CACHE_TABLE)}")


class Migration(migrations.Migration):
    dependencies = [("core", "0001_security_event")]

    operations = [migrations.RunPython(create, drop, elidable=False)]
