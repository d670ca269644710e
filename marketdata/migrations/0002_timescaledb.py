"""market_data becomes a TimescaleDB hypertable where the extension is available.

On plain PostgreSQL this migration does nothing but say so once; `manage.py prune_market_data`
then enforces DATA_RETENTION_DAYS.
"""

import sys

from django.conf import settings
from django.db import migrations

from marketdata import timescale


def forwards(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        if not timescale.extension_available(cursor):
            # On a line of its own: `migrate` has printed "Applying ...0002_timescaledb..." and
            # prints " OK" after.
            sys.stdout.write(
                "\nTimescaleDB is not available on this server: market_data stays a plain table;"
                " run `manage.py prune_market_data` for retention.\n"
            )
            return
        for statement in timescale.hypertable_sql(settings.DATA_RETENTION_DAYS):
            cursor.execute(statement)


def backwards(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        if timescale.is_hypertable(cursor):
            for statement in timescale.undo_sql():
                cursor.execute(statement)


class Migration(migrations.Migration):
    # create_hypertable cannot run inside the transaction that created the table in all versions;
    # keeping this separate from 0001 also lets plain servers skip it cleanly.
    atomic = False

    dependencies = [("marketdata", "0001_initial")]

    operations = [migrations.RunPython(forwards, backwards, elidable=False)]
