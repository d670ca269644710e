"""TimescaleDB for market_data: where the server has the extension, a hypertable with
compression and retention; where it has not, plain PostgreSQL and `prune_market_data`.

The SQL lives here, once, so that the migration, the prune command and the tests share it.
Checked by hand on TimescaleDB 2.28.3 / PostgreSQL 15 (DESIGN.md).
"""

from __future__ import annotations

TABLE = "market_data"
CHUNK_INTERVAL = "1 day"
COMPRESS_AFTER = "7 days"


def extension_available(cursor) -> bool:
    cursor.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
    return cursor.fetchone() is not None


def extension_installed(cursor) -> bool:
    cursor.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")
    return cursor.fetchone() is not None


def is_hypertable(cursor) -> bool:
    if not extension_installed(cursor):
        return False
    cursor.execute(
        "SELECT 1 FROM timescaledb_information.hypertables WHERE hypertable_name = %s", [TABLE]
    )
    return cursor.fetchone() is not None


def hypertable_sql(retention_days: int) -> list[str]:
    """Statements that turn market_data into a compressed hypertable with retention."""
    return [
        "CREATE EXTENSION IF NOT EXISTS timescaledb",
        f"SELECT create_hypertable('{TABLE}', by_range('time', INTERVAL '{CHUNK_INTERVAL}'),"
        " if_not_exists => TRUE, migrate_data => TRUE)",
        f"ALTER TABLE {TABLE} SET (timescaledb.compress,"
        " timescaledb.compress_segmentby = 'symbol, interval',"
        " timescaledb.compress_orderby = 'time DESC')",
        f"SELECT add_compression_policy('{TABLE}', INTERVAL '{COMPRESS_AFTER}',"
        " if_not_exists => TRUE)",
        *retention_policy_sql(retention_days),
    ]


def retention_policy_sql(retention_days: int) -> list[str]:
    """(Re)sets the retention policy to `retention_days`."""
    days = int(retention_days)
    return [
        f"SELECT remove_retention_policy('{TABLE}', if_exists => TRUE)",
        f"SELECT add_retention_policy('{TABLE}', INTERVAL '{days} days')",
    ]


def drop_chunks_sql(retention_days: int) -> str:
    return f"SELECT drop_chunks('{TABLE}', older_than => INTERVAL '{int(retention_days)} days')"


def undo_sql() -> list[str]:
    """Reverse of the policies (a hypertable cannot be turned back into a plain table)."""
    return [
        f"SELECT remove_retention_policy('{TABLE}', if_exists => TRUE)",
        f"SELECT remove_compression_policy('{TABLE}', if_exists => TRUE)",
    ]


def estimated_row_count(cursor) -> int:
    """Rows in market_data without a COUNT(*): TimescaleDB's estimate, else pg_class."""
    if is_hypertable(cursor):
        cursor.execute("SELECT approximate_row_count(%s)", [TABLE])
    else:
        cursor.execute(
            "SELECT GREATEST(reltuples, 0)::bigint FROM pg_class WHERE oid = %s::regclass",
            [TABLE],
        )
    row = cursor.fetchone()
    return int(row[0] or 0) if row else 0
