"""CSV loaders behind `manage.py backfill` (candles) and `manage.py load_symbols` (stocks).

Both take one file at a time, report every bad line as (file, line number, reason), and are
idempotent: running them again on the same files changes nothing, so an interrupted run is
resumed by running it again.

Atomicity (both): by default a file is loaded whole or not at all: one transaction per file,
and a file with any bad line loads nothing (all its bad lines are reported). With skip_bad the
good lines of a file are loaded (still one transaction per file) and the bad ones reported.

Candle CSV (the one format, documented in the README):
    symbol,interval,time,open,high,low,close,volume
    005930,1m,2024-03-04T09:00:00+09:00,73000,73200,72900,73100,15234
- a header line names the columns, in any order; `interval` may be left out when a default
  interval is given (`--interval`);
- time: the candle's open time, ISO 8601 with a UTC offset (`+09:00` or `Z`);
- prices: decimal KRW (at most 2 decimal places), > 0, low <= open, close <= high;
- volume: a whole number >= 0;
- a key (symbol, interval, time) already stored is replaced by the file's values (a re-run
  may correct data); within a file, a later line with the same key wins.

Symbols CSV: symbol,name,market[,sector,market_cap,shares_outstanding]; market is one of
KOSPI, KOSDAQ, KONEX, ETF; empty optional cells mean unknown.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

from django.core.exceptions import ValidationError
from django.db import connection, transaction

from marketdata.copy import (
    COLUMNS,
    FUTURE_SLACK,
    UpsertResult,
    candle_problem,
    candles_copy_upsert,
    candles_copy_upsert_lines,
    csv_line,
)
from marketdata.models import Interval, Stock
from marketdata.services import stock_upsert
from qbsite.exceptions import InvalidInput, QBError
from qbsite.fields import SYMBOL_REGEX

CANDLE_COLUMNS = COLUMNS  # the CSV columns are the table's
SYMBOL_COLUMNS = ("symbol", "name", "market", "sector", "market_cap", "shares_outstanding")
SYMBOL_REQUIRED = ("symbol", "name", "market")
BACKFILL_BATCH_SIZE = 50_000


@dataclass
class BadLine:
    path: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


@dataclass
class FileResult:
    path: str
    lines: int = 0  # data lines read (not the header, not blank lines)
    loaded: bool = False  # False: the file's transaction was rolled back
    written: UpsertResult = field(default_factory=UpsertResult)
    bad: list[BadLine] = field(default_factory=list)
    created: int = 0  # load_symbols
    updated: int = 0
    unchanged: int = 0


class _Rollback(Exception):
    pass


def csv_files(paths: list[str]) -> list[Path]:
    """Files as given, and every *.csv under a directory (sorted, so runs are repeatable)."""
    found: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*.csv") if p.is_file())
        elif path.is_file():
            found.append(path)
        else:
            raise InvalidInput(f"{name}: no such file or directory.")
    return found


def _header(reader, path: str, required: tuple[str, ...], known: tuple[str, ...]) -> list[str]:
    try:
        header = [name.strip().lower() for name in next(reader)]
    except StopIteration:
        raise InvalidInput(f"{path}: the file is empty (a header line is needed).") from None
    missing = [name for name in required if name not in header]
    unknown = [name for name in header if name not in known]
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if missing or unknown or duplicated:
        problems = []
        if missing:
            problems.append(f"missing column(s) {', '.join(missing)}")
        if unknown:
            problems.append(f"unknown column(s) {', '.join(unknown)}")
        if duplicated:
            problems.append(f"repeated column(s) {', '.join(duplicated)}")
        raise InvalidInput(
            f"{path}:1: bad header ({'; '.join(problems)}); expected {','.join(known)}."
        )
    return header


def _decimal(text: str, name: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:
        raise ValueError(f"{name} {text!r} is not a number") from None


def _candle_row(cells: list[str], index: dict[str, int], interval: str | None) -> tuple:
    """(symbol, interval, time, open, high, low, close, volume) from one line, or ValueError."""
    get = cells.__getitem__
    text = get(index["time"]).strip()
    try:
        time = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"time {text!r} is not ISO 8601") from None
    if time.tzinfo is None:
        raise ValueError(f"time {text!r} has no UTC offset (write e.g. +09:00 or Z)")
    volume_text = get(index["volume"]).strip()
    try:
        volume = int(volume_text)
    except ValueError:
        raise ValueError(f"volume {volume_text!r} is not a whole number") from None
    return (
        get(index["symbol"]).strip(),
        get(index["interval"]).strip() if "interval" in index else interval,
        time,
        _decimal(get(index["open"]).strip(), "open"),
        _decimal(get(index["high"]).strip(), "high"),
        _decimal(get(index["low"]).strip(), "low"),
        _decimal(get(index["close"]).strip(), "close"),
        volume,
    )


_SYMBOL_RE = re.compile(SYMBOL_REGEX)
_INTERVALS = frozenset(Interval.values)


_PRICE_LIMIT = 10**12  # numeric(14, 2)
_VOLUME_LIMIT = 10**18


def _fast_key_function(at: tuple, latest: dt.datetime, default_interval: str | None):
    """A function: line -> (symbol, interval, time) when the line is a plain, valid candle
    line, else None.

    The usual line (ASCII, unquoted, whole-won prices, ISO 8601 extended time with an offset)
    is checked with a few C calls and sent to COPY as it is; anything else returns None and
    takes the slow path (csv parsing and candle_problem), which also names what is wrong.
    Whatever is accepted here candle_problem accepts too, and PostgreSQL reads it the same way.
    """
    i_symbol, i_interval, i_time, i_open, i_high, i_low, i_close, i_volume, width = at
    symbols: set[str] = set()  # seen valid: one regex per symbol, not per line
    # A file of many symbols repeats each time once per symbol: parse each text once.
    times: dict[str, dt.datetime] = {}
    intervals = _INTERVALS
    parse_time = dt.datetime.fromisoformat

    def fast_key(line: str):
        if not line.isascii():
            return None
        cells = line.rstrip("\r\n").split(",")
        if len(cells) != width:
            return None
        symbol = cells[i_symbol]
        if symbol not in symbols:
            if not _SYMBOL_RE.match(symbol):
                return None
            symbols.add(symbol)
        interval = default_interval if i_interval is None else cells[i_interval]
        if interval not in intervals:
            return None
        text = cells[i_time]
        time = times.get(text)
        if time is None:
            if len(text) < 17 or text[4] != "-" or text[10] not in "T ":
                return None  # the extended format only (PostgreSQL reads it identically)
            try:
                time = parse_time(text)
            except ValueError:
                return None
            if time.tzinfo is None or time > latest:
                return None
            if len(times) >= 100_000:
                times.clear()
            times[text] = time
        o, h, lo, c, v = cells[i_open], cells[i_high], cells[i_low], cells[i_close], cells[i_volume]
        if not (o + h + lo + c + v).isdigit() or not o or not h or not lo or not c or not v:
            return None
        low, high = int(lo), int(h)
        if not (0 < low <= int(o) <= high and low <= int(c) <= high and high < _PRICE_LIMIT):
            return None
        if int(v) >= _VOLUME_LIMIT:
            return None
        return (symbol, interval, time)

    return fast_key


def candles_backfill_csv(
    path: Path | str,
    *,
    interval: str | None = None,
    skip_bad: bool = False,
    batch_size: int = BACKFILL_BATCH_SIZE,
    on_bytes: Callable[[int], None] | None = None,
) -> FileResult:
    """Load one candle CSV file into market_data (see the module doc). Never raises for a bad
    line: they are in the result. Raises InvalidInput for a file it cannot read at all.

    Checked lines go to COPY as they are (marketdata.copy.candles_copy_upsert_lines), in the
    file's own column order: Python only matches and checks them, which keeps the load close
    to a raw COPY of the file.
    """
    name = str(path)
    result = FileResult(path=name)
    latest = dt.datetime.now(dt.UTC) + FUTURE_SLACK
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle, transaction.atomic():
            first = handle.readline()
            header = _header(
                csv.reader([first]),
                name,
                tuple(c for c in CANDLE_COLUMNS if c != "interval" or interval is None),
                CANDLE_COLUMNS,
            )
            index = {column: header.index(column) for column in header}
            width = len(header)
            suffix = ""
            columns = list(header)
            if "interval" not in index:
                suffix = f",{interval}"
                columns.append("interval")
            # Positions of symbol, interval (None: the default), time, open, high, low,
            # close, volume; and the width of a line.
            at = (*(index.get(c) for c in CANDLE_COLUMNS), width)
            fast_key = _fast_key_function(at, latest, interval)
            connection.ensure_connection()
            conn = connection.connection
            batch: dict[tuple, str] = {}
            given = 0
            consumed = len(first)

            # One batch is written by a worker thread while this one reads the next: psycopg
            # lets the GIL go while it waits for the server, so reading and writing overlap
            # (two cores). The connection is used by one thread at a time: the worker, between
            # submit and result(); the transaction stays this thread's (Django's atomic).
            writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qb-backfill")
            in_flight: Future | None = None

            def write(lines: dict, repeated: int) -> UpsertResult:
                written = candles_copy_upsert_lines(
                    conn, lines, columns=columns, on_conflict="update"
                )
                written.repeated += repeated
                return written

            def settle() -> None:
                nonlocal in_flight
                if in_flight is not None:
                    done, in_flight = in_flight, None
                    result.written += done.result()

            def flush() -> None:
                nonlocal batch, given, consumed, in_flight
                settle()
                in_flight = writer.submit(write, batch, given - len(batch))
                batch, given = {}, 0
                if on_bytes is not None:
                    on_bytes(consumed)
                consumed = 0

            try:
                for number, line in enumerate(handle, start=2):
                    consumed += len(line)
                    key = fast_key(line)
                    if key is not None:
                        text = line.rstrip("\r\n") + suffix + "\n"
                    else:
                        if not line.strip():
                            continue
                        row, reason = _slow_line(line, width, index, interval)
                        if reason is None:
                            reason = candle_problem(row, now=latest - FUTURE_SLACK)
                        if reason is not None:
                            result.lines += 1
                            result.bad.append(BadLine(name, number, reason))
                            continue
                        key = (row[0], row[1], row[2])
                        text = csv_line(row)
                        if columns != list(COLUMNS):
                            # Re-order the checked cells into the file's column order.
                            cells = dict(zip(COLUMNS, text.rstrip("\n").split(","), strict=True))
                            text = ",".join(cells[c] for c in columns) + "\n"
                    result.lines += 1
                    if result.bad and not skip_bad:
                        continue  # the file will not be loaded: just find all its bad lines
                    batch[key] = text
                    given += 1
                    if given >= batch_size:
                        flush()
                if result.bad and not skip_bad:
                    raise _Rollback
                if batch:
                    flush()
                elif on_bytes is not None and consumed:
                    on_bytes(consumed)
                settle()
            finally:
                # On an error, wait for the worker before the transaction is rolled back.
                writer.shutdown(wait=True)
    except _Rollback:
        result.written = UpsertResult()
        return result
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{name}: not UTF-8 text ({exc.reason} at byte {exc.start}).") from None
    except OSError as exc:
        raise InvalidInput(f"{name}: cannot be read ({exc.strerror}).") from None
    result.loaded = True
    return result


def candles_backfill_rows(rows: list[tuple], *, source: str) -> tuple[UpsertResult, list[str]]:
    """Upsert candles from a non-CSV source (`backfill --source kis`) in one transaction, like
    the CSV path (on conflict: update). Rows are (symbol, interval, time, open, high, low,
    close, volume) tuples; a row candle_problem refuses is left out and named in the returned
    list (as "<source> <symbol> <interval> <time>: <reason>")."""
    good, bad = [], []
    for row in rows:
        reason = candle_problem(row)
        if reason is None:
            good.append(row)
        else:
            bad.append(f"{source} {row[0]} {row[1]} {row[2]}: {reason}")
    if not good:
        return UpsertResult(), bad
    with transaction.atomic():
        connection.ensure_connection()
        return candles_copy_upsert(connection.connection, good, on_conflict="update"), bad


def _slow_line(line: str, width: int, index: dict[str, int], interval: str | None):
    """(row, None) or (None, reason) for a line the fast pattern did not take."""
    cells = next(csv.reader([line]), [])
    if len(cells) != width:
        return None, f"{len(cells)} fields, expected {width}"
    try:
        return _candle_row(cells, index, interval), None
    except ValueError as exc:
        return None, str(exc)


def _optional_int(text: str, name: str) -> int | None:
    text = text.strip().replace("_", "")
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{name} {text!r} is not a whole number") from None


def stocks_load_csv(path: Path | str, *, skip_bad: bool = False) -> FileResult:
    """Create or update stocks_metadata from one symbols CSV (see the module doc), through
    services.stock_upsert; a line equal to the stored stock is left alone (unchanged)."""
    name = str(path)
    result = FileResult(path=name)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle, transaction.atomic():
            reader = csv.reader(handle)
            header = _header(reader, name, SYMBOL_REQUIRED, SYMBOL_COLUMNS)
            index = {column: header.index(column) for column in header}
            seen: dict[str, int] = {}
            for cells in reader:
                if not cells:
                    continue
                result.lines += 1
                line = reader.line_num
                if len(cells) != len(header):
                    result.bad.append(
                        BadLine(name, line, f"{len(cells)} fields, expected {len(header)}")
                    )
                    continue
                try:
                    values = {
                        "symbol": cells[index["symbol"]].strip(),
                        "name": cells[index["name"]].strip(),
                        "market": cells[index["market"]].strip().upper(),
                        "sector": cells[index["sector"]].strip() if "sector" in index else "",
                        "market_cap": _optional_int(cells[index["market_cap"]], "market_cap")
                        if "market_cap" in index
                        else None,
                        "shares_outstanding": _optional_int(
                            cells[index["shares_outstanding"]], "shares_outstanding"
                        )
                        if "shares_outstanding" in index
                        else None,
                    }
                except ValueError as exc:
                    result.bad.append(BadLine(name, line, str(exc)))
                    continue
                if values["symbol"] in seen:
                    result.bad.append(
                        BadLine(
                            name,
                            line,
                            f"symbol {values['symbol']} already on line {seen[values['symbol']]}",
                        )
                    )
                    continue
                seen[values["symbol"]] = line
                stored = Stock.objects.filter(pk=values["symbol"]).first()
                if stored is not None and all(
                    getattr(stored, key) == value for key, value in values.items()
                ):
                    result.unchanged += 1
                    continue
                try:
                    with transaction.atomic():  # a savepoint: a refused line undoes only itself
                        _, created = stock_upsert(**values)
                except ValidationError as exc:
                    result.bad.append(BadLine(name, line, _validation_text(exc)))
                    continue
                except QBError as exc:
                    result.bad.append(BadLine(name, line, exc.message))
                    continue
                if created:
                    result.created += 1
                else:
                    result.updated += 1
            if result.bad and not skip_bad:
                raise _Rollback
    except _Rollback:
        result.created = result.updated = result.unchanged = 0
        return result
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{name}: not UTF-8 text ({exc.reason} at byte {exc.start}).") from None
    except OSError as exc:
        raise InvalidInput(f"{name}: cannot be read ({exc.strerror}).") from None
    result.loaded = True
    return result


def _validation_text(exc: ValidationError) -> str:
    if hasattr(exc, "message_dict"):
        return "; ".join(
            f"{field_name}: {' '.join(messages)}"
            for field_name, messages in sorted(exc.message_dict.items())
        )
    return " ".join(exc.messages)
