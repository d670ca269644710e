"""The bulk, idempotent candle upsert shared by the archiver and `manage.py backfill`.

`candles_copy_upsert(conn, rows, on_conflict=...)` (checked tuples) and
`candles_copy_upsert_lines(conn, {key: csv_line}, ...)` (checked candles already written as
COPY csv lines: the backfill's file lines, the archiver's fast path) write a batch of candles
into market_data through COPY (FORMAT csv), so that loading history or draining the candle
stream costs close to a raw COPY:

1. a probe (one statement, one index range scan per (symbol, interval) of the batch) asks
   whether any row of market_data falls in the batch's key ranges;
2. if none does (a first load, a live stream: the usual case) the rows are COPYed straight into
   market_data inside a savepoint. A concurrent writer that inserts one of the keys meanwhile
   makes the COPY fail with a unique violation: the savepoint is rolled back and step 3 runs;
3. otherwise the rows are COPYed into a temporary table and moved with
   INSERT ... SELECT ... ON CONFLICT (symbol, interval, time), DO NOTHING or DO UPDATE.

The caller owns the transaction (the archiver commits per batch before it acknowledges; the
backfill commits per file): this module never commits. Rows are checked with
`candle_problem` (or a fast path that accepts a subset of what it accepts) first, so the
table's CHECK constraints never reject a batch; a row that gets past them anyway makes the
statement fail (the savepoint is rolled back, the caller's transaction stays usable), and the
archiver isolates it by writing the batch row by row.

Psycopg connection, not the ORM: COPY needs the driver. Django's own connection works
(`connection.ensure_connection(); connection.connection`) and is what the backfill uses, so
its writes join Django's `transaction.atomic()`; the archiver uses a connection of its own
(`connect()` below) because it runs in a thread of an async engine.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from itertools import count

import psycopg
from psycopg import errors, sql

from marketdata.krx import is_on_tick
from marketdata.models import Interval, MarketData
from qbsite.db import connect  # noqa: F401 - the archiver's connection, re-exported
from qbsite.fields import SYMBOL_REGEX

TABLE = MarketData._meta.db_table
# (symbol, interval, time, open, high, low, close, volume): the order of every row tuple here.
COLUMNS = ("symbol", "interval", "time", "open", "high", "low", "close", "volume")
VALUES = ("open", "high", "low", "close", "volume")
TEMP_TABLE = "qb_candles_in"

_SYMBOL_RE = re.compile(SYMBOL_REGEX)
_INTERVALS = frozenset(Interval.values)
# numeric(14, 2): 12 digits before the point, 2 after (marketdata.models PriceField).
_PRICE_LIMIT = Decimal(10) ** 12
_CENT = Decimal("0.01")
_BIGINT_MAX = 2**63 - 1
# Clock skew allowance: a candle opening later than this after now is not a real candle.
FUTURE_SLACK = dt.timedelta(days=1)

_savepoints = count()

Row = tuple  # (symbol, interval, time, open, high, low, close, volume)


@dataclass
class UpsertResult:
    inserted: int = 0
    updated: int = 0
    # Already stored with the same values (DO UPDATE) or already stored at all (DO NOTHING).
    unchanged: int = 0
    # Rows of the batch that repeated an earlier row's key: the later one was kept.
    repeated: int = 0

    def __iadd__(self, other: UpsertResult) -> UpsertResult:
        self.inserted += other.inserted
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.repeated += other.repeated
        return self


def candle_problem(row: Row, *, check_tick: bool = False, now: dt.datetime | None = None):
    """Why this candle cannot be stored (a sentence), or None when it can.

    The same rules as market_data's CHECK constraints and column types, checked in Python so
    that one bad row is named and set aside instead of failing its whole batch. With
    check_tick, prices must also be on the KRX stock tick grid (ETFs have another grid, so
    it is off by default).
    """
    symbol, interval, time, open_, high, low, close, volume = row
    if not isinstance(symbol, str) or not _SYMBOL_RE.match(symbol):
        return f"symbol {symbol!r} is not a KRX code (six digits or capital letters)"
    if interval not in _INTERVALS:
        return f"interval {interval!r} is not one of {', '.join(Interval.values)}"
    if not isinstance(time, dt.datetime) or time.tzinfo is None or time.utcoffset() is None:
        return f"time {time!r} has no timezone"
    if time > (now or dt.datetime.now(dt.UTC)) + FUTURE_SLACK:
        return f"time {time.isoformat()} is in the future"
    for name, price in (("open", open_), ("high", high), ("low", low), ("close", close)):
        if not isinstance(price, Decimal) or not price.is_finite():
            return f"{name} {price!r} is not a number"
        if price <= 0:
            return f"{name} {price} is not > 0"
        if price >= _PRICE_LIMIT or (
            price.as_tuple().exponent < -2 and price != price.quantize(_CENT)
        ):
            return f"{name} {price} does not fit numeric(14, 2)"
        if check_tick and not is_on_tick(price):
            return f"{name} {price} is not on the KRX tick grid"
    if high < low:
        return f"high {high} < low {low}"
    if not (low <= open_ <= high and low <= close <= high):
        return f"open {open_} / close {close} outside low {low} .. high {high}"
    if not isinstance(volume, int) or isinstance(volume, bool) or not 0 <= volume <= _BIGINT_MAX:
        return f"volume {volume!r} is not a whole number >= 0"
    return None


def candles_copy_upsert(
    conn: psycopg.Connection, rows: Iterable[Row], *, on_conflict: str
) -> UpsertResult:
    """Upsert `rows` (checked tuples in COLUMNS order) into market_data; see the module doc.

    on_conflict="nothing": a key already stored keeps its row (the archiver: a re-sent closed
    candle is the same candle, and a correction loaded by the backfill must not be undone by a
    late replay). on_conflict="update": the stored row takes the new values (the backfill:
    a re-run may correct data); a row whose values are equal is not rewritten.
    Must run inside the caller's transaction; never commits.
    """
    # Last one wins within a batch: ON CONFLICT cannot touch one key twice in a statement.
    lines: dict[tuple, str] = {}
    given = 0
    for row in rows:
        lines[(row[0], row[1], row[2])] = csv_line(row)
        given += 1
    result = candles_copy_upsert_lines(conn, lines, columns=COLUMNS, on_conflict=on_conflict)
    result.repeated += given - len(lines)
    return result


def csv_line(row: Row) -> str:
    """A checked row as a COPY csv line (no cell of a checked row needs quoting)."""
    symbol, interval, time, open_, high, low, close, volume = row
    return f"{symbol},{interval},{time.isoformat()},{open_},{high},{low},{close},{volume}\n"


def candles_copy_upsert_lines(
    conn: psycopg.Connection,
    lines: dict[tuple, str] | dict[tuple, bytes],
    *,
    columns: tuple[str, ...] | list[str],
    on_conflict: str,
) -> UpsertResult:
    """The same upsert for checked candles already written as COPY csv lines (ending in a
    newline, cells in `columns` order), keyed by (symbol, interval, aware datetime): the
    backfill's fast path hands over the file's own lines without re-formatting them."""
    if on_conflict not in ("nothing", "update"):
        raise ValueError(f"on_conflict must be 'nothing' or 'update', not {on_conflict!r}")
    if not lines:
        return UpsertResult()
    values = list(lines.values())
    text = (b"" if isinstance(values[0], bytes) else "").join(values)
    with conn.cursor() as cur:
        none_stored = not _any_stored(cur, lines.keys())
    return candles_copy_upsert_text(
        conn, text, len(lines), columns=columns, on_conflict=on_conflict, try_direct=none_stored
    )


def candles_copy_upsert_text(
    conn: psycopg.Connection,
    text: str | bytes,
    size: int,
    *,
    columns: tuple[str, ...] | list[str],
    on_conflict: str,
    try_direct: bool = True,
) -> UpsertResult:
    """The upsert of `size` checked candles already joined into one COPY csv text, without
    the probe: the direct COPY is tried first (with try_direct) and a unique violation sends
    the batch through the temporary table. For a caller whose batches almost never meet a
    stored key (the archiver: only a re-delivery after a crash does), the probe's per-row
    work costs more than the rare failed COPY. Keys repeated inside `text` are counted as
    `unchanged` (the temporary table's ON CONFLICT sees them as stored)."""
    if on_conflict not in ("nothing", "update"):
        raise ValueError(f"on_conflict must be 'nothing' or 'update', not {on_conflict!r}")
    result = UpsertResult()
    if not size:
        return result
    with conn.cursor() as cur:
        if try_direct:
            savepoint = f"qb_copy_{next(_savepoints)}"
            cur.execute(f"SAVEPOINT {savepoint}")
            try:
                _copy(cur, sql.Identifier(TABLE), columns, text)
            except psycopg.Error as exc:
                # Leave the caller's transaction usable whatever happened.
                try:
                    cur.execute(f"ROLLBACK TO SAVEPOINT {savepoint}")
                except psycopg.Error:
                    raise exc from None
                if not isinstance(exc, errors.UniqueViolation):
                    raise
                # A key is stored already (written since the probe, or no probe): slow path.
            else:
                cur.execute(f"RELEASE SAVEPOINT {savepoint}")
                result.inserted = size
                return result
        savepoint = f"qb_copy_{next(_savepoints)}"
        cur.execute(f"SAVEPOINT {savepoint}")
        try:
            _upsert_through_temp(cur, columns, text, size, on_conflict, result)
        except psycopg.Error as exc:
            try:
                cur.execute(f"ROLLBACK TO SAVEPOINT {savepoint}")
            except psycopg.Error:
                raise exc from None
            raise
        cur.execute(f"RELEASE SAVEPOINT {savepoint}")
        return result


_PROBE_SQL = sql.SQL(
    "SELECT EXISTS (SELECT 1 FROM unnest(%s::text[], %s::text[], %s::timestamptz[],"
    " %s::timestamptz[]) AS k(symbol, interval, lo, hi)"
    " WHERE EXISTS (SELECT 1 FROM {table} m WHERE m.symbol = k.symbol"
    " AND m.interval = k.interval AND m.time BETWEEN k.lo AND k.hi))"
).format(table=sql.Identifier(TABLE))


def _any_stored(cur: psycopg.Cursor, keys) -> bool:
    ranges: dict[tuple[str, str], list[dt.datetime]] = {}
    for symbol, interval, time in keys:
        span = ranges.get((symbol, interval))
        if span is None:
            ranges[(symbol, interval)] = [time, time]
        elif time < span[0]:
            span[0] = time
        elif time > span[1]:
            span[1] = time
    series = list(ranges)
    cur.execute(
        _PROBE_SQL,
        [
            [k[0] for k in series],
            [k[1] for k in series],
            [ranges[k][0] for k in series],
            [ranges[k][1] for k in series],
        ],
    )
    return cur.fetchone()[0]


_CHUNK = 1 << 20


def _copy(cur: psycopg.Cursor, table: sql.Composable, columns, text: str | bytes) -> None:
    statement = sql.SQL("COPY {table} ({columns}) FROM STDIN (FORMAT csv)").format(
        table=table, columns=sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    with cur.copy(statement) as copy:
        for start in range(0, len(text), _CHUNK):
            copy.write(text[start : start + _CHUNK])


def _upsert_through_temp(
    cur: psycopg.Cursor,
    columns,
    text: str | bytes,
    size: int,
    on_conflict: str,
    result: UpsertResult,
) -> UpsertResult:
    temp = sql.Identifier(TEMP_TABLE)
    # Created once per session (and again if a rollback undid it); emptied after each use, so
    # several batches can pass through it in one transaction.
    cur.execute(
        sql.SQL(
            "CREATE TEMP TABLE IF NOT EXISTS {temp} (LIKE {table}) ON COMMIT DELETE ROWS"
        ).format(temp=temp, table=sql.Identifier(TABLE))
    )
    _copy(cur, temp, columns, text)
    all_columns = sql.SQL(", ").join(map(sql.Identifier, COLUMNS))
    if on_conflict == "nothing":
        action = sql.SQL("DO NOTHING")
    else:
        action = sql.SQL("DO UPDATE SET {sets} WHERE ({old}) IS DISTINCT FROM ({new})").format(
            sets=sql.SQL(", ").join(
                sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in VALUES
            ),
            old=sql.SQL(", ").join(
                sql.SQL("{t}.{c}").format(t=sql.Identifier(TABLE), c=sql.Identifier(c))
                for c in VALUES
            ),
            new=sql.SQL(", ").join(
                sql.SQL("EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in VALUES
            ),
        )
    # xmax = 0 on a row version this statement inserted; an updated one carries our xid.
    cur.execute(
        sql.SQL(
            "WITH written AS (INSERT INTO {table} ({columns}) SELECT {columns} FROM {temp}"
            " ON CONFLICT (symbol, interval, time) {action} RETURNING (xmax = 0) AS inserted)"
            " SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted)"
            " FROM written"
        ).format(table=sql.Identifier(TABLE), columns=all_columns, temp=temp, action=action)
    )
    inserted, updated = cur.fetchone()
    cur.execute(sql.SQL("TRUNCATE {temp}").format(temp=temp))
    result.inserted += inserted
    result.updated += updated
    result.unchanged += size - inserted - updated
    return result


# --- a connection of one's own (the archiver, the benches) ------------------------------------

# Keys of DATABASES["default"]["OPTIONS"] that are Django's, not libpq's.
