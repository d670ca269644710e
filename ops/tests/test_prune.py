"""system_logs retention: `system_logs_prune` and `manage.py prune_system_logs`."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from ops.models import SystemLog
from ops.services import system_logs_prune
from qbsite.exceptions import InvalidInput

pytestmark = pytest.mark.django_db

COMPONENT = "qb.tests.prune"


def make_logs(*ages_in_days: float) -> None:
    now = timezone.now()
    SystemLog.objects.bulk_create(
        SystemLog(
            timestamp=now - timedelta(days=age),
            level="WARNING",
            component=COMPONENT,
            message=f"{age} days old",
        )
        for age in ages_in_days
    )


def kept() -> list[str]:
    rows = SystemLog.objects.filter(component=COMPONENT).order_by("message")
    return list(rows.values_list("message", flat=True))


def test_prune_deletes_only_older_rows_in_batches():
    make_logs(31, 32, 40, 100, 365, 29, 1, 0)
    with CaptureQueriesContext(connection) as queries:
        deleted = system_logs_prune(older_than_days=30, batch_size=2)
    assert deleted == 5
    assert kept() == ["0 days old", "1 days old", "29 days old"]
    deletes = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("DELETE")]
    assert len(deletes) == 3  # 2 + 2 + 1


def test_dry_run_counts_and_deletes_nothing():
    make_logs(31, 45, 2)
    assert system_logs_prune(older_than_days=30, dry_run=True) == 2
    assert len(kept()) == 3


@pytest.mark.parametrize("days", [0, -1, "30"])
def test_prune_refuses_a_bad_age(days):
    with pytest.raises(InvalidInput, match="older_than_days"):
        system_logs_prune(older_than_days=days)


def test_command_defaults_to_system_log_retention_days(settings):
    assert settings.SYSTEM_LOG_RETENTION_DAYS == 30
    make_logs(31, 29)
    out = StringIO()
    call_command("prune_system_logs", stdout=out)
    assert out.getvalue().strip() == "Deleted 1 system_logs rows older than 30 days."
    assert kept() == ["29 days old"]

    settings.SYSTEM_LOG_RETENTION_DAYS = 10
    call_command("prune_system_logs", stdout=out)
    assert kept() == []


def test_command_dry_run_and_days():
    make_logs(8, 6)
    out = StringIO()
    call_command("prune_system_logs", "--days", "7", "--dry-run", stdout=out)
    assert out.getvalue().strip() == "Would delete 1 system_logs rows older than 7 days."
    assert len(kept()) == 2
    call_command("prune_system_logs", "--days", "7", "--batch-size", "1", stdout=StringIO())
    assert kept() == ["6 days old"]


def test_command_reports_a_bad_value():
    with pytest.raises(CommandError, match=r"older_than_days must be a whole number >= 1"):
        call_command("prune_system_logs", "--days", "0")
