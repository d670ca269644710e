"""Tick validation: a bad tick is rejected with a reason naming what is wrong; the engine goes on.

Checks, in order (the first failure is the reason):
- unknown_symbol: not in stocks_metadata (loaded once, `refresh_symbols()` reloads it);
- time_not_aware / time_in_future (more than `future_tolerance` s after the feed clock) /
  outside_trading_hours (not 08:30-18:00 KST of a KRX trading day) / before_trading_day (a day
  before the feed clock's current trading day);
- volume_invalid (not an int, or < 0);
- price_invalid (not Decimal/int, or <= 0) / price_off_tick_grid (krx.is_on_tick; ETF market ->
  the fund tick) / price_outside_daily_limit (krx.price_limits of the previous close).
When the previous close is unknown the band is not checked; that is counted and logged
(reason "band_unchecked") but the tick is accepted.

Fast path: once a symbol has passed every check in the regular session of a day, its day's
limits and tick grid (krx's tick sizes over the limit band, as int won) are kept with the quote
they came from; a later tick of that symbol in the same regular session (UTC time, int volume,
a whole-won price on that grid within the limits, not after the feed clock's tolerance) is
accepted without the general checks. Anything else takes the general path, which gives the
reason; the result is the same either way.

Rejections are logged on "qb.collector" at WARNING (-> system_logs) with metadata
{symbol, reason, tick, suppressed}; at most one line per reason every `log_interval` seconds
(wall clock: this limits the log volume, it is not market logic), the others are counted in
`suppressed` of the next line and in the stats.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from decimal import Decimal

from marketdata import krx
from marketdata.aggregation import OUTSIDE, REGULAR, CandleAggregator, kst_day

logger = logging.getLogger("qb.collector")


@dataclass(frozen=True, slots=True)
class SymbolInfo:
    instrument: str  # krx instrument: "stock" or "etf"
    market: str


def load_symbols() -> dict[str, SymbolInfo]:
    """Known symbols from stocks_metadata (sync ORM; call through sync_to_async from async)."""
    from marketdata.models import Market, Stock

    return {
        symbol: SymbolInfo("etf" if market == Market.ETF else "stock", market)
        for symbol, market in Stock.objects.values_list("symbol", "market")
    }


class RejectLog:
    """Rate-limited WARNING lines per reason, with the count of the ones held back."""

    def __init__(self, interval: float = 10.0, clock=time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._last: dict[str, float] = {}
        self.suppressed: dict[str, int] = {}
        self.suppressed_total: dict[str, int] = {}

    def log(self, reason: str, message: str, symbol: str, tick_data: dict) -> None:
        now = self.clock()
        last = self._last.get(reason)
        if last is not None and now - last < self.interval:
            self.suppressed[reason] = self.suppressed.get(reason, 0) + 1
            self.suppressed_total[reason] = self.suppressed_total.get(reason, 0) + 1
            return
        self._last[reason] = now
        held = self.suppressed.pop(reason, 0)
        suffix = f" ({held} more like it since the last line)" if held else ""
        logger.warning(
            "Tick rejected (%s): %s%s",
            reason,
            message,
            suffix,
            extra={
                "metadata": {
                    "symbol": symbol,
                    "reason": reason,
                    "tick": tick_data,
                    "suppressed": held,
                }
            },
        )


def _tick_data(tick) -> dict:
    time_ = getattr(tick, "time", None)
    return {
        "symbol": str(getattr(tick, "symbol", "")),
        "time": time_.isoformat() if isinstance(time_, dt.datetime) else repr(time_),
        "price": str(getattr(tick, "price", "")),
        "volume": repr(getattr(tick, "volume", None)),
    }


class TickValidator:
    def __init__(
        self,
        symbols: dict[str, SymbolInfo] | None = None,
        *,
        future_tolerance: float = 5.0,
        log_interval: float = 10.0,
        clock=time.monotonic,
    ) -> None:
        self.symbols: dict[str, SymbolInfo] = dict(symbols or {})
        self.future_tolerance = future_tolerance
        self.log = RejectLog(log_interval, clock)
        self.rejected: dict[str, int] = {}
        self.band_unchecked = 0
        self._grid: dict[tuple[Decimal | int, str], bool] = {}
        self._band_noted: set[tuple[str, int]] = set()
        self._today: tuple[int, int] = (-1, -1)  # (KST day of now, its trading day)
        # symbol -> (its DayQuote, KST day, lower, upper, ((end exclusive, tick), ...))
        self._fast: dict[str, tuple] = {}
        # For the feed clock `_span_now`: (regular open, close, latest accepted time, KST day)
        self._span_now: float | None = None
        self._span: tuple = (0, 0, 0.0, -1)

    def refresh_symbols(self, symbols: dict[str, SymbolInfo] | None = None) -> None:
        self.symbols = dict(load_symbols() if symbols is None else symbols)
        self._fast.clear()

    def span(self, now: float, agg: CandleAggregator) -> tuple:
        """(regular open, regular close, latest accepted time, KST day) for the feed clock
        `now` (epoch): the fast path's window; (0, 0, 0.0, -1) when there is none."""
        return self._span if now == self._span_now else self._set_span(now, agg)

    def _set_span(self, now: float, agg: CandleAggregator) -> tuple:
        day = kst_day(now)
        b = agg.sessions.bounds(day)
        if b.trading and day >= self._trading_day(agg, now):
            self._span = (b.open, b.close, now + self.future_tolerance, day)
        else:
            self._span = (0, 0, 0.0, -1)
        self._span_now = now
        return self._span

    @staticmethod
    def _grid_segments(lower: int, upper: int, instrument: str) -> tuple[tuple[int, int], ...]:
        """krx's tick size over [lower, upper] as (end exclusive, tick) segments: the tick can
        only change at a bound of krx's stock table."""
        starts = [lower] + [int(b) for b, _ in krx.STOCK_TICKS if lower < b <= upper]
        ends = [*starts[1:], upper + 1]
        return tuple(
            (end, int(krx.tick_size(Decimal(start), instrument=instrument)))
            for start, end in zip(starts, ends, strict=True)
        )

    def reject(self, tick, reason: str, message: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        self.log.log(reason, message, str(getattr(tick, "symbol", "")), _tick_data(tick))

    def _on_grid(self, price, instrument: str) -> bool:
        key = (price, instrument)
        found = self._grid.get(key)
        if found is None:
            if len(self._grid) > 200_000:
                self._grid.clear()
            found = self._grid[key] = krx.is_on_tick(price, instrument=instrument)
        return found

    def _trading_day(self, agg: CandleAggregator, now: float) -> int:
        day = kst_day(now)
        if self._today[0] != day:
            self._today = (day, agg.sessions.last_trading_day(day))
        return self._today[1]

    def check(self, tick, now: float, agg: CandleAggregator):
        """(epoch, int price, volume, kind, bucket second) for a good tick, else None (rejected,
        counted and logged)."""
        symbol = tick.symbol
        entry = self._fast.get(symbol)
        if entry is not None:
            moment = tick.time
            if moment.tzinfo is dt.UTC:
                t = moment.timestamp()
                lo, hi, latest, day = (
                    self._span if now == self._span_now else self._set_span(now, agg)
                )
                volume = tick.volume
                if (
                    lo <= t < hi
                    and t <= latest
                    and entry[1] == day
                    and type(volume) is int
                    and volume >= 0
                    and agg.raw_quotes.get(symbol) is entry[0]
                ):
                    price = tick.price
                    kind = type(price)
                    if kind is int:
                        won = price
                    elif kind is Decimal and price.is_finite():
                        won = int(price)
                        if won != price:
                            won = 0
                    else:
                        won = 0
                    if entry[2] <= won <= entry[3]:
                        for end, size in entry[4]:
                            if won < end:
                                if not won % size:
                                    return t, won, volume, REGULAR, int(t)
                                break
        return self._check(tick, now, agg)

    def _check(self, tick, now: float, agg: CandleAggregator):
        symbol = tick.symbol
        info = self.symbols.get(symbol)
        if info is None:
            self.reject(tick, "unknown_symbol", f"symbol {symbol!r} is not in stocks_metadata.")
            return None
        moment = tick.time
        if not isinstance(moment, dt.datetime) or moment.utcoffset() is None:
            self.reject(tick, "time_not_aware", f"{symbol}: tick time {moment!r} has no time zone.")
            return None
        t = moment.timestamp()
        if t > now + self.future_tolerance:
            self.reject(
                tick,
                "time_in_future",
                f"{symbol}: tick time {moment.isoformat()} is {t - now:.1f} s after the feed "
                f"clock (tolerance {self.future_tolerance} s).",
            )
            return None
        kind, day, second = agg.sessions.classify(t)
        if kind == OUTSIDE:
            self.reject(
                tick,
                "outside_trading_hours",
                f"{symbol}: tick time {moment.astimezone(krx.SEOUL).isoformat()} is outside KRX "
                "trading hours (08:30-18:00 KST on a trading day).",
            )
            return None
        if day < self._trading_day(agg, now):
            self.reject(
                tick,
                "before_trading_day",
                f"{symbol}: tick time {moment.astimezone(krx.SEOUL).isoformat()} is before the "
                "current trading day of the feed clock.",
            )
            return None
        volume = tick.volume
        if type(volume) is not int or volume < 0:
            self.reject(tick, "volume_invalid", f"{symbol}: volume {volume!r} is not an int >= 0.")
            return None
        price = tick.price
        if isinstance(price, bool) or not isinstance(price, (Decimal, int)) or not price > 0:
            self.reject(
                tick, "price_invalid", f"{symbol}: price {price!r} is not a Decimal amount > 0."
            )
            return None
        if not self._on_grid(price, info.instrument):
            tick_size = krx.tick_size(price, instrument=info.instrument)
            self.reject(
                tick,
                "price_off_tick_grid",
                f"{symbol}: price {price} is not on the KRX tick grid "
                f"({info.instrument} tick at that price: {tick_size}).",
            )
            return None
        won = int(price)
        quote = agg.quote(symbol, day)
        if quote.day == day and quote.prev_close is not None:
            limits = quote.limits
            if limits is None:
                band = krx.price_limits(
                    Decimal(quote.prev_close), instrument=info.instrument, market=info.market
                )
                limits = quote.limits = (int(band.lower), int(band.upper))
            if not limits[0] <= won <= limits[1]:
                self.reject(
                    tick,
                    "price_outside_daily_limit",
                    f"{symbol}: price {price} is outside today's limits {limits[0]}..{limits[1]} "
                    f"(previous close {quote.prev_close}).",
                )
                return None
            if kind == REGULAR:
                self._fast[symbol] = (
                    quote,
                    day,
                    limits[0],
                    limits[1],
                    self._grid_segments(limits[0], limits[1], info.instrument),
                )
        else:
            self.band_unchecked += 1
            if (symbol, day) not in self._band_noted:
                self._band_noted.add((symbol, day))
                self.log.log(
                    "band_unchecked",
                    f"{symbol}: previous close unknown, the +-30% daily limit is not checked "
                    "today (the tick is accepted).",
                    symbol,
                    _tick_data(tick),
                )
        return t, won, volume, kind, second
