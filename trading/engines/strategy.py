"""The strategy engine: runs the enabled strategies on `candle_closed` / `indicators_updated`.

Per event (the plain functions below; the Engine only parses, reads and calls them):
1. the strategies in memory that run on the event's (symbol, interval) and override the
   event's hook (on_candle / on_indicators) are picked; none: done, no I/O at all;
2. the recent closes come from the Redis list `candles:{symbol}:{interval}` (with the
   `indicators:{symbol}` hash) in one pipelined round trip: closed candles only, oldest first,
   the event's candle last, as many as the most demanding strategy's history() asks;
3. one thread hop (database_sync_to_async) runs `strategies_evaluate()`: the strategies'
   holdings (one query for all of them), each strategy on its own context, each intent
   stored by `signal_record` (a replayed candle stores and publishes nothing) and published as
   `trading_signal` on commit with the candle event's correlation_id. A strategy that raises
   (or returns something that is not a list of at most one SignalIntent) is disabled by
   `strategy_disable` (risk_alert + system_logs); the others go on.

The strategies in memory are the enabled rows, loaded at setup() and reloaded by loop()
when a cheap check (row count and latest updated_at of the strategies table) changes, every
STRATEGY_RELOAD_SECONDS (5). A row that no longer loads (its kind was removed, its parameters
no longer fit the class) is disabled like a strategy that raised.

Nothing is kept between events but that list: holdings come from the database and closes from
Redis each time, so a restart changes nothing, and two engines on the same events make one
signal per candle (the database's UNIQUE key), not two.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

import redis.asyncio
from channels.db import database_sync_to_async
from django.conf import settings
from django.db.models import Count, Max

from marketdata.engines.indicators import (
    HASH_FIELDS,
    INTERVAL_LENGTHS,
    CandlePayloadError,
    parse_candle_closed,
)
from marketdata.keys import candles_key, indicators_key
from marketdata.types import Candle
from qbsite.engine_base import Engine
from qbsite.events import EventType, envelope_correlation_id, envelope_preview
from qbsite.exceptions import InvalidInput, QBError
from qbsite.fields import SYMBOL_REGEX
from trading.models import Signal, Strategy
from trading.strategies import get_strategy_class
from trading.strategies.base import BaseStrategy, SignalIntent, StrategyContext
from trading.strategies.selectors import Holding, strategies_enabled, strategy_holdings
from trading.strategies.services import signal_record, strategy_disable

logger = logging.getLogger("qb.strategies")

ON_CANDLE = "on_candle"
ON_INDICATORS = "on_indicators"
HOOKS = (ON_CANDLE, ON_INDICATORS)

_SYMBOL = re.compile(SYMBOL_REGEX)
MEMO_KEYS = 256  # (symbol, interval) series whose parsed candles are kept between events


def reload_seconds() -> float:
    return float(getattr(settings, "STRATEGY_RELOAD_SECONDS", 5))


# --- the strategies in memory ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Loaded:
    """One enabled Strategy row and its instance."""

    row: Strategy
    instance: BaseStrategy
    history: int

    def uses(self, hook: str) -> bool:
        return type(self.instance).uses(hook)


class StrategyBook:
    """The enabled strategies by (symbol, interval) and hook: what an event asks for."""

    def __init__(self, loaded: Iterable[Loaded] = ()) -> None:
        self.loaded: dict[int, Loaded] = {}
        self._index: dict[tuple[str, str, str], list[Loaded]] = {}
        self.fingerprint = None
        for item in loaded:
            self.loaded[item.row.pk] = item
        self._reindex()

    def _reindex(self) -> None:
        index: dict[tuple[str, str, str], list[Loaded]] = collections.defaultdict(list)
        for item in sorted(self.loaded.values(), key=lambda i: i.row.name):
            for symbol in item.row.symbols:
                for hook in HOOKS:
                    if item.uses(hook):
                        index[(symbol, item.row.interval, hook)].append(item)
        self._index = dict(index)

    def matching(self, symbol: str, interval: str, hook: str) -> list[Loaded]:
        return self._index.get((symbol, interval, hook), [])

    def remove(self, strategy_id: int) -> None:
        if self.loaded.pop(strategy_id, None) is not None:
            self._reindex()

    def __len__(self) -> int:
        return len(self.loaded)


def strategies_fingerprint() -> tuple:
    """Changes whenever a strategy row is added, deleted or saved (cheap: one aggregate)."""
    result = Strategy.objects.aggregate(count=Count("id"), last=Max("updated_at"))
    return result["count"], result["last"]


def strategy_load(row: Strategy) -> Loaded:
    """The instance of a Strategy row; InvalidInput if its kind or parameters do not load."""
    cls = get_strategy_class(row.kind)
    instance = cls(row.parameters)
    history = instance.history()
    if isinstance(history, bool) or not isinstance(history, int) or history < 1:
        raise InvalidInput(f"{cls.__name__}.history() returned {history!r}, not an int >= 1.")
    return Loaded(row=row, instance=instance, history=history)


def strategies_load() -> StrategyBook:
    """The enabled strategies, each made an instance. A row that does not load is disabled
    (risk_alert + system log): running it is impossible, and silently skipping it would hide
    that it does nothing."""
    fingerprint = strategies_fingerprint()
    loaded = []
    for row in strategies_enabled():
        try:
            loaded.append(strategy_load(row))
        except Exception as exc:
            strategy_disable(
                strategy=row,
                reason=f"Could not load: {_describe(exc)}",
                exc=exc,
            )
    book = StrategyBook(loaded)
    book.fingerprint = fingerprint
    return book


def _describe(exc: BaseException) -> str:
    message = exc.message if isinstance(exc, QBError) else str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


# --- reading the history from Redis ----------------------------------------------------------


def _parse_list_item(item: bytes | str, interval: str) -> tuple[dt.datetime, Decimal] | None:
    """(open time, close) of one candle JSON of the Redis list, or None if unreadable."""
    try:
        data = json.loads(item)
        moment = dt.datetime.fromisoformat(data["timestamp"])
        close = Decimal(str(data["close"]))
        if data["interval"] == interval and close.is_finite() and close > 0:
            return moment, close
    except (KeyError, TypeError, ValueError, InvalidOperation):
        pass
    return None


def closes_until(
    raw: Iterable[bytes | str],
    *,
    interval: str,
    until: dt.datetime,
    last_close: Decimal,
    limit: int,
    counts: collections.Counter | None = None,
    memo: dict | None = None,
) -> tuple[Decimal, ...]:
    """Closes, oldest first, of the candle opened at `until` (its close is `last_close`, from
    the event) and of the closed candles before it in a newest-first Redis list; at most
    `limit` in all.

    Only candles strictly older than the last one kept are taken as the list goes back: the
    list's open head, the candle itself, a repeated or an out-of-order one are skipped, and
    an unreadable one is counted ("unreadable_candles") and skipped.

    `memo` ({list item: parsed}), kept by the caller from one event of a (symbol, interval)
    to the next: a closed candle's JSON never changes, so each is parsed once, not once per
    event (141 candles for an RSI 14 cost about 1 ms to parse).
    """
    kept = [last_close]
    newest = until
    for item in raw:
        if len(kept) >= limit:
            break
        if memo is not None and item in memo:
            parsed = memo[item]
        else:
            parsed = _parse_list_item(item, interval)
            if memo is not None:
                memo[item] = parsed
        if parsed is None:
            if counts is not None:
                counts["unreadable_candles"] += 1
            continue
        moment, close = parsed
        if moment < newest:
            kept.append(close)
            newest = moment
    kept.reverse()
    return tuple(kept)


def _indicator_values(raw: Mapping, *, interval: str, stamp: str) -> dict | None:
    """The indicators hash's values if it holds this very candle, else None."""
    if not raw:
        return None
    fields = {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in raw.items()
    }
    if fields.get("interval") != interval or fields.get("time") != stamp:
        return None
    values = {}
    for name in HASH_FIELDS:
        try:
            values[name] = float(fields[name]) if name in fields else None
        except ValueError:
            values[name] = None
    return values


# --- the work of one event -------------------------------------------------------------------


@dataclass
class Evaluation:
    """What one event did: the signals it stored (new), the replays, the strategies disabled."""

    signals: list[Signal]
    replayed: list[Signal]
    disabled: list[Strategy]


def _intents(result, loaded: Loaded) -> list[SignalIntent]:
    if not isinstance(result, (list, tuple)):
        raise TypeError(
            f"{type(loaded.instance).__name__} returned {type(result).__name__}, "
            "not a list of SignalIntent."
        )
    for item in result:
        if not isinstance(item, SignalIntent):
            raise TypeError(
                f"{type(loaded.instance).__name__} returned a {type(item).__name__} in its "
                "list, not a SignalIntent."
            )
    if len(result) > 1:
        raise ValueError(
            f"{type(loaded.instance).__name__} returned {len(result)} signals for one candle; "
            "at most one is allowed."
        )
    return list(result)


def strategies_evaluate(
    *,
    candle: Candle,
    closes: Sequence[Decimal],
    strategies: Sequence[Loaded],
    hook: str = ON_CANDLE,
    indicators: Mapping | None = None,
    correlation_id: str | None = None,
    counts: collections.Counter | None = None,
) -> Evaluation:
    """Run `strategies` on one closed candle and store what they ask for (sync: one thread hop).

    `closes`: oldest first, ending with candle.close (see closes_until). Each strategy sees the
    last history() of them. A strategy that raises is disabled; the others go on. Signals are
    stored one transaction each (one bad signal does not undo another).
    """
    counts = counts if counts is not None else collections.Counter()
    outcome = Evaluation(signals=[], replayed=[], disabled=[])
    if not strategies:
        return outcome
    holdings = strategy_holdings(symbol=candle.symbol, strategies=[s.row for s in strategies])
    closes = tuple(closes)
    for loaded in strategies:
        row = loaded.row
        held = holdings.get(row.pk, Holding())
        ctx = StrategyContext(
            symbol=candle.symbol,
            interval=candle.interval,
            candle=candle,
            closes=closes[-loaded.history :],
            holding=held.holding,
            open_buy=held.open_buy,
            open_sell=held.open_sell,
            indicators=indicators,
        )
        counts["evaluated"] += 1
        try:
            intents = _intents(getattr(loaded.instance, hook)(ctx), loaded)
        except Exception as exc:
            counts["strategy_errors"] += 1
            reason = (
                f"{hook} raised on {candle.symbol} {candle.interval} "
                f"{candle.time.isoformat()}: {_describe(exc)}"
            )
            outcome.disabled.append(
                strategy_disable(
                    strategy=row,
                    reason=reason,
                    symbol=candle.symbol,
                    correlation_id=correlation_id,
                    exc=exc,
                )
            )
            continue
        for intent in intents:
            try:
                signal, created = signal_record(
                    strategy=row,
                    symbol=candle.symbol,
                    interval=candle.interval,
                    time=candle.time,
                    action=intent.action,
                    price=candle.close,
                    confidence=intent.confidence,
                    quantity=intent.quantity,
                    reason=intent.reason,
                    correlation_id=correlation_id,
                )
            except InvalidInput as exc:
                counts["signals_refused"] += 1
                logger.warning(
                    "Signal of %s on %s %s refused: %s",
                    row.name,
                    candle.symbol,
                    candle.time.isoformat(),
                    exc.message,
                    extra={"metadata": {"strategy": row.name, "symbol": candle.symbol}},
                )
                continue
            if created:
                counts["signals"] += 1
                outcome.signals.append(signal)
            else:
                counts["replayed"] += 1
                outcome.replayed.append(signal)
    return outcome


# --- parsing indicators_updated --------------------------------------------------------------


class IndicatorsPayloadError(InvalidInput):
    code = "indicators_payload"


def parse_indicators_updated(envelope) -> tuple[str, str, dt.datetime, str, dict]:
    """(symbol, interval, time, time as sent, values) of an `indicators_updated` envelope."""
    if not isinstance(envelope, Mapping):
        raise IndicatorsPayloadError(f"The event is a {type(envelope).__name__}, not an envelope.")
    data = envelope.get("data")
    if not isinstance(data, Mapping):
        raise IndicatorsPayloadError("The event has no data dict.")
    symbol, interval, stamp = data.get("symbol"), data.get("interval"), data.get("time")
    values = data.get("values")
    if not isinstance(symbol, str) or not _SYMBOL.match(symbol):
        raise IndicatorsPayloadError(f"data.symbol {symbol!r} is not a KRX symbol (e.g. 005930).")
    if interval not in INTERVAL_LENGTHS:
        raise IndicatorsPayloadError(
            f"data.interval {interval!r} is not one of {', '.join(INTERVAL_LENGTHS)}."
        )
    try:
        moment = dt.datetime.fromisoformat(stamp)
    except (TypeError, ValueError):
        raise IndicatorsPayloadError(f"data.time {stamp!r} is not an ISO 8601 time.") from None
    if moment.utcoffset() is None:
        raise IndicatorsPayloadError(f"data.time {stamp!r} has no time zone (UTC expected).")
    if not isinstance(values, Mapping):
        raise IndicatorsPayloadError("data.values is missing or not a dict.")
    cleaned = {}
    for name in HASH_FIELDS:
        value = values.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise IndicatorsPayloadError(f"data.values.{name} {value!r} is not a number or null.")
        cleaned[name] = None if value is None else float(value)
    return symbol, interval, moment, stamp, cleaned


# --- the engine ------------------------------------------------------------------------------


class StrategyEngine(Engine):
    """Consumes `candle_closed` and `indicators_updated`; produces signals and `trading_signal`."""

    name = "strategy"
    subscribes = (EventType.CANDLE_CLOSED, EventType.INDICATORS_UPDATED)
    has_loop = True

    def __init__(self, *, redis_client: redis.asyncio.Redis | None = None) -> None:
        super().__init__()
        self.book = StrategyBook()
        self.counts: collections.Counter = collections.Counter()
        self._redis = redis_client
        self._own_redis = redis_client is None
        self._lock = asyncio.Lock()
        self.max_candles = int(getattr(settings, "MAX_CANDLES_PER_SYMBOL", 200))
        # Per (symbol, interval): the list items parsed at the last event (closes_until memo).
        self._parsed: dict[tuple[str, str], dict] = {}

    @property
    def redis(self) -> redis.asyncio.Redis:
        if self._redis is None:
            self._redis = redis.asyncio.Redis.from_url(settings.REDIS_URL)
        return self._redis

    async def setup(self) -> None:
        self.book = await database_sync_to_async(strategies_load)()
        self.log.info(
            "Loaded %d enabled strateg%s.", len(self.book), "y" if len(self.book) == 1 else "ies"
        )

    async def reload(self, *, force: bool = False) -> bool:
        """Reload the strategies if the table changed (or `force`); True if it did."""

        def work() -> StrategyBook | None:
            if not force and strategies_fingerprint() == self.book.fingerprint:
                return None
            return strategies_load()

        async with self._lock:  # not between an event's evaluation and its disables
            book = await database_sync_to_async(work)()
            if book is not None:
                self.book = book
        if book is None:
            return False
        self.counts["reloads"] += 1
        return True

    async def loop(self) -> None:
        period = reload_seconds()
        while not self.stopping.is_set():
            try:
                await asyncio.wait_for(self.stopping.wait(), timeout=period)
                return
            except TimeoutError:
                pass
            try:
                await self.reload()
            except Exception:
                # The database is away: keep running the strategies loaded; try next period.
                self.counts["reload_failures"] += 1
                logger.exception("Reloading the strategies failed; the loaded ones run on.")

    async def handle(self, envelope: dict) -> None:
        try:
            await self._handle(envelope)
        except Exception:
            self.counts["failed"] += 1
            logger.exception(
                "Strategy engine failed on a %s event.",
                envelope.get("event_type", "?") if isinstance(envelope, Mapping) else "?",
                extra={"metadata": {"event": envelope_preview(envelope)}},
            )

    async def _handle(self, envelope) -> None:
        kind = envelope.get("event_type") if isinstance(envelope, Mapping) else None
        correlation_id = envelope_correlation_id(envelope)
        if kind == EventType.CANDLE_CLOSED:
            try:
                candle = parse_candle_closed(envelope)
            except CandlePayloadError as exc:
                return self._reject(envelope, exc)
            await self.on_candle_closed(candle, correlation_id=correlation_id)
        elif kind == EventType.INDICATORS_UPDATED:
            try:
                parsed = parse_indicators_updated(envelope)
            except IndicatorsPayloadError as exc:
                return self._reject(envelope, exc)
            await self.on_indicators_updated(*parsed, correlation_id=correlation_id)
        else:
            self._reject(envelope, InvalidInput(f"Unexpected event type {kind!r}."))

    def _reject(self, envelope, exc: InvalidInput) -> None:
        self.counts["rejected"] += 1
        logger.warning(
            "Rejected an event: %s",
            exc.message,
            extra={"metadata": {"reason": exc.message, "event": envelope_preview(envelope)}},
        )

    async def on_candle_closed(
        self, candle: Candle, *, correlation_id: str | None = None
    ) -> Evaluation | None:
        strategies = self.book.matching(candle.symbol, candle.interval, ON_CANDLE)
        if not strategies:
            self.counts["no_strategy"] += 1
            return None
        want = min(max(s.history for s in strategies), self.max_candles)
        pipe = self.redis.pipeline(transaction=False)
        # +2: the list's head may be the next, open candle, and it may hold this one too.
        pipe.lrange(candles_key(candle.symbol, candle.interval), 0, want + 1)
        pipe.hgetall(indicators_key(candle.symbol))
        raw, hashed = await pipe.execute()
        closes = closes_until(
            raw,
            interval=candle.interval,
            until=candle.time,
            last_close=candle.close,
            limit=want,
            counts=self.counts,
            memo=self._memo(candle.symbol, candle.interval, raw),
        )
        stamp = candle.to_dict()["timestamp"]
        indicators = _indicator_values(hashed, interval=candle.interval, stamp=stamp)
        return await self._evaluate(
            candle, closes, strategies, ON_CANDLE, indicators, correlation_id
        )

    async def on_indicators_updated(
        self,
        symbol: str,
        interval: str,
        moment: dt.datetime,
        stamp: str,
        values: dict,
        *,
        correlation_id: str | None = None,
    ) -> Evaluation | None:
        strategies = self.book.matching(symbol, interval, ON_INDICATORS)
        if not strategies:
            self.counts["no_strategy"] += 1
            return None
        want = min(max(s.history for s in strategies), self.max_candles)
        # The event has no candle: it is in the list (the collector writes it before its
        # candle_closed, which the indicators engine answered), behind at most an open head.
        raw = await self.redis.lrange(candles_key(symbol, interval), 0, want + 1)
        candle = _find(raw, symbol, interval, moment)
        if candle is None:
            self.counts["candle_missing"] += 1
            logger.warning(
                "indicators_updated for %s %s at %s, but the candle is not in %s; skipped.",
                symbol,
                interval,
                stamp,
                candles_key(symbol, interval),
                extra={"metadata": {"symbol": symbol, "interval": interval, "time": stamp}},
            )
            return None
        closes = closes_until(
            raw,
            interval=interval,
            until=moment,
            last_close=candle.close,
            limit=want,
            counts=self.counts,
            memo=self._memo(symbol, interval, raw),
        )
        return await self._evaluate(
            candle, closes, strategies, ON_INDICATORS, values, correlation_id
        )

    def _memo(self, symbol: str, interval: str, raw: list) -> dict:
        """The parse memo of (symbol, interval), holding only the items of this read (one
        list read: about 65 kB for 142 candles); the memos of the MEMO_KEYS series used last
        are kept, so memory stays bounded however many symbols the strategies watch."""
        key = (symbol, interval)
        memo = self._parsed.pop(key, None) or {}
        if memo:
            memo = {item: memo[item] for item in raw if item in memo}
        self._parsed[key] = memo  # re-inserted: the newest in the dict's order
        while len(self._parsed) > MEMO_KEYS:
            del self._parsed[next(iter(self._parsed))]
        return memo

    async def _evaluate(self, candle, closes, strategies, hook, indicators, correlation_id):
        async with self._lock:
            outcome = await database_sync_to_async(strategies_evaluate)(
                candle=candle,
                closes=closes,
                strategies=strategies,
                hook=hook,
                indicators=indicators,
                correlation_id=correlation_id,
                counts=self.counts,
            )
            for strategy in outcome.disabled:
                self.book.remove(strategy.pk)
        return outcome

    def stats(self) -> dict:
        return {"strategies": len(self.book), **self.counts}

    async def stop(self) -> None:
        if self._own_redis and self._redis is not None:
            await self._redis.aclose()
            self._redis = None


def _find(raw: Iterable[bytes | str], symbol: str, interval: str, moment: dt.datetime):
    """The Candle opened at `moment` in a Redis list, or None."""
    for item in raw:
        try:
            candle = Candle.from_json(symbol, item)
        except (KeyError, TypeError, ValueError, InvalidOperation):
            continue
        if candle.time == moment and candle.interval == interval:
            return candle
    return None


__all__ = [
    "Evaluation",
    "Loaded",
    "StrategyBook",
    "StrategyEngine",
    "closes_until",
    "parse_indicators_updated",
    "strategies_evaluate",
    "strategies_load",
    "strategy_load",
]
