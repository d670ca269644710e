"""PostgreSQL itself rejects bad system_logs rows (full_clean bypassed)."""

from datetime import UTC, datetime

import pytest
from django.db import IntegrityError, connection, transaction

from ops.models import SystemLog

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 3, 3, 6, 30, tzinfo=UTC)


def test_good_rows_are_accepted():
    for level in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        SystemLog.objects.create(timestamp=NOW, level=level, component="qb.test", message="m")
    row = SystemLog.objects.create(
        timestamp=NOW, level="ERROR", component="qb.test", message="m", metadata={"a": [1, 2]}
    )
    row.refresh_from_db()
    assert row.metadata == {"a": [1, 2]}


@pytest.mark.parametrize("level", ["TRACE", "warning", ""])
def test_level_must_be_a_known_level(level):
    with pytest.raises(IntegrityError) as info, transaction.atomic():
        SystemLog.objects.create(timestamp=NOW, level=level, component="qb.test", message="m")
    assert info.value.__cause__.diag.constraint_name == "system_logs_level_valid"


def test_every_declared_constraint_is_tested_and_in_the_database():
    declared = {c.name for c in SystemLog._meta.constraints}
    assert declared == {"system_logs_level_valid"}
    with connection.cursor() as cursor:
        in_db = connection.introspection.get_constraints(cursor, SystemLog._meta.db_table)
    assert declared <= set(in_db)
