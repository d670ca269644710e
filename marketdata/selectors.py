"""Market-data reads: the latest quote, candles (Redis + PostgreSQL), indicators.

Sync functions, for the API views and (through database_sync_to_async) the WebSocket consumer.

The quote path is the hot one: for a known symbol it is one HGETALL and no database query.
Known symbols are cached per process (KNOWN_SYMBOLS_CACHE_SECONDS, 60 s); a symbol missing
from the cache costs one indexed lookup, and is added when it exists, so a stock listed a
second ago is served at once while an unknown one stays a 404.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django_redis import get_redis_connection

from marketdata import buffer
from marketdata.aggregation import INTERVAL_SECONDS
from marketdata.keys import candles_key, indicators_key
from marketdata.models import MarketData, Stock
from marketdata.types import Candle
from qbsite.exceptions import NotFound

# --- Known symbols --------------------------------------------------------------------------

_known: frozenset[str] = frozenset()
_known_at = float("-inf")
_known_lock = threading.Lock()


def known_symbols_clear() -> None:
    """Forget the cached symbol set (tests; after a bulk load in the same process)."""
    global _known, _known_at
    with _known_lock:
        _known, _known_at = frozenset(), float("-inf")


def symbol_exists(symbol: str) -> bool:
    global _known, _known_at
    ttl = getattr(settings, "KNOWN_SYMBOLS_CACHE_SECONDS", 60)
    if time.monotonic() - _known_at > ttl:
        symbols = frozenset(Stock.objects.values_list("symbol", flat=True))
        with _known_lock:
            _known, _known_at = symbols, time.monotonic()
    if symbol in _known:
        return True
    if Stock.objects.filter(symbol=symbol).exists():
        with _known_lock:
            _known = _known | {symbol}
        return True
    return False


def _require_symbol(symbol: str) -> None:
    if not symbol_exists(symbol):
        raise NotFound(f"Unknown symbol {symbol!r}: it is not in stocks_metadata.")


def _redis():
    # django-redis' client for CACHES["default"] (REDIS_URL): one pool per process, reused.
    return get_redis_connection("default")


# --- Quote ----------------------------------------------------------------------------------


def quote_latest(*, symbol: str) -> dict:
    """The latest quote of `symbol` from `market:{symbol}`, typed (Decimal prices, aware time).

    NotFound for an unknown symbol, and for a known one that has no quote yet.
    """
    _require_symbol(symbol)
    quote = buffer.latest_quote(_redis(), symbol)
    if quote is None:
        raise NotFound(
            f"No quote for {symbol} yet: the collector has not seen a trade of it "
            "(market closed since Redis started, or the collector is not running)."
        )
    return {"symbol": symbol, **quote}


def _parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


# --- Indicators -----------------------------------------------------------------------------

INDICATOR_FIELDS = ("sma_20", "rsi", "macd", "macd_signal", "macd_hist")


def indicators_latest(*, symbol: str) -> dict:
    """`indicators:{symbol}`: floats (None while warming up) and updated_at."""
    _require_symbol(symbol)
    raw = _redis().hgetall(indicators_key(symbol))
    if not raw:
        raise NotFound(f"No indicators for {symbol} yet: they are computed when its candles close.")
    fields = {key.decode(): value.decode() for key, value in raw.items()}
    result: dict = {"symbol": symbol}
    for name in INDICATOR_FIELDS:
        text = fields.get(name)
        try:
            result[name] = float(text) if text else None
        except ValueError:
            result[name] = None
    for name, text in fields.items():  # anything else the engine adds (interval, ...) as is
        if name not in result and name != "updated_at":
            result.setdefault("extra", {})[name] = text
    updated = fields.get("updated_at")
    result["updated_at"] = _parse_time(updated) if updated else None
    return result


# --- Candles --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CandleRow:
    """One candle of the merged series; `closed` is False only for the open candle."""

    symbol: str
    interval: str
    time: dt.datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: int
    closed: bool = True


def _end_of(time_: dt.datetime, interval: str) -> dt.datetime:
    if interval == "1d":
        # The 1d candle (time = 00:00 KST) closes at 18:00 KST, after the after-hours session.
        return time_ + dt.timedelta(hours=18)
    return time_ + dt.timedelta(seconds=INTERVAL_SECONDS.get(interval, 60))


def redis_candles(*, symbol: str, interval: str, now: dt.datetime | None = None) -> list[CandleRow]:
    """`candles:{symbol}:{interval}`, newest first. The list head is the candle being built
    until its bucket ends (the collector updates it in place): flagged closed=False."""
    raw = _redis().lrange(candles_key(symbol, interval), 0, -1)
    now = now or dt.datetime.now(dt.UTC)
    rows = []
    for index, text in enumerate(raw):
        candle = Candle.from_json(symbol, text)
        closed = index > 0 or now >= _end_of(candle.time, interval)
        rows.append(
            CandleRow(
                symbol=symbol,
                interval=interval,
                time=candle.time,
                open=candle.open,
                high=candle.high,
                low=candle.low,
                close=candle.close,
                volume=candle.volume,
                closed=closed,
            )
        )
    return rows


def candles_page(
    *,
    symbol: str,
    interval: str,
    size: int,
    time_after: dt.datetime | None = None,
    time_before: dt.datetime | None = None,
    position: dt.datetime | None = None,
    reverse: bool = False,
) -> tuple[list[CandleRow], bool]:
    """One page of the series, newest first, and whether there is more in that direction.

    The Redis list holds the newest candles of the series (a contiguous run: the collector
    pushes every closed candle, the open one at the head); PostgreSQL holds those older than
    its oldest, so the merge is a concatenation at that boundary and each candle appears
    once, from Redis if it is there (the open candle never reaches PostgreSQL, and a closed
    one may not have been archived yet). A page that Redis fills runs no query.

    `position` (a cursor) is exclusive: the rows strictly older than it, or with `reverse`,
    strictly newer (then the page is computed oldest first and returned newest first).
    `time_after` is inclusive, `time_before` exclusive, as on /market-data/.
    """
    _require_symbol(symbol)

    def wanted(moment: dt.datetime) -> bool:
        if time_after is not None and moment < time_after:
            return False
        if time_before is not None and moment >= time_before:
            return False
        if position is not None:
            return moment > position if reverse else moment < position
        return True

    cached = redis_candles(symbol=symbol, interval=interval)
    boundary = cached[-1].time if cached else None  # PostgreSQL serves what is older
    from_redis = [row for row in cached if wanted(row.time)]
    if reverse:
        from_redis.reverse()  # oldest first

    need = size + 1
    from_db: list[CandleRow] = []
    db_needed = boundary is None or time_after is None or time_after < boundary
    if reverse:
        # Oldest first: PostgreSQL's rows come before Redis' in this direction.
        db_needed = db_needed and (position is None or boundary is None or position < boundary)
    else:
        db_needed = db_needed and len(from_redis) < need
    if db_needed:
        rows = MarketData.objects.filter(symbol=symbol, interval=interval)
        if boundary is not None:
            rows = rows.filter(time__lt=boundary)
        if time_after is not None:
            rows = rows.filter(time__gte=time_after)
        if time_before is not None:
            rows = rows.filter(time__lt=time_before)
        if position is not None:
            rows = rows.filter(time__gt=position) if reverse else rows.filter(time__lt=position)
        limit = need if reverse else need - len(from_redis)
        rows = rows.order_by("time" if reverse else "-time")[:limit]
        from_db = [
            CandleRow(symbol, interval, time_, open_, high, low, close, volume)
            for time_, open_, high, low, close, volume in rows.values_list(
                "time", "open", "high", "low", "close", "volume"
            )
        ]
    merged = from_db + from_redis if reverse else from_redis + from_db
    has_more = len(merged) > size
    page = merged[:size]
    if reverse:
        page.reverse()
    return page, has_more


def candles_recent_closed(*, symbol: str, interval: str, count: int) -> list[CandleRow]:
    """The last `count` closed candles, newest first (the WebSocket snapshot)."""
    page, _ = candles_page(symbol=symbol, interval=interval, size=count + 1)
    return [row for row in page if row.closed][:count]
