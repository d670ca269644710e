"""The collector: feed -> validation -> candles -> Redis (one round trip per batch) -> events.

`collect(batch, state=, redis=, now=)` is the whole job for one batch, a plain function a test
calls once: validate each tick (bad ones rejected and logged, the good ones kept), aggregate,
close the candles whose bucket ended by `now` (the feed's clock), write everything to Redis in
one round trip, and return the stats with the events to publish. An empty batch only advances
the clock (the engine calls it so that illiquid symbols' candles close on time).

CollectorEngine runs it on the feed named by settings.COLLECTOR_FEED and publishes:
- `candle_closed` for every closed candle (data {"symbol", "interval", "candle"}), and
  {"type": "market.update", "kind": "candle", "data": same} to market_stream_group(symbol);
- `market_data_received` (data {"symbol", "quote": {...}}) and the "quote" market.update,
  throttled per symbol: at most one per MARKET_EVENT_MIN_INTERVAL_MS (250 ms, wall clock) with
  the latest quote; a quote held back is sent when its interval is over (trailing edge), so the
  last quote of a burst is never lost.

Settings read (getattr, defaults): COLLECTOR_FEED ("simulated"), COLLECTOR_SIM_SEED (None:
a new walk each start), COLLECTOR_SPEED ("1": real time; "10x", "max"), COLLECTOR_BATCH_MAX_TICKS
(20000), COLLECTOR_BATCH_MAX_MS (20), COLLECTOR_EVENT_QUEUE_MAX (100000),
MARKET_EVENT_MIN_INTERVAL_MS (250), CANDLE_INTERVALS, CANDLE_CLOSE_GRACE_SECONDS (2),
TICK_FUTURE_TOLERANCE_SECONDS (5), COLLECTOR_REJECT_LOG_INTERVAL_SECONDS (10),
MAX_CANDLES_PER_SYMBOL.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import time
from dataclasses import dataclass, field
from decimal import Decimal

import redis.asyncio
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings

from marketdata import buffer, krx
from marketdata.aggregation import (
    REGULAR,
    CandleAggregator,
    DayQuote,
    configured_intervals,
    kst_day,
)
from marketdata.keys import CANDLE_STREAM, candles_key, market_stream_group, quote_key
from marketdata.types import Candle
from marketdata.validation import TickValidator, load_symbols
from qbsite.engine_base import Engine
from qbsite.events import EventType, apublish_many

SOURCE = "collector"
QUOTE_EVENT_FIELDS = (
    "timestamp",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "change",
    "change_rate",
)


def _setting(name: str, default):
    return getattr(settings, name, default)


@dataclass
class CollectorState:
    validator: TickValidator
    aggregator: CandleAggregator
    accepted: int = 0
    last_tick: float | None = None

    @classmethod
    def create(cls, symbols=None, *, intervals=None) -> CollectorState:
        """symbols: {symbol: SymbolInfo}; None loads stocks_metadata (sync ORM)."""
        return cls(
            validator=TickValidator(
                load_symbols() if symbols is None else symbols,
                future_tolerance=float(_setting("TICK_FUTURE_TOLERANCE_SECONDS", 5)),
                log_interval=float(_setting("COLLECTOR_REJECT_LOG_INTERVAL_SECONDS", 10)),
            ),
            aggregator=CandleAggregator(
                intervals or configured_intervals(),
                close_grace=float(_setting("CANDLE_CLOSE_GRACE_SECONDS", 2)),
            ),
        )

    def stats(self) -> dict:
        agg, val = self.aggregator, self.validator
        return {
            "ticks_accepted": self.accepted,
            "ticks_rejected": dict(val.rejected),
            "rejected_logs_suppressed": dict(val.log.suppressed_total),
            "band_unchecked": val.band_unchecked,
            "candles_closed": agg.candles_closed,
            "late_ticks_dropped": dict(agg.late_dropped),
            "last_tick_time": (
                dt.datetime.fromtimestamp(self.last_tick, dt.UTC).isoformat()
                if self.last_tick is not None
                else None
            ),
        }


@dataclass
class CollectResult:
    accepted: int = 0
    rejected: int = 0
    closed: list[Candle] = field(default_factory=list)
    # symbol -> the market:{symbol} hash fields written; the event's quote is cut from them
    # only when it is sent (the events are throttled: most quotes are never sent)
    quote_fields: dict[str, dict[str, str]] = field(default_factory=dict)
    write: buffer.WriteBatch | None = None

    @property
    def quotes(self) -> dict[str, dict]:
        """symbol -> the quote of its market_data_received event."""
        return {symbol: quote_event(fields) for symbol, fields in self.quote_fields.items()}

    def events(self) -> list[tuple[str, dict]]:
        """(event type, data) in order: closed candles, then one quote per touched symbol."""
        out = [
            (
                EventType.CANDLE_CLOSED.value,
                {"symbol": c.symbol, "interval": c.interval, "candle": c.to_dict()},
            )
            for c in self.closed
        ]
        out += [
            (EventType.MARKET_DATA_RECEIVED.value, {"symbol": symbol, "quote": quote})
            for symbol, quote in self.quotes.items()
        ]
        return out


def quote_event(fields: dict[str, str]) -> dict[str, str]:
    return {name: fields[name] for name in QUOTE_EVENT_FIELDS}


def _epoch(now) -> float:
    if isinstance(now, dt.datetime):
        if now.utcoffset() is None:
            raise ValueError(f"now={now!r} has no time zone: pass the feed's aware clock.")
        return now.timestamp()
    return float(now)


def prepare(batch, *, state: CollectorState, now) -> CollectResult:
    """Validate + aggregate + advance to `now`; the Redis writes encoded, not sent."""
    now_s = _epoch(now)
    validator, agg = state.validator, state.aggregator
    check, add = validator.check, agg.add
    result = CollectResult()
    closed = result.closed
    accepted = rejected = 0
    last = state.last_tick if state.last_tick is not None else float("-inf")
    # The two fast paths (TickValidator.check, CandleAggregator.add) inlined: a regular print
    # of a symbol whose limits/grid are cached and whose bars are all open on its second is
    # folded into the symbol's accumulator here. Anything else takes check() then add().
    fast, accs, quotes, touched = validator._fast, agg._acc, agg.raw_quotes, agg._touched_quotes
    lo, hi, latest, span_day = validator.span(now_s, agg)
    utc, decimal = dt.UTC, Decimal
    for tick in batch:
        symbol = tick.symbol
        entry = fast.get(symbol)
        if entry is not None and entry[1] == span_day:
            moment = tick.time
            if moment.tzinfo is utc:
                t = moment.timestamp()
                volume = tick.volume
                if (
                    lo <= t < hi
                    and t <= latest
                    and type(volume) is int
                    and volume >= 0
                    and quotes.get(symbol) is entry[0]
                ):
                    price = tick.price
                    kind = type(price)
                    if kind is int:
                        won = price
                    elif kind is decimal and price.is_finite():
                        won = int(price)
                        if won != price:
                            won = 0
                    else:
                        won = 0
                    if entry[2] <= won <= entry[3]:
                        for end, size in entry[4]:
                            if won < end:
                                if won % size:
                                    won = 0
                                break
                        if won:
                            accepted += 1
                            if t > last:
                                last = t
                            second = int(t)
                            acc = accs.get(symbol)
                            if acc is not None and acc[0] <= second < acc[1]:
                                touched[symbol] = None
                                acc[2] += 1
                                acc[3] += volume
                                if won > acc[4]:
                                    acc[4] = won
                                if won < acc[5]:
                                    acc[5] = won
                                if t >= acc[7]:
                                    acc[6] = won
                                    acc[7] = t
                            else:
                                found = add(symbol, t, won, volume, REGULAR, second)
                                if found:
                                    closed.extend(found)
                            continue
        good = check(tick, now_s, agg)
        if good is None:
            rejected += 1
            continue
        t = good[0]
        found = add(symbol, *good)
        if found:
            closed.extend(found)
        accepted += 1
        if t > last:
            last = t
    state.accepted += accepted
    if last != float("-inf"):
        state.last_tick = last
    result.accepted = accepted
    result.rejected = rejected
    closed.extend(agg.advance(now_s))
    lists, quotes = agg.drain()
    result.write = write = buffer.build(lists, quotes)
    result.quote_fields = write.quote_fields
    return result


def collect(batch, *, state: CollectorState, redis, now) -> CollectResult:
    """One batch into Redis in one round trip (sync redis client). Returns stats and events."""
    result = prepare(batch, state=state, now=now)
    buffer.write(redis, result.write)
    return result


async def acollect(batch, *, state: CollectorState, redis, now) -> CollectResult:
    """collect() with a redis.asyncio client."""
    result = prepare(batch, state=state, now=now)
    await buffer.awrite(redis, result.write)
    return result


# --- warm-up ---------------------------------------------------------------------------------
def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def warm_up(state: CollectorState, client, now) -> dict:
    """Continue from Redis after a restart: day quotes from market:{symbol}, open candles from
    the list heads. A head whose bucket has not ended is the open candle and goes on; one that
    ended within the last day is queued again on the stream (the archiver's upsert is
    idempotent; we cannot tell whether it was queued before the restart), without events."""
    agg = state.aggregator
    now_s = _epoch(now)
    symbols = sorted(state.validator.symbols)
    pipe = client.pipeline(transaction=False)
    for symbol in symbols:
        pipe.hgetall(quote_key(symbol))
        for interval in agg.intervals:
            pipe.lrange(candles_key(symbol, interval), 0, 1)
    replies = await pipe.execute()
    per = 1 + len(agg.intervals)
    restored = requeued = 0
    requeue: list[tuple[str, str]] = []
    for n, symbol in enumerate(symbols):
        raw, heads = replies[n * per], replies[n * per + 1 : (n + 1) * per]
        quote = buffer.parse_quote(raw)
        last_t = None
        if quote and quote.get("timestamp"):
            last_t = quote["timestamp"].timestamp()
            q = DayQuote(kst_day(last_t), _won(quote.get("prev_close")))
            q.open, q.high, q.low = (_won(quote.get(k)) for k in ("open", "high", "low"))
            q.close = q.regular_close = _won(quote.get("close"))
            q.volume = quote.get("volume") or 0
            q.last_t = last_t
            agg.quotes[symbol] = q
        for interval, rows in zip(agg.intervals, heads, strict=True):
            if not rows:
                continue
            head = Candle.from_json(symbol, rows[0])
            start = int(head.time.timestamp())
            end = agg.bucket_end(interval, start)
            if interval == "1d" and symbol in agg.quotes:
                q = agg.quotes[symbol]
                if kst_day(start) == q.day:
                    q.regular_close = int(head.close)
            if now_s < end + agg.close_grace:
                agg.restore(symbol, head, last_t=last_t)
                restored += 1
            else:
                agg.restore(symbol, head, last_t=last_t)
                bar = agg.bars[symbol][agg.intervals.index(interval)]
                agg.bars[symbol][agg.intervals.index(interval)] = None
                agg.closed_start[symbol][agg.intervals.index(interval)] = start
                if end >= now_s - 86400:
                    requeue.append((bar.json(interval), symbol))
    if requeue:
        pipe = client.pipeline(transaction=False)
        lines = [buffer.stream_line(text, symbol) for text, symbol in requeue]
        for pack in buffer.stream_packs(lines):
            pipe.xadd(CANDLE_STREAM, {buffer.STREAM_PACK_FIELD: pack})
        await pipe.execute()
        requeued = len(requeue)
    return {"candles_restored": restored, "candles_requeued": requeued}


def _won(value) -> int | None:
    return None if value is None else int(value)


# --- the engine ------------------------------------------------------------------------------
class CollectorEngine(Engine):
    """Feed -> prepare() -> one Redis round trip per batch; events from a background task.

    Group commit: a batch is every tick the feed has produced by now, up to
    COLLECTOR_BATCH_MAX_TICKS (20,000): at a low rate each tick is written at once (fresh
    quotes), at a high rate more ticks coalesce per key (each key is written once per batch).
    When the queue is empty the engine waits up to COLLECTOR_BATCH_MAX_MS for the first tick,
    then writes an empty batch (the clock: illiquid symbols' candles close on time).
    Batch N+1 is prepared while batch N's write is in flight (the writes stay in order: N+1 is
    sent only after N's reply).

    Events never hold ingestion back: a written batch hands its events to a coalescing buffer
    (the latest quote per symbol; closed candles in order, at most COLLECTOR_EVENT_QUEUE_MAX
    (100,000) waiting, the ones beyond are counted in `candle_events_dropped`) that a background
    task sends with qbsite.events.apublish_many (the Pub/Sub mirrors in one round trip), then
    the market.update group sends. Quotes keep the per-symbol throttle.
    """

    name = "collector"
    has_loop = True

    def __init__(self, feed=None) -> None:
        super().__init__()
        self.feed = feed
        self.state: CollectorState | None = None
        self.redis = None
        self.max_ticks = int(_setting("COLLECTOR_BATCH_MAX_TICKS", 20_000))
        self.max_wait = float(_setting("COLLECTOR_BATCH_MAX_MS", 20)) / 1000
        self.quote_interval = float(_setting("MARKET_EVENT_MIN_INTERVAL_MS", 250)) / 1000
        self.max_candle_events = int(_setting("COLLECTOR_EVENT_QUEUE_MAX", 100_000))
        self._sent_at: dict[str, float] = {}
        self._pending: dict[str, dict] = {}  # symbol -> latest quote fields not sent yet
        self._candles: collections.deque = collections.deque()  # closed candles to announce
        self._wake = asyncio.Event()
        self._closing = False
        self.events_published = 0
        self.candle_events_dropped = 0
        self.batches_written = 0
        self.written_at: float | None = None
        self.warm: dict = {}

    async def setup(self) -> None:
        # The XKRX calendar (pandas, seconds) is built off the event loop: the other engines of
        # the process go on meanwhile.
        await asyncio.to_thread(krx._calendar)
        self.redis = redis.asyncio.Redis.from_url(settings.REDIS_URL)
        self.state = await sync_to_async(CollectorState.create)()
        if self.feed is None and _setting("COLLECTOR_FEED", "simulated") == "simulated":
            # The simulated market goes on from where Redis says it was: warm up first, on the
            # clock the feed will start at, then start its walks from the restored quotes (a
            # walk started elsewhere would print outside the band the day's quotes were in).
            from marketdata.feeds.simulated import default_start

            start = default_start(dt.datetime.now(dt.UTC))
            self.warm = await warm_up(self.state, self.redis, start)
            self.feed = self._make_feed(start=start)
        else:
            if self.feed is None:
                self.feed = self._make_feed()
            self.warm = await warm_up(self.state, self.redis, self.feed.now())
        self._seed_prev_closes()

    def _make_feed(self, *, start: dt.datetime | None = None):
        from marketdata.feeds import make_feed

        spec = _setting("COLLECTOR_FEED", "simulated")
        options = {"speed": _setting("COLLECTOR_SPEED", "1")}
        if spec == "simulated":
            options["seed"] = _setting("COLLECTOR_SIM_SEED", None)
            options["start"] = start
            agg = self.state.aggregator
            day = kst_day(start.timestamp()) if start is not None else None
            symbols, prices = {}, {}
            for symbol in self.state.validator.symbols:
                q = agg.quotes.get(symbol)
                if q is None:
                    symbols[symbol] = None
                elif q.day == day and q.prev_close:
                    # The session under way: its base stays, the walk goes on from the last.
                    symbols[symbol] = q.prev_close
                    prices[symbol] = q.close
                else:
                    symbols[symbol] = q.regular_close or q.close
            options["prices"] = prices
            options["instruments"] = {
                s: info.instrument for s, info in self.state.validator.symbols.items()
            }
            return make_feed(spec, symbols=symbols, **options)
        return make_feed(spec, **options)

    def _seed_prev_closes(self) -> None:
        """The feed's reference prices are the band's base where the state has none."""
        agg = self.state.aggregator
        day = kst_day(self.feed.now().timestamp())
        for symbol, price in self.feed.reference_prices().items():
            if symbol in self.state.validator.symbols:
                agg.set_prev_close(symbol, day, int(price))

    async def take(self, queue: asyncio.Queue) -> tuple[list, bool]:
        """(the ticks available now, up to max_ticks; feed finished). Waits max_wait at most
        for the first one."""
        batch: list = []
        try:
            item = await asyncio.wait_for(queue.get(), self.max_wait)
        except TimeoutError:
            return batch, False
        while True:
            if item is None:
                return batch, True
            batch.extend(item)
            if len(batch) >= self.max_ticks:
                return batch, False
            try:
                item = queue.get_nowait()
            except asyncio.QueueEmpty:
                return batch, False

    async def loop(self) -> None:
        queue: asyncio.Queue = asyncio.Queue(maxsize=64)
        producer = asyncio.create_task(self._produce(queue))
        publisher = asyncio.create_task(self._publisher())
        in_flight: tuple[asyncio.Task, CollectResult] | None = None
        done = False
        try:
            while not self.stopping.is_set() and not done:
                if in_flight is not None and queue.empty():
                    # Nothing to prepare meanwhile: finish the write now, so that its events
                    # go out at once instead of after the next wait for a tick (up to
                    # COLLECTOR_BATCH_MAX_MS: at a low tick rate, that wait was the latency).
                    await self._finish(*in_flight)
                    in_flight = None
                batch, done = await self.take(queue)
                try:
                    result = prepare(batch, state=self.state, now=self.feed.now())
                except Exception:
                    self.log.exception("Collector batch of %d ticks failed", len(batch))
                    continue
                if in_flight is not None:
                    await self._finish(*in_flight)
                write = asyncio.create_task(buffer.awrite(self.redis, result.write))
                in_flight = (write, result)
                await asyncio.sleep(0)  # let the write go out before the next prepare()
            if in_flight is not None:
                await self._finish(*in_flight)
            self.written_at = time.monotonic()  # the last write is in (bench: ingestion time)
            # Let the publisher finish the send it is in (cancelling it there would lose the
            # events it has taken), then stop it.
            self._closing = True
            self._wake.set()
            await publisher
        finally:
            if in_flight is not None and not in_flight[0].done():
                in_flight[0].cancel()
            producer.cancel()
            publisher.cancel()
            for task in (producer, publisher):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        # What the feed gave is announced before the loop returns (held quotes included).
        await self.flush_events(force=True)

    async def _finish(self, write: asyncio.Task, result: CollectResult) -> None:
        try:
            await write
        except Exception:
            self.log.exception("Collector write of %d ticks failed", result.accepted)
            return
        self.batches_written += 1
        self.offer(result)

    async def _produce(self, queue: asyncio.Queue) -> None:
        try:
            async for batch in self.feed.batches():
                await queue.put(batch)
        finally:
            await queue.put(None)

    async def step(self, batch) -> CollectResult | None:
        """One batch (or an empty one: the clock) through collect() and the events, sent
        before returning. Errors are logged, not raised: the engine goes on."""
        try:
            result = await acollect(batch, state=self.state, redis=self.redis, now=self.feed.now())
            await self.publish(result)
            return result
        except Exception:
            self.log.exception("Collector batch of %d ticks failed", len(batch))
            return None

    # --- events ----------------------------------------------------------------------------
    def offer(self, result: CollectResult) -> None:
        """Hand a written batch's events to the publisher (never blocks, never raises)."""
        room = self.max_candle_events - len(self._candles)
        closed = result.closed
        if len(closed) > room:
            self.candle_events_dropped += len(closed) - max(room, 0)
            closed = closed[: max(room, 0)]
        self._candles.extend(closed)
        self._pending.update(result.quote_fields)
        if closed or result.quote_fields:
            self._wake.set()

    async def publish(self, result: CollectResult) -> None:
        """offer() then send what is due now."""
        self.offer(result)
        await self.flush_events()

    async def flush_events(self, *, force: bool = False) -> int:
        """Send the queued candle_closed events and the quotes whose throttle interval is over
        (all held quotes with force): Pub/Sub in one round trip, then the group sends."""
        candles = []
        while self._candles:
            candles.append(self._candles.popleft())
        now = time.monotonic()
        interval, sent_at, pending = self.quote_interval, self._sent_at, self._pending
        if force:
            due = list(pending)
        else:
            due = [s for s in pending if now - sent_at.get(s, -1e9) >= interval]
        events = []
        updates = []
        for candle in candles:
            data = {
                "symbol": candle.symbol,
                "interval": candle.interval,
                "candle": candle.to_dict(),
            }
            events.append((EventType.CANDLE_CLOSED, data))
            updates.append((candle.symbol, "candle", data))
        for symbol in due:
            data = {"symbol": symbol, "quote": quote_event(pending.pop(symbol))}
            sent_at[symbol] = now
            events.append((EventType.MARKET_DATA_RECEIVED, data))
            updates.append((symbol, "quote", data))
        if not events:
            return 0
        await apublish_many(events, source=SOURCE)
        layer = get_channel_layer()
        if layer is not None:
            for symbol, kind, data in updates:
                await layer.group_send(
                    market_stream_group(symbol),
                    {"type": "market.update", "kind": kind, "data": data},
                )
        self.events_published += len(events)
        return len(events)

    async def _publisher(self) -> None:
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            if self._closing:
                return
            try:
                await self.flush_events()
            except Exception:
                self.log.exception("Collector events could not be published")
                await asyncio.sleep(1)  # Redis away: the quotes coalesce meanwhile
            if self._pending and not self._wake.is_set() and not self._closing:
                # Held quotes: come back when the earliest throttle interval is over, or at
                # once when a batch brings closed candles (they are never held back).
                now = time.monotonic()
                sent_at, interval = self._sent_at, self.quote_interval
                wait = min(sent_at.get(s, -1e9) + interval - now for s in self._pending)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), max(wait, 0.005))
                self._wake.set()

    def stats(self) -> dict:
        figures = self.state.stats() if self.state else {}
        figures["events_published"] = self.events_published
        figures["quotes_held_back"] = len(self._pending)
        figures["candle_events_waiting"] = len(self._candles)
        figures["candle_events_dropped"] = self.candle_events_dropped
        figures["batches_written"] = self.batches_written
        return figures

    async def stop(self) -> None:
        if self.feed is not None:
            await self.feed.close()
        if self.redis is not None:
            await self.redis.aclose()
