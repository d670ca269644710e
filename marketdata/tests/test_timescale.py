"""market_data on TimescaleDB and on plain PostgreSQL, and its retention.

This machine's PostgreSQL has no timescaledb extension (and Debian has no package of it), so the
plain path runs for real, the TimescaleDB SQL is asserted as text, and the live TimescaleDB test
runs only where the extension is available.
"""

from datetime import timedelta
from decimal import Decimal
from io import StringIO

import psycopg
import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from marketdata import timescale
from marketdata.models import MarketData
from qbsite.tests.test_migrations import PLAIN_SERVER_LINE, manage, throwaway_database

pytestmark = pytest.mark.django_db


def timescaledb_available() -> bool:
    with connection.cursor() as cursor:
        return timescale.extension_available(cursor)


def test_hypertable_sql_keeps_the_key_and_sets_compression_and_retention():
    assert timescale.hypertable_sql(365) == [
        "CREATE EXTENSION IF NOT EXISTS timescaledb",
        # by_range on time only: the (symbol, interval, time) primary key stays as it is.
        "SELECT create_hypertable('market_data', by_range('time', INTERVAL '1 day'),"
        " if_not_exists => TRUE, migrate_data => TRUE)",
        "ALTER TABLE market_data SET (timescaledb.compress,"
        " timescaledb.compress_segmentby = 'symbol, interval',"
        " timescaledb.compress_orderby = 'time DESC')",
        "SELECT add_compression_policy('market_data', INTERVAL '7 days', if_not_exists => TRUE)",
        "SELECT remove_retention_policy('market_data', if_exists => TRUE)",
        "SELECT add_retention_policy('market_data', INTERVAL '365 days')",
    ]


def test_prune_sql_drops_chunks_and_resets_the_retention_policy():
    assert timescale.prune_sql(90) == [
        "SELECT drop_chunks('market_data', older_than => INTERVAL '90 days')",
        "SELECT remove_retention_policy('market_data', if_exists => TRUE)",
        "SELECT add_retention_policy('market_data', INTERVAL '90 days')",
    ]
    assert timescale.undo_sql() == [
        "SELECT remove_retention_policy('market_data', if_exists => TRUE)",
        "SELECT remove_compression_policy('market_data', if_exists => TRUE)",
    ]


def test_retention_days_cannot_inject_sql():
    with pytest.raises(ValueError):
        timescale.retention_policy_sql("1 day'); DROP TABLE market_data; --")


def test_the_migration_on_plain_postgresql_says_so_once_and_leaves_a_plain_table():
    if timescaledb_available():
        pytest.skip("this server has timescaledb: the plain path does not apply")
    with throwaway_database("timescale") as (url, conninfo):
        result = manage("migrate", "marketdata", "--no-input", database_url=url)
        assert result.returncode == 0, result.stdout + result.stderr
        said = [line for line in result.stdout.splitlines() if "TimescaleDB" in line]
        assert result.stdout.count("TimescaleDB") == 1
        assert len(said) == 1
        assert said[0].startswith(PLAIN_SERVER_LINE)
        with psycopg.connect(conninfo) as conn:
            relkind = conn.execute(
                "SELECT relkind FROM pg_class WHERE oid = 'market_data'::regclass"
            ).fetchone()[0]
            assert relkind == "r"  # an ordinary table
            assert (
                conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
                is None
            )
            key = conn.execute(
                "SELECT array_agg(a.attname ORDER BY k.n) FROM pg_constraint c"
                " CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, n)"
                " JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum"
                " WHERE c.conrelid = 'market_data'::regclass AND c.contype = 'p'"
            ).fetchone()[0]
            assert key == ["symbol", "interval", "time"]


# --- retention on plain PostgreSQL ---------------------------------------------------------


NOW = timezone.now().replace(microsecond=0)


def make_candles(*ages_in_days: float, symbol: str = "005930") -> None:
    """Daily candles this many days before NOW (one instant for the whole module, so that equal
    ages are equal times)."""
    price = Decimal("70000")
    MarketData.objects.bulk_create(
        MarketData(
            time=NOW - timedelta(days=age),
            symbol=symbol,
            interval="1d",
            open=price,
            high=price,
            low=price,
            close=price,
            volume=100,
        )
        for age in ages_in_days
    )


def ages() -> list[int]:
    now = timezone.now()
    times = MarketData.objects.order_by("time").values_list("time", flat=True)
    return sorted(round((now - t) / timedelta(days=1)) for t in times)


@pytest.fixture
def plain_server():
    if timescaledb_available():
        pytest.skip("this server has timescaledb: drop_chunks applies instead")


def test_prune_deletes_older_rows_in_batches_and_keeps_newer(plain_server):
    make_candles(400, 366, 380, 390, 500, 364, 10, 0)
    make_candles(400, 10, symbol="000660")
    out = StringIO()
    with CaptureQueriesContext(connection) as queries:
        call_command("prune_market_data", "--days", "365", "--batch-size", "2", stdout=out)
    assert ages() == [0, 10, 10, 364]
    deletes = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("DELETE")]
    # 6 old rows, oldest first, about 2 at a time: 500 + 400 + 400 (the two rows at 400 days
    # share a time and go together), then 390 + 380, then the rest (366).
    assert len(deletes) == 3
    lines = out.getvalue().rstrip().splitlines()
    progress = [line.split(" (")[0] for line in lines if line.startswith("  deleted ")]
    assert progress == [
        "  deleted 3 rows so far",
        "  deleted 5 rows so far",
        "  deleted 6 rows so far",
    ]
    assert lines[-1].startswith("Deleted 6 market_data rows older than ")


def test_prune_defaults_to_data_retention_days(plain_server, settings):
    assert settings.DATA_RETENTION_DAYS == 365
    make_candles(366, 364)
    call_command("prune_market_data", stdout=StringIO())
    assert ages() == [364]
    settings.DATA_RETENTION_DAYS = 30
    call_command("prune_market_data", stdout=StringIO())
    assert ages() == []


def test_dry_run_counts_and_deletes_nothing(plain_server):
    make_candles(40, 50, 20)
    out = StringIO()
    call_command("prune_market_data", "--days", "30", "--dry-run", stdout=out)
    assert out.getvalue().startswith("Would delete 2 market_data rows older than ")
    assert ages() == [20, 40, 50]


def test_prune_with_nothing_old_deletes_nothing(plain_server):
    make_candles(1)
    result = timescale.market_data_prune(older_than_days=30)
    assert (result.mode, result.rows) == ("plain", 0)
    assert ages() == [1]


@pytest.mark.parametrize("option", [["--days", "0"], ["--batch-size", "0"]])
def test_bad_values_are_refused(option):
    with pytest.raises(CommandError, match="must be a whole number >= 1"):
        call_command("prune_market_data", *option)


# --- a server with TimescaleDB ---------------------------------------------------------------


def test_on_timescaledb_the_table_is_a_compressed_hypertable_with_retention(settings):
    if not timescaledb_available():
        pytest.skip("no timescaledb extension on this PostgreSQL server")
    with connection.cursor() as cursor:
        assert timescale.is_hypertable(cursor)
        cursor.execute(
            "SELECT attname, segmentby_column_index, orderby_column_index, orderby_asc"
            " FROM timescaledb_information.compression_settings"
            " WHERE hypertable_name = 'market_data'"
        )
        settings_rows = cursor.fetchall()
        segment = [r[0] for r in sorted(settings_rows, key=lambda r: r[1] or 99) if r[1]]
        order = [(r[0], r[3]) for r in settings_rows if r[2]]
        assert segment == ["symbol", "interval"]
        assert order == [("time", False)]
        cursor.execute(
            "SELECT proc_name, config FROM timescaledb_information.jobs"
            " WHERE hypertable_name = 'market_data'"
        )
        jobs = dict(cursor.fetchall())
        assert jobs["policy_compression"]["compress_after"] == "7 days"
        assert jobs["policy_retention"]["drop_after"] == f"{settings.DATA_RETENTION_DAYS} days"

    make_candles(40, 1)
    out = StringIO()
    call_command("prune_market_data", "--days", "30", stdout=out)
    assert ages() == [1]
    assert "retention policy set to 30 days" in out.getvalue()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT config FROM timescaledb_information.jobs"
            " WHERE hypertable_name = 'market_data' AND proc_name = 'policy_retention'"
        )
        assert cursor.fetchone()[0]["drop_after"] == "30 days"


def test_the_test_database_market_data_matches_the_server():
    with connection.cursor() as cursor:
        assert timescale.is_hypertable(cursor) == timescale.extension_available(cursor)
        assert timescale.estimated_row_count(cursor) >= 0
