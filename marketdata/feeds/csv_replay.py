"""Replay a recorded day of ticks from CSV at 1x, Nx or full speed.

Format: a header line `time,symbol,price,volume` (any column order), then one print per line:
`time` ISO 8601 with an offset (2026-03-03T09:00:01.250+09:00 or ...Z), `price` a whole number
of won (Decimal text), `volume` an integer. Lines must be in time order; a line that cannot be
parsed, or goes back in time, is reported with its line number (logged on "qb.collector" and
kept in `bad_lines`) and skipped. The file is read lazily (a recorded day may be large).

Clock: the time of the first print when the replay starts, then `speed` x real time; at "max"
the clock is the time of the last print sent.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import logging
import time
from collections.abc import Iterator
from decimal import Decimal, InvalidOperation
from pathlib import Path

from marketdata.feeds.base import Feed, FeedError, parse_speed
from marketdata.types import Tick

logger = logging.getLogger("qb.collector")
COLUMNS = ("time", "symbol", "price", "volume")


class CSVReplayFeed(Feed):
    name = "csv"

    def __init__(self, path, *, speed=1.0, batch_size: int = 1000, monotonic=time.monotonic):
        self.path = Path(path)
        if not self.path.is_file():
            raise FeedError(f"CSV replay file {self.path} does not exist.")
        self.speed = parse_speed(speed)
        self.batch_size = batch_size
        self.bad_lines: list[tuple[int, str]] = []
        self._monotonic = monotonic
        self._symbols: list[str] | None = None
        self._clock: float | None = None
        self._anchor: tuple[float, float] | None = None  # (first print epoch, monotonic)

    @property
    def symbols(self) -> list[str]:
        if self._symbols is None:  # one pass over the symbol column only
            with self.path.open(newline="", encoding="utf-8") as handle:
                reader = csv.DictReader(handle)
                self._symbols = sorted({(row.get("symbol") or "").strip() for row in reader} - {""})
        return list(self._symbols)

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self._now(), dt.UTC)

    def _now(self) -> float:
        if self._anchor is not None and self.speed is not None:
            first, wall = self._anchor
            return first + (self._monotonic() - wall) * self.speed
        if self._clock is not None:
            return self._clock
        # Not started: the clock stands at the first print (the replayed day, not today).
        first = next(self.ticks(), None)
        return first.time.timestamp() if first is not None else 0.0

    def ticks(self) -> Iterator[Tick]:
        """Every good print in file order; bad lines reported and skipped."""
        with self.path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                return
            names = [name.strip().lower() for name in header]
            missing = [c for c in COLUMNS if c not in names]
            if missing:
                raise FeedError(
                    f"{self.path}: line 1 (header) lacks column(s) {', '.join(missing)}."
                )
            where = {name: names.index(name) for name in COLUMNS}
            last = None
            for row in reader:
                line = reader.line_num
                if not row or not any(cell.strip() for cell in row):
                    continue
                try:
                    tick = _parse(row, where)
                except ValueError as exc:
                    self._bad(line, str(exc))
                    continue
                if last is not None and tick.time < last:
                    self._bad(line, f"time {tick.time.isoformat()} is before the previous line's.")
                    continue
                last = tick.time
                yield tick

    def _bad(self, line: int, reason: str) -> None:
        self.bad_lines.append((line, reason))
        logger.warning(
            "%s line %d skipped: %s",
            self.path.name,
            line,
            reason,
            extra={"metadata": {"file": str(self.path), "line": line, "reason": reason}},
        )

    async def batches(self):
        batch: list[Tick] = []
        for tick in self.ticks():
            t = tick.time.timestamp()
            if self.speed is None:
                batch.append(tick)
                self._clock = t
                if len(batch) >= self.batch_size:
                    yield batch
                    batch = []
                    await asyncio.sleep(0)
                continue
            if self._anchor is None:
                self._anchor = (t, self._monotonic())
            wait = (t - self._now()) / self.speed
            if wait > 0:
                if batch:
                    yield batch
                    batch = []
                await asyncio.sleep(wait)
            batch.append(tick)
            if len(batch) >= self.batch_size:
                yield batch
                batch = []
        if batch:
            yield batch


def _parse(row: list[str], where: dict[str, int]) -> Tick:
    try:
        text = {name: row[index].strip() for name, index in where.items()}
    except IndexError:
        raise ValueError(f"expected {len(where)} columns, got {len(row)}.") from None
    try:
        moment = dt.datetime.fromisoformat(text["time"].replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"time {text['time']!r} is not ISO 8601.") from None
    if moment.utcoffset() is None:
        raise ValueError(f"time {text['time']!r} has no UTC offset.")
    if not text["symbol"]:
        raise ValueError("symbol is empty.")
    try:
        price = Decimal(text["price"])
    except InvalidOperation:
        raise ValueError(f"price {text['price']!r} is not a number.") from None
    if not price.is_finite():
        raise ValueError(f"price {text['price']!r} is not a finite number.")
    try:
        volume = int(text["volume"])
    except ValueError:
        raise ValueError(f"volume {text['volume']!r} is not an integer.") from None
    return Tick(text["symbol"], moment.astimezone(dt.UTC), price, volume)
