"""TimescaleDB and retention for market_data: where the server has the extension, a hypertable
with compression and retention; where it has not, plain PostgreSQL and `prune_market_data`.

The SQL lives here, once, so that the migration, the prune command and the tests share it.
Checked by hand on TimescaleDB 2.28.3 / PostgreSQL 15 (DESIGN.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import connection
from django.utils import timezone

from qbsite.exceptions import InvalidInput

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


def show_chunks_sql(retention_days: int) -> str:
    return f"SELECT show_chunks('{TABLE}', older_than => INTERVAL '{int(retention_days)} days')"


def prune_sql(retention_days: int) -> list[str]:
    """On a hypertable: drop the old chunks now, and keep the policy at `retention_days`."""
    return [drop_chunks_sql(retention_days), *retention_policy_sql(retention_days)]


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


# --- Retention ----------------------------------------------------------------------------

PRUNE_BATCH_SIZE = 50_000


@dataclass(frozen=True)
class PruneResult:
    mode: str  # "timescaledb" or "plain"
    cutoff: datetime
    rows: int | None  # rows deleted (or, dry run, to delete); None where chunks were dropped
    chunks: int | None  # chunks dropped (or to drop) on TimescaleDB


def market_data_prune(
    *,
    older_than_days: int,
    batch_size: int = PRUNE_BATCH_SIZE,
    dry_run: bool = False,
    progress: Callable[[int, datetime], None] | None = None,
) -> PruneResult:
    """Remove market_data older than `older_than_days` days.

    TimescaleDB: drop_chunks, and the retention policy re-set to `older_than_days`.
    Plain PostgreSQL: DELETEs of at most about `batch_size` rows each, oldest first, each its
    own statement (autocommit), bounded by time so that every batch is an index range scan and
    no single transaction holds millions of row locks. `progress(deleted_so_far, through)` is
    called after each batch.
    """
    if not isinstance(older_than_days, int) or older_than_days < 1:
        raise InvalidInput(
            f"older_than_days must be a whole number >= 1 (got {older_than_days!r})."
        )
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInput(f"batch_size must be a whole number >= 1 (got {batch_size!r}).")
    cutoff = timezone.now() - timedelta(days=older_than_days)
    with connection.cursor() as cursor:
        if is_hypertable(cursor):
            cursor.execute(show_chunks_sql(older_than_days))
            chunks = len(cursor.fetchall())
            if not dry_run:
                for statement in prune_sql(older_than_days):
                    cursor.execute(statement)
            return PruneResult("timescaledb", cutoff, None, chunks)
        if dry_run:
            cursor.execute(f"SELECT count(*) FROM {TABLE} WHERE time < %s", [cutoff])
            return PruneResult("plain", cutoff, cursor.fetchone()[0], None)
        total = 0
        while True:
            # The time of the batch_size-th oldest old row bounds this batch; rows sharing that
            # time go with it (a batch may exceed batch_size by one timestamp's rows).
            cursor.execute(
                f"SELECT time FROM {TABLE} WHERE time < %s ORDER BY time OFFSET %s LIMIT 1",
                [cutoff, batch_size - 1],
            )
            row = cursor.fetchone()
            through = row[0] if row else cutoff
            if row:
                cursor.execute(f"DELETE FROM {TABLE} WHERE time <= %s", [through])
            else:
                cursor.execute(f"DELETE FROM {TABLE} WHERE time < %s", [cutoff])
            total += cursor.rowcount
            if progress is not None and cursor.rowcount:
                progress(total, through)
            if row is None:
                return PruneResult("plain", cutoff, total, None)
