"""Tick -> candles and the day's quote: pure (no I/O, no wall clock; the clock is the feed's).

Buckets (notes/issue3.md, "Candle semantics"), computed in Asia/Seoul on the KRX sessions of
marketdata/krx.py:
- intraday intervals (1m, 3m, 5m, 10m, 15m, 30m, 1h) are aligned on the KST clock; every one of
  them divides an hour, so this is also "aligned from the session open" (09:00, or 10:00 on the
  days KRX opens late);
- 1d is the KST trading day: `time` = 00:00 KST of that day (stored as UTC).

Where the edge prints go (decided here, relied on by the indicators and the archiver):
- The closing-auction print (reported at 15:30:00, the session close, or up to 10 minutes after
  it, before the post-market session) belongs to the LAST regular candle of each intraday
  interval (15:29 for 1m, 15:25 for 5m, 15:15 for 15m, 15:00 for 1h), so that the day's last
  intraday candle closes at the official closing price and no one-print 15:30 candle exists.
  The last intraday candle of the day therefore ends at the close plus `close_grace`.
- Prints outside the regular session on a trading day (pre-market closing-price trades 08:30-08:40,
  post-market closing-price and after-hours single-price trades 15:40-18:00) make no intraday
  candle and do not change the daily open/high/low/close (the official daily candle is the
  regular session's); they add their volume to the 1d candle (KRX's daily volume includes them)
  and update the quote's last price and day volume. The 1d candle closes at 18:00 KST.
  Extended prints before the day's first regular print are held and added to the 1d candle when
  it opens.

Late ticks: a tick older than the open candle's last tick but in its bucket updates high, low and
volume, not close. A tick whose bucket is already closed (for one interval) is counted in
`late_dropped[interval]` and dropped for that interval; intervals whose bucket is still open take
it (a 09:00:59 tick seen after the 09:00 1m candle closed still counts in the 09:00 1h candle).

Prices are int won internally (exact; KRX prices are whole won) and Decimal on the way out.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from operator import itemgetter

from marketdata import krx
from marketdata.types import Candle

KST_OFFSET = 9 * 3600  # Asia/Seoul has had no DST since 1988: a fixed offset is exact here
DAY = 86400
INTERVAL_SECONDS = {
    "1m": 60,
    "3m": 180,
    "5m": 300,
    "10m": 600,
    "15m": 900,
    "30m": 1800,
    "1h": 3600,
    "1d": DAY,
}
DEFAULT_INTERVALS = ("1m", "5m", "15m", "1h", "1d")
# The closing auction executes at the close; its print may be reported a little later. Prints
# in [close, close + 10 min) (before the post-market session) are that auction.
AUCTION_WINDOW = 600
PRE_MARKET = 1800  # the pre-market closing-price session starts 30 min before the open
AFTER_HOURS_END = dt.time(18, 0)

_NO_LOW = 1 << 62  # above any price: an empty accumulator's low
_NEVER = float("-inf")

# Tick kinds (what the session rules make of a print time).
OUTSIDE, REGULAR, AUCTION, EXTENDED = 0, 1, 2, 3


class AggregationError(ValueError):
    pass


def configured_intervals() -> tuple[str, ...]:
    """settings.CANDLE_INTERVALS (a list, or a comma-separated string), else the default."""
    from django.conf import settings

    value = getattr(settings, "CANDLE_INTERVALS", DEFAULT_INTERVALS)
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    return check_intervals(value)


def check_intervals(intervals) -> tuple[str, ...]:
    intervals = tuple(intervals)
    unknown = [name for name in intervals if name not in INTERVAL_SECONDS]
    if unknown or not intervals:
        raise AggregationError(
            f"CANDLE_INTERVALS {list(intervals)!r}: unknown {unknown!r}; "
            f"supported: {', '.join(INTERVAL_SECONDS)}."
        )
    return tuple(sorted(set(intervals), key=INTERVAL_SECONDS.__getitem__))


def iso_utc(epoch: int) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def kst_day(epoch: float) -> int:
    """Days since 1970-01-01 in KST (the trading-day number used as a key)."""
    return (int(epoch) + KST_OFFSET) // DAY


@dataclass(frozen=True, slots=True)
class DayBounds:
    """One KST day's sessions as epoch seconds (UTC); all zero when KRX does not trade."""

    day: int
    trading: bool
    open: int = 0
    close: int = 0
    ext_start: int = 0
    ext_end: int = 0

    @property
    def midnight(self) -> int:
        return self.day * DAY - KST_OFFSET


class Sessions:
    """The session of a print time, from krx's calendar, cached per KST day (microseconds)."""

    def __init__(self) -> None:
        self._days: dict[int, DayBounds] = {}

    def bounds(self, day: int) -> DayBounds:
        found = self._days.get(day)
        if found is None:
            found = self._days[day] = self._compute(day)
        return found

    @staticmethod
    def _compute(day: int) -> DayBounds:
        date = dt.date(1970, 1, 1) + dt.timedelta(days=day)
        try:
            trading = krx.is_trading_day(date)
        except krx.KRXRuleError:
            trading = False  # outside the loaded calendar: nothing is valid there
        if not trading:
            return DayBounds(day=day, trading=False)
        open_ = int(krx.session_open(date).timestamp())
        close = int(krx.session_close(date).timestamp())
        end = int(dt.datetime.combine(date, AFTER_HOURS_END, krx.SEOUL).timestamp())
        return DayBounds(
            day=day,
            trading=True,
            open=open_,
            close=close,
            ext_start=open_ - PRE_MARKET,
            ext_end=end,
        )

    def classify(self, epoch: float) -> tuple[int, int, int]:
        """(kind, KST day, the second used for bucketing) for a print at `epoch`."""
        second = int(epoch // 1)
        day = (second + KST_OFFSET) // DAY
        b = self._days.get(day) or self.bounds(day)
        if not b.trading:
            return OUTSIDE, day, second
        if b.open <= second < b.close:
            return REGULAR, day, second
        if b.close <= second < b.close + AUCTION_WINDOW:
            return AUCTION, day, b.close - 1  # into the last regular candle
        if b.ext_start <= second < b.ext_end:
            return EXTENDED, day, second
        return OUTSIDE, day, second

    def last_trading_day(self, day: int) -> int:
        """The trading day on or before KST day `day` (searching back up to 30 days)."""
        for candidate in range(day, day - 30, -1):
            if self.bounds(candidate).trading:
                return candidate
        raise AggregationError(f"No KRX trading day in the 30 days before day {day}.")


class Bar:
    """A candle being built: int won, epoch seconds. `written`: its JSON is at the list head."""

    __slots__ = (
        "close",
        "end",
        "high",
        "last_t",
        "low",
        "open",
        "start",
        "ts",
        "volume",
        "written",
    )

    def __init__(self, start: int, end: int, ts: str, price: int, volume: int, t: float):
        self.start = start
        self.end = end
        self.ts = ts
        self.open = self.high = self.low = self.close = price
        self.volume = volume
        self.last_t = t
        self.written = False

    def json(self, interval: str) -> str:
        # Byte for byte what Candle.to_json() gives (a test pins it); built by hand for speed.
        return (
            f'{{"timestamp":"{self.ts}","open":{self.open},"high":{self.high},'
            f'"low":{self.low},"close":{self.close},"volume":{self.volume},'
            f'"interval":"{interval}"}}'
        )

    def candle(self, symbol: str, interval: str) -> Candle:
        return Candle(
            symbol=symbol,
            interval=interval,
            time=dt.datetime.fromtimestamp(self.start, dt.UTC),
            open=Decimal(self.open),
            high=Decimal(self.high),
            low=Decimal(self.low),
            close=Decimal(self.close),
            volume=self.volume,
        )


class DayQuote:
    """The latest quote of one symbol for one trading day (the `market:{symbol}` hash)."""

    __slots__ = (
        "close",
        "day",
        "high",
        "last_t",
        "limits",
        "low",
        "open",
        "pending_volume",
        "prev_close",
        "regular_close",
        "volume",
    )

    def __init__(self, day: int, prev_close: int | None):
        self.day = day
        self.prev_close = prev_close
        self.open = self.high = self.low = None  # regular session only
        self.close: int | None = None  # the last price of any print
        self.regular_close: int | None = None  # the last regular (or auction) price
        self.volume = 0
        self.pending_volume = 0  # extended prints before the 1d candle opened
        self.last_t = float("-inf")
        self.limits: tuple[int, int] | None = None  # (lower, upper), from prev_close

    def fields(self) -> dict[str, str]:
        """The hash fields (notes/issue3.md): strings of integers / decimals."""
        close = self.close
        prev = self.prev_close
        if prev and close is not None:
            change = close - prev
            # Percent with 2 decimals, rounded half away from zero, in exact integers.
            hundredths, rest = divmod(abs(change) * 10000, prev)
            hundredths += 2 * rest >= prev
            sign = "-" if change < 0 and hundredths else ""
            change_s = str(change)
            rate_s = f"{sign}{hundredths // 100}.{hundredths % 100:02d}"
        else:
            change_s = rate_s = ""
        lower, upper = self.limits or ("", "")
        return {
            "timestamp": _iso_cached(int(self.last_t)) if self.last_t > 0 else "",
            "open": _s(self.open if self.open is not None else close),
            "high": _s(self.high if self.high is not None else close),
            "low": _s(self.low if self.low is not None else close),
            "close": _s(close),
            "volume": str(self.volume),
            "prev_close": _s(prev),
            "change": change_s,
            "change_rate": rate_s,
            "upper_limit": str(upper),
            "lower_limit": str(lower),
        }


_ISO: dict[int, str] = {}


def _iso_cached(epoch: int) -> str:
    text = _ISO.get(epoch)
    if text is None:
        if len(_ISO) > 100_000:
            _ISO.clear()
        text = _ISO[epoch] = iso_utc(epoch)
    return text


def _s(value) -> str:
    return "" if value is None else str(value)


QUOTE_FIELDS = (
    "timestamp",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "prev_close",
    "change",
    "change_rate",
    "upper_limit",
    "lower_limit",
)


class ListWrite(tuple):
    """What one `candles:{symbol}:{interval}` list needs: bars closed since the last drain (in
    order) and the open bar, if any. The buffer turns it into LSET 0 / LPUSH + LTRIM.
    A tuple (symbol, interval, index, closed, open): drain() makes ~12,500 of them per batch,
    and a tuple is made in C."""

    __slots__ = ()

    def __new__(cls, symbol: str, interval: str, index: int, closed=(), open_=None):
        return tuple.__new__(cls, (symbol, interval, index, closed, open_))

    symbol = property(itemgetter(0))
    interval = property(itemgetter(1))
    index = property(itemgetter(2))
    closed = property(itemgetter(3))
    open = property(itemgetter(4))


class CandleAggregator:
    """Open candles per (symbol, interval) and the day quote per symbol.

    add() / advance() return the candles they closed (types.Candle); drain() returns the
    coalesced writes (touched lists and quotes) since the last drain, for one Redis round trip.
    """

    def __init__(
        self,
        intervals=None,
        *,
        close_grace: float = 2.0,
        sessions: Sessions | None = None,
    ) -> None:
        self.intervals = check_intervals(intervals or DEFAULT_INTERVALS)
        self.sizes = tuple(INTERVAL_SECONDS[name] for name in self.intervals)
        self.has_daily = "1d" in self.intervals
        self.daily_index = self.intervals.index("1d") if self.has_daily else -1
        self.close_grace = close_grace
        self.sessions = sessions or Sessions()
        self._bars: dict[str, list[Bar | None]] = {}
        # Start of the last closed bucket per symbol and interval: older ticks are late.
        self.closed_start: dict[str, list[int]] = {}
        self._quotes: dict[str, DayQuote] = {}
        # The same dict, without merging the accumulators first: for identity and prev_close
        # (validation), not for prices or volumes.
        self.raw_quotes = self._quotes
        # The per-tick fast path. Per symbol, [lo, hi, n, volume, high, low, close, last_t]:
        # [lo, hi) is the span of seconds that falls in the open bucket of EVERY interval (all
        # bars open, the quote on that day), so a regular print there is a same-bucket update of
        # every bar and of the quote; such prints are folded into this one accumulator and
        # merged into the bars and the quote later (_fold: before any other path touches the
        # symbol, at drain/advance/restore, or when `bars`/`quotes` are read). The merge is
        # exact: volume adds, high/low are max/min, and the close is the accumulator's when its
        # latest print is at or after the bar's (the same rule as tick by tick).
        self._acc: dict[str, list] = {}
        self.late_dropped = dict.fromkeys(self.intervals, 0)
        self.candles_closed = 0
        # (symbol, interval index) -> the bars closed since the last drain, in order
        self._touched: dict[tuple[str, int], list[Bar]] = {}
        # Symbols touched since the last drain, in first-touch order (a dict: ordered).
        self._touched_quotes: dict[str, None] = {}
        self._iso: dict[int, str] = {}
        self._next_end = float("inf")  # no open bar ends before this: advance() can skip

    # --- settled state (the accumulators merged) ---------------------------------------
    @property
    def bars(self) -> dict[str, list[Bar | None]]:
        """Open bars per symbol (index = self.intervals), with every print merged in."""
        self.settle()
        return self._bars

    @property
    def quotes(self) -> dict[str, DayQuote]:
        self.settle()
        return self._quotes

    def settle(self) -> None:
        """Merge every fast-path accumulator into its bars and quote."""
        fold = self._fold
        for symbol, acc in self._acc.items():
            if acc[2]:
                fold(symbol, acc)

    def _fold(self, symbol: str, acc: list) -> None:
        _, _, n, volume, high, low, close, last_t = acc
        if not n:
            return
        for bar in self._bars[symbol]:
            if volume:
                bar.volume += volume
            if high > bar.high:
                bar.high = high
            if low < bar.low:
                bar.low = low
            if last_t >= bar.last_t:
                bar.close = close
                bar.last_t = last_t
        q = self._quotes[symbol]
        q.volume += volume
        if last_t >= q.last_t:
            q.last_t = last_t
            q.close = q.regular_close = close
        if high > q.high:
            q.high = high
        if low < q.low:
            q.low = low
        acc[2:] = [0, 0, 0, _NO_LOW, None, _NEVER]

    def _window(self, symbol: str, bars: list) -> None:
        """Open the fast path for `symbol` where every interval has an open bar."""
        lo, hi = -1, float("inf")
        for bar in bars:
            if bar is None:
                self._acc.pop(symbol, None)
                return
            if bar.start > lo:
                lo = bar.start
            if bar.end < hi:
                hi = bar.end
        q = self._quotes.get(symbol)
        if lo >= hi or q is None or q.open is None or q.day != (lo + KST_OFFSET) // DAY:
            self._acc.pop(symbol, None)
            return
        self._acc[symbol] = [lo, hi, 0, 0, 0, _NO_LOW, None, _NEVER]

    # --- the day quote -------------------------------------------------------------------
    def quote(self, symbol: str, day: int) -> DayQuote:
        """The symbol's quote for `day`, rolled over from the previous day when needed."""
        q = self._quotes.get(symbol)
        if q is None:
            q = self._quotes[symbol] = DayQuote(day, None)
        elif q.day != day and day > q.day:
            acc = self._acc.pop(symbol, None)
            if acc is not None:
                self._fold(symbol, acc)
            prev = q.regular_close if q.regular_close is not None else q.prev_close
            q = self._quotes[symbol] = DayQuote(day, prev)
        return q

    def set_prev_close(self, symbol: str, day: int, prev_close: int) -> None:
        """The base price of `day` when nothing in the state says it (feed reference, warm-up)."""
        q = self.quote(symbol, day)
        if q.prev_close is None:
            q.prev_close = prev_close
            q.limits = None

    # --- ticks ---------------------------------------------------------------------------
    def add(self, symbol: str, t: float, price: int, volume: int, kind: int, second: int) -> list:
        """One validated print (int won; `kind`/`second` from Sessions.classify)."""
        acc = self._acc.get(symbol)
        if acc is not None:
            if acc[0] <= second < acc[1] and kind != EXTENDED:
                # Same bucket for every interval: one accumulator (see __init__).
                self._touched_quotes[symbol] = None
                acc[2] += 1
                acc[3] += volume
                if price > acc[4]:
                    acc[4] = price
                if price < acc[5]:
                    acc[5] = price
                if t >= acc[7]:
                    acc[6] = price
                    acc[7] = t
                return []
            self._fold(symbol, acc)
        closed = self._add(symbol, t, price, volume, kind, second)
        self._window(symbol, self._bars[symbol])
        return closed

    def _add(self, symbol: str, t: float, price: int, volume: int, kind: int, second: int) -> list:
        closed: list = []
        day = (second + KST_OFFSET) // DAY
        q = self._quotes.get(symbol)
        if q is None or q.day != day:
            q = self.quote(symbol, day)
        if q.day == day:  # not a print from a day already rolled over
            q.volume += volume
            if t >= q.last_t:
                q.last_t = t
                q.close = price
                if kind != EXTENDED:
                    q.regular_close = price
            if kind != EXTENDED:
                if q.open is None:
                    q.open = q.high = q.low = price
                elif price > q.high:
                    q.high = price
                elif price < q.low:
                    q.low = price
        # Every list of the symbol is rewritten at the next drain (the open candles of all
        # intervals change together); closed bars are recorded by _close().
        self._touched_quotes[symbol] = None

        bars = self._bars.get(symbol)
        if bars is None:
            bars = self._bars[symbol] = [None] * len(self.intervals)
            self.closed_start[symbol] = [-1] * len(self.intervals)
        closed_start = self.closed_start[symbol]
        for index, size in enumerate(self.sizes):
            if kind == EXTENDED:
                if index != self.daily_index:
                    continue
                bar = bars[index]
                if bar is not None and bar.start == day * DAY - KST_OFFSET:
                    bar.volume += volume
                elif q.day == day:
                    q.pending_volume += volume
                continue
            # Intraday buckets on the KST clock; the day's bucket starts at 00:00 KST.
            start = day * DAY - KST_OFFSET if size == DAY else second - (second + KST_OFFSET) % size
            bar = bars[index]
            if bar is not None:
                if start == bar.start:
                    if volume:
                        bar.volume += volume
                    if price > bar.high:
                        bar.high = price
                    elif price < bar.low:
                        bar.low = price
                    if t >= bar.last_t:
                        bar.close = price
                        bar.last_t = t
                    continue
                if start < bar.start:
                    self.late_dropped[self.intervals[index]] += 1
                    continue
                closed.append(self._close(symbol, index, bar))
            elif start <= closed_start[index]:
                self.late_dropped[self.intervals[index]] += 1
                continue
            end = self._end(start, size, day)
            bar = bars[index] = Bar(start, end, self._ts(start), price, volume, t)
            if end < self._next_end:
                self._next_end = end
            if size == DAY and q.day == day and q.pending_volume:
                bar.volume += q.pending_volume
                q.pending_volume = 0
        return closed

    def advance(self, now: float) -> list:
        """Close every open candle whose bucket (plus close_grace) ended by `now` (epoch)."""
        closed = []
        limit = now - self.close_grace
        if limit < self._next_end:
            return closed
        next_end = float("inf")
        accs = self._acc
        for symbol, bars in self._bars.items():
            for index, bar in enumerate(bars):
                if bar is not None:
                    if bar.end <= limit:
                        acc = accs.pop(symbol, None)
                        if acc is not None:
                            self._fold(symbol, acc)
                        closed.append(self._close(symbol, index, bar))
                    elif bar.end < next_end:
                        next_end = bar.end
        self._next_end = next_end
        return closed

    def _close(self, symbol: str, index: int, bar: Bar) -> Candle:
        self._bars[symbol][index] = None
        self.closed_start[symbol][index] = bar.start
        key = (symbol, index)
        closed = self._touched.get(key)
        if closed is None:
            closed = self._touched[key] = []
        closed.append(bar)
        self.candles_closed += 1
        return bar.candle(symbol, self.intervals[index])

    def _end(self, start: int, size: int, day: int) -> int:
        b = self.sessions.bounds(day)
        if size == DAY:
            return b.ext_end if b.trading else start + DAY
        end = start + size
        return min(end, b.close) if b.trading and start < b.close else end

    def _ts(self, start: int) -> str:
        text = self._iso.get(start)
        if text is None:
            if len(self._iso) > 100_000:
                self._iso.clear()
            text = self._iso[start] = iso_utc(start)
        return text

    # --- restore (warm-up) ---------------------------------------------------------------
    def restore(self, symbol: str, candle: Candle, *, last_t: float | None = None) -> None:
        """Continue `candle` (read back from the head of its Redis list) as the open one."""
        index = self.intervals.index(candle.interval)
        start = int(candle.time.timestamp())
        day = kst_day(start)  # a 1d candle starts at 00:00 KST of its day
        bar = Bar(start, self._end(start, self.sizes[index], day), self._ts(start), 0, 0, 0)
        bar.open, bar.high, bar.low, bar.close = (
            int(candle.open),
            int(candle.high),
            int(candle.low),
            int(candle.close),
        )
        bar.volume = candle.volume
        bar.last_t = last_t if last_t is not None else float(start)
        bar.written = True
        self._next_end = min(self._next_end, bar.end)
        acc = self._acc.pop(symbol, None)
        if acc is not None:
            self._fold(symbol, acc)
        if symbol not in self._bars:
            self._bars[symbol] = [None] * len(self.intervals)
            self.closed_start[symbol] = [-1] * len(self.intervals)
        self._bars[symbol][index] = bar

    def bucket_end(self, interval: str, start: int) -> int:
        return self._end(start, INTERVAL_SECONDS[interval], kst_day(start))

    # --- output --------------------------------------------------------------------------
    def drain(self) -> tuple[list[ListWrite], dict[str, DayQuote]]:
        """The lists and quotes touched since the last drain (each once: latest state)."""
        touched = self._touched
        intervals, all_bars = self.intervals, self._bars
        accs, fold = self._acc, self._fold
        new = tuple.__new__
        writes = []
        append = writes.append
        for symbol in self._touched_quotes:
            acc = accs.get(symbol)
            if acc is not None and acc[2]:
                fold(symbol, acc)
            bars = all_bars[symbol]
            if touched:
                for index, bar in enumerate(bars):
                    closed = touched.pop((symbol, index), ())
                    if bar is not None or closed:
                        append(new(ListWrite, (symbol, intervals[index], index, closed, bar)))
            else:
                for index, bar in enumerate(bars):
                    if bar is not None:
                        append(new(ListWrite, (symbol, intervals[index], index, (), bar)))
        for (symbol, index), closed in touched.items():  # closed by advance(), no tick since
            bar = all_bars[symbol][index]
            append(new(ListWrite, (symbol, intervals[index], index, closed, bar)))
        all_quotes = self._quotes
        quotes = {symbol: all_quotes[symbol] for symbol in self._touched_quotes}
        self._touched = {}
        self._touched_quotes = {}
        return writes, quotes
