"""The portfolio engine: positions marked to the latest quotes, and strategy performance after
the close.

Consumes:
- `market_data_received` (data {"symbol", "quote": {"close", ...}}; the collector sends at most
  one per symbol per MARKET_EVENT_MIN_INTERVAL_MS): for a symbol with an open position, its
  close is the position's new mark. Symbols without one cost a set lookup: `open_symbols` is
  rebuilt from `positions` at setup and every PORTFOLIO_REFRESH_SECONDS (60), and kept up to
  date by `order_executed`.
- `order_executed` (a fill): re-reads that symbol's position (one query) and adds the symbol
  to `open_symbols` or drops it.

Batching. handle() only notes the newest price per symbol and wakes the flusher (a task of
loop()); the flusher marks everything noted so far in ONE statement, `positions_mark()` (an
UPDATE .. FROM unnest(..) .. RETURNING), while handle() goes on noting the quotes that arrive
meanwhile. Under load a batch holds every symbol that ticked during the previous round trip;
when idle a quote is marked at once.

position_updated is published only for a position whose mark changed something: the UPDATE
skips rows whose current_price already equals the new price and returns only the rows it
changed. So the event rate is at most the collector's quote rate per open position (one per
250 ms by default), and a price that repeats is silent. Each event carries the quote event's
correlation_id, so a tick can be followed to its position_updated (bench/).

Strategy performance (trading.performance): once per trading day, the first time the clock is
past the day's regular close (krx.session_close, 15:30 Asia/Seoul normally) the day's rows are
computed (an idempotent upsert). At setup after the close they are computed only if the day has
none yet (a restart does not redo them). Fills after the engine computed them (after-hours
trading) are counted by `manage.py strategy_performance`.

Handlers catch and log their own errors (qb.engine.portfolio -> system_logs); a database
outage is left to the runtime, which waits it out (quotes noted meanwhile stay noted, the
newest per symbol).

Settings read (getattr, defaults): PORTFOLIO_REFRESH_SECONDS (60), PORTFOLIO_CLOCK_SECONDS (30).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import connection
from django.utils import timezone

from marketdata import krx
from qbsite.engine_base import Engine
from qbsite.engines import DB_ERRORS
from qbsite.events import EventType, apublish_many, envelope_correlation_id, envelope_preview
from qbsite.fields import SYMBOL_REGEX
from trading.models import Position
from trading.performance import performance_compute, performance_exists

SOURCE = "portfolio"
_SYMBOL = re.compile(SYMBOL_REGEX)
_POSITION_FIELDS = (
    "symbol", "quantity", "average_price", "cost_basis", "realized_pnl", "unrealized_pnl",
    "current_price",
)  # fmt: skip


class QuotePayloadError(ValueError):
    pass


# --- plain functions (a test calls them once) --------------------------------------------------


def parse_quote_event(envelope) -> tuple[str, Decimal]:
    """(symbol, last price) of a market_data_received envelope, or QuotePayloadError."""
    data = envelope.get("data") if isinstance(envelope, Mapping) else None
    if not isinstance(data, Mapping):
        raise QuotePayloadError("the event has no data object")
    symbol = data.get("symbol")
    if not isinstance(symbol, str) or not _SYMBOL.match(symbol):
        raise QuotePayloadError(f"data.symbol {symbol!r} is not a KRX symbol")
    quote = data.get("quote")
    if not isinstance(quote, Mapping):
        raise QuotePayloadError("data.quote is missing or not an object")
    raw = quote.get("close")
    if isinstance(raw, (bool, float)) or raw is None:
        raise QuotePayloadError(f"data.quote.close {raw!r} is not a decimal string")
    try:
        price = Decimal(str(raw))
    except (InvalidOperation, ValueError):
        raise QuotePayloadError(f"data.quote.close {raw!r} is not a number") from None
    if not price.is_finite() or price <= 0:
        raise QuotePayloadError(f"data.quote.close {raw!r} is not a positive price")
    return symbol, price


def open_position_symbols() -> set[str]:
    return set(Position.objects.filter(quantity__gt=0).values_list("symbol_id", flat=True))


def position_is_open(symbol: str) -> bool:
    return Position.objects.filter(symbol_id=symbol, quantity__gt=0).exists()


def positions_mark(prices: Mapping[str, Decimal]) -> list[dict]:
    """Mark the open positions among `prices` (symbol -> price) in one statement; returns the
    position_updated payload of each row that changed (its price differed).

    The same arithmetic as services.position_mark (unrealized = price x quantity - cost basis),
    in SQL so that a batch is one round trip. Safe beside fills: a fill holds the row lock
    (select_for_update) and this UPDATE waits for it, then computes on the committed quantity
    and cost basis; a fill that comes after reads the new current_price under its own lock.
    """
    if not prices:
        return []
    symbols = list(prices)
    values = [prices[symbol] for symbol in symbols]
    table = connection.ops.quote_name(Position._meta.db_table)
    sql = (
        f"UPDATE {table} AS p SET current_price = v.price,"
        " unrealized_pnl = v.price * p.quantity - p.cost_basis, updated_at = %s"
        " FROM unnest(%s::text[], %s::numeric[]) AS v(symbol, price)"
        " WHERE p.symbol = v.symbol AND p.quantity > 0"
        " AND p.current_price IS DISTINCT FROM v.price"
        f" RETURNING {', '.join('p.' + name for name in _POSITION_FIELDS)}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [timezone.now(), symbols, values])
        rows = cursor.fetchall()
    return [dict(zip(_POSITION_FIELDS, row, strict=True)) for row in rows]


def performance_after_close(
    *, now: dt.datetime, only_if_missing: bool
) -> tuple[dt.date | None, int]:
    """(the Seoul day, rows stored) once that trading day's regular session is over; the day
    is None (and nothing done) before the close or on a day KRX does not trade."""
    day = now.astimezone(krx.SEOUL).date()
    if not krx.is_trading_day(day) or now < krx.session_close(day):
        return None, 0
    if only_if_missing and performance_exists(day=day):
        return day, 0
    return day, len(performance_compute(day=day))


# --- the engine --------------------------------------------------------------------------------


class PortfolioEngine(Engine):
    name = "portfolio"
    subscribes = (EventType.MARKET_DATA_RECEIVED, EventType.ORDER_EXECUTED)
    has_loop = True

    def __init__(self, *, clock=None) -> None:
        super().__init__()
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self.open_symbols: set[str] = set()
        self.pending: dict[str, tuple[Decimal, str | None]] = {}
        self.performance_day: dt.date | None = None
        self.counts: collections.Counter = collections.Counter()
        self.refresh_seconds = float(getattr(settings, "PORTFOLIO_REFRESH_SECONDS", 60))
        self.clock_seconds = float(getattr(settings, "PORTFOLIO_CLOCK_SECONDS", 30))
        self._wake = asyncio.Event()
        self._flushing = asyncio.Lock()

    async def setup(self) -> None:
        self.open_symbols = await database_sync_to_async(open_position_symbols)()
        await self.performance_if_due(only_if_missing=True)
        self.log.info("Portfolio engine ready: %d open position(s).", len(self.open_symbols))

    async def handle(self, envelope: dict) -> None:
        kind = envelope.get("event_type") if isinstance(envelope, Mapping) else None
        try:
            if kind == EventType.MARKET_DATA_RECEIVED:
                self.on_quote(envelope)
            elif kind == EventType.ORDER_EXECUTED:
                await self.on_fill(envelope)
        except DB_ERRORS:
            raise  # the runtime waits for PostgreSQL
        except QuotePayloadError as exc:
            self.counts["rejected"] += 1
            self.log.warning(
                "Rejected a %s event: %s.",
                kind,
                exc,
                extra={"metadata": {"event": envelope_preview(envelope)}},
            )
        except Exception:
            self.counts["failed"] += 1
            self.log.exception("%s event failed.", kind)

    def on_quote(self, envelope: Mapping) -> None:
        symbol, price = parse_quote_event(envelope)
        if symbol not in self.open_symbols:
            self.counts["ignored"] += 1
            return
        self.pending[symbol] = (price, envelope_correlation_id(envelope))
        self._wake.set()

    async def on_fill(self, envelope: Mapping) -> None:
        data = envelope.get("data")
        symbol = data.get("symbol") if isinstance(data, Mapping) else None
        if not isinstance(symbol, str) or not _SYMBOL.match(symbol):
            raise QuotePayloadError(f"data.symbol {symbol!r} is not a KRX symbol")
        self.counts["fills"] += 1
        if await database_sync_to_async(position_is_open)(symbol):
            self.open_symbols.add(symbol)
        else:
            self.open_symbols.discard(symbol)
            self.pending.pop(symbol, None)

    async def flush(self) -> int:
        """Mark every noted quote in one round trip and publish what changed; returns how
        many positions changed."""
        async with self._flushing:
            if not self.pending:
                return 0
            batch, self.pending = self.pending, {}
            try:
                changed = await database_sync_to_async(positions_mark)(
                    {symbol: price for symbol, (price, _) in batch.items()}
                )
            except Exception:
                for symbol, noted in batch.items():  # newer quotes noted meanwhile win
                    self.pending.setdefault(symbol, noted)
                raise
            self.counts["batches"] += 1
            self.counts["marked"] += len(batch)
            self.counts["changed"] += len(changed)
            if changed:
                await apublish_many(
                    [(EventType.POSITION_UPDATED, row, batch[row["symbol"]][1]) for row in changed],
                    source=SOURCE,
                )
            return len(changed)

    async def refresh(self) -> None:
        self.open_symbols = await database_sync_to_async(open_position_symbols)()
        self.counts["refreshes"] += 1

    async def performance_if_due(self, *, only_if_missing: bool = False) -> int:
        now = self.clock()
        if self.performance_day == now.astimezone(krx.SEOUL).date():
            return 0
        day, rows = await database_sync_to_async(performance_after_close)(
            now=now, only_if_missing=only_if_missing
        )
        if day is not None:
            self.performance_day = day
            if rows:
                self.log.info("Strategy performance of %s: %d row(s) stored.", day, rows)
        return rows

    async def loop(self) -> None:
        tasks = [
            asyncio.create_task(self._flusher(), name="portfolio.flusher"),
            asyncio.create_task(self._clock(), name="portfolio.clock"),
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.gather(*tasks)

    async def _flusher(self) -> None:
        while not self.stopping.is_set():
            waiter = asyncio.ensure_future(self._wake.wait())
            stopper = asyncio.ensure_future(self.stopping.wait())
            await asyncio.wait([waiter, stopper], return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopper.cancel()
            self._wake.clear()
            if self.stopping.is_set():
                return
            try:
                await self.flush()
            except DB_ERRORS:
                raise
            except Exception:
                self.log.exception("Marking positions failed; the quotes stay noted.")

    async def _clock(self) -> None:
        loop = asyncio.get_running_loop()
        refreshed = loop.time()
        while not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), timeout=self.clock_seconds)
            if self.stopping.is_set():
                return
            try:
                if loop.time() - refreshed >= self.refresh_seconds:
                    await self.refresh()
                    refreshed = loop.time()
                await self.performance_if_due()
            except DB_ERRORS:
                raise
            except Exception:
                self.log.exception("Portfolio clock failed; trying again next period.")

    def stats(self) -> dict:
        return {"open_positions": len(self.open_symbols), "pending": len(self.pending),
                **self.counts}  # fmt: skip

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self.flush()  # the last noted quotes


__all__ = [
    "PortfolioEngine",
    "QuotePayloadError",
    "open_position_symbols",
    "parse_quote_event",
    "performance_after_close",
    "positions_mark",
]
