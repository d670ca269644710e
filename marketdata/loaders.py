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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

from django.core.exceptions import ValidationError
from django.db import connection, transaction

from marketdata.copy import UpsertResult, candle_problem, candles_copy_upsert
from marketdata.models import Stock
from marketdata.services import stock_upsert
from qbsite.exceptions import InvalidInput, QBError

CANDLE_COLUMNS = ("symbol", "interval", "time", "open", "high", "low", "close", "volume")
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


def _lines(handle, on_line: Callable[[int], None] | None) -> Iterator[str]:
    for line in handle:
        if on_line is not None:
            on_line(len(line))
        yield line


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


def candles_backfill_csv(
    path: Path | str,
    *,
    interval: str | None = None,
    skip_bad: bool = False,
    batch_size: int = BACKFILL_BATCH_SIZE,
    on_bytes: Callable[[int], None] | None = None,
) -> FileResult:
    """Load one candle CSV file into market_data (see the module doc). Never raises for a bad
    line: they are in the result. Raises InvalidInput for a file it cannot read at all."""
    name = str(path)
    result = FileResult(path=name)
    now = dt.datetime.now(dt.UTC)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle, transaction.atomic():
            reader = csv.reader(_lines(handle, on_bytes))
            header = _header(
                reader,
                name,
                tuple(c for c in CANDLE_COLUMNS if c != "interval" or interval is None),
                CANDLE_COLUMNS,
            )
            index = {column: header.index(column) for column in header}
            width = len(header)
            connection.ensure_connection()
            conn = connection.connection
            batch: list[tuple] = []
            for cells in reader:
                if not cells:
                    continue
                result.lines += 1
                if len(cells) != width:
                    result.bad.append(
                        BadLine(name, reader.line_num, f"{len(cells)} fields, expected {width}")
                    )
                    continue
                try:
                    row = _candle_row(cells, index, interval)
                except ValueError as exc:
                    result.bad.append(BadLine(name, reader.line_num, str(exc)))
                    continue
                problem = candle_problem(row, now=now)
                if problem:
                    result.bad.append(BadLine(name, reader.line_num, problem))
                    continue
                if result.bad and not skip_bad:
                    continue  # the file will not be loaded: just find all its bad lines
                batch.append(row)
                if len(batch) >= batch_size:
                    result.written += candles_copy_upsert(conn, batch, on_conflict="update")
                    batch = []
            if result.bad and not skip_bad:
                raise _Rollback
            if batch:
                result.written += candles_copy_upsert(conn, batch, on_conflict="update")
    except _Rollback:
        result.written = UpsertResult()
        return result
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{name}: not UTF-8 text ({exc.reason} at byte {exc.start}).") from None
    except OSError as exc:
        raise InvalidInput(f"{name}: cannot be read ({exc.strerror}).") from None
    result.loaded = True
    return result


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
