"""The indicators engine on real Redis, the real Redis channel layer and real PostgreSQL.

Pub/Sub channels are shared by every Redis database number (other test runs publish on them
too), so tests pick out their own indicators_updated events by correlation_id.
"""

import asyncio
import collections
import datetime as dt
import json
import logging
import time
import uuid
from decimal import Decimal

import pytest
import redis
import redis.asyncio
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import connections

from marketdata.engines.indicators import (
    IndicatorsEngine,
    _database_closes,
    indicators_on_candle_closed,
    parse_candle_closed,
)
from marketdata.indicators import IndicatorState
from marketdata.keys import candles_key, indicators_key
from marketdata.models import MarketData, Stock
from marketdata.types import Candle
from ops.logging import SystemLogHandler
from ops.models import SystemLog
from qbsite import events
from qbsite.events import EventType

WAIT = 10  # seconds before a missing message fails a test (never a timing assertion)
SYMBOL = "005930"
# 09:00 KST on a Monday: the session open.
OPEN = dt.datetime(2026, 1, 5, 0, 0, tzinfo=dt.UTC)
MINUTE = dt.timedelta(minutes=1)
HASH_FIELDS = {"sma_20", "rsi", "macd", "macd_signal", "macd_hist"}
META_FIELDS = {"interval", "time", "updated_at"}

# Reads committed rows from another thread (sync_to_async): these need real commits.
committed = pytest.mark.django_db(transaction=True)


def candle(index: int, close, *, symbol: str = SYMBOL, interval: str = "1m", start=OPEN):
    """The index-th candle of a series (one interval apart), a plain OHLC around `close`."""
    step = {"1m": MINUTE, "5m": 5 * MINUTE, "1d": dt.timedelta(days=1)}[interval]
    price = Decimal(close)
    return Candle(
        symbol=symbol,
        interval=interval,
        time=start + index * step,
        open=price,
        high=price + 10,
        low=price - 10,
        close=price,
        volume=100 + index,
    )


def series(closes, **kwargs) -> list[Candle]:
    return [candle(i, c, **kwargs) for i, c in enumerate(closes)]


def walk(count: int, seed: int = 1) -> list[int]:
    """Whole-won closes of a small deterministic walk."""
    price, out = 70_000, []
    for i in range(count):
        price += ((i * 7919 + seed * 104729) % 21 - 10) * 10
        out.append(price)
    return out


def envelope(c: Candle, correlation_id=None) -> dict:
    return events.build_envelope(
        EventType.CANDLE_CLOSED,
        {"symbol": c.symbol, "interval": c.interval, "candle": c.to_dict()},
        source="collector",
        correlation_id=correlation_id,
    )


def push_list(client, candles: list[Candle]) -> None:
    """The collector's list: newest first (so pushed oldest first with LPUSH)."""
    for c in candles:
        client.lpush(candles_key(c.symbol, c.interval), c.to_json())


def expected(closes) -> IndicatorState:
    state = IndicatorState()
    state.warm(float(c) for c in closes)
    return state


def decoded_hash(client, symbol=SYMBOL) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in client.hgetall(indicators_key(symbol)).items()}


def market_rows(candles: list[Candle]) -> None:
    MarketData.objects.bulk_create(
        MarketData(
            symbol=c.symbol,
            interval=c.interval,
            time=c.time,
            open=c.open,
            high=c.high,
            low=c.low,
            close=c.close,
            volume=c.volume,
        )
        for c in candles
    )


@pytest.fixture
async def aredis(redis_client, settings):
    """An asyncio client on the test Redis database (flushed by redis_client)."""
    client = redis.asyncio.Redis.from_url(settings.REDIS_URL)
    yield client
    await client.aclose()
    # The engine reads PostgreSQL on sync_to_async's thread: close that thread's connection,
    # or the test database cannot be dropped at the end of the run.
    await sync_to_async(connections.close_all)()


@pytest.fixture
def subscriber(settings, redis_client):
    client = redis.Redis.from_url(settings.REDIS_URL)
    pubsub = client.pubsub()
    pubsub.subscribe(events.pubsub_channel(EventType.INDICATORS_UPDATED))
    assert pubsub.get_message(timeout=WAIT)["type"] == "subscribe"
    yield pubsub
    pubsub.close()
    client.close()


def published(pubsub, correlation_id: str) -> dict:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
        if message and message["type"] == "message":
            event = json.loads(message["data"])
            if event["correlation_id"] == correlation_id:
                return event
    raise AssertionError(f"no indicators_updated with correlation_id {correlation_id}")


# --- the plain function ----------------------------------------------------------------------


async def test_a_ramp_gives_the_hand_checked_values(aredis):
    """Closes 10,010, 10,020, ... 10,400: every EMA of a ramp seeded with its SMA lags it by
    exactly (N - 1) / 2 steps, so MACD = 10 * (12.5 - 5.5) = 70, its signal 70, histogram 0;
    SMA 20 is the middle of the last 20; RSI is 100 (no loss)."""
    states = {(SYMBOL, "1m"): IndicatorState()}  # a fresh state starts from the first candle
    got = [
        await indicators_on_candle_closed(c, states=states, redis=aredis)
        for c in series(range(10_010, 10_401, 10))
    ]
    assert got[18].sma_20 is None and got[19].sma_20 == pytest.approx(10_105)
    assert got[13].rsi is None and got[14].rsi == 100.0
    assert got[24].macd is None and got[25].macd == pytest.approx(70)
    assert got[32].macd_signal is None
    last = got[-1]
    assert last.sma_20 == pytest.approx(10_305)
    assert last.rsi == 100.0
    assert last.macd == pytest.approx(70) and last.macd_signal == pytest.approx(70)
    assert last.macd_hist == pytest.approx(0, abs=1e-9)


async def test_wilder_rsi_by_hand(aredis):
    # 14 changes: seven +20 and seven -10 -> average gain 10, loss 5: RSI 66.67. Then 0:
    # both become 13/14 of that (130/14, 65/14), RSI stays. Then -15: gain 13*130/196,
    # loss (13*65 + 14*15)/196: RSI = 100 * 1690 / (1690 + 1055).
    closes = [1000]
    for i in range(14):
        closes.append(closes[-1] + (20 if i % 2 == 0 else -10))
    closes += [closes[-1], closes[-1] - 15]
    states = {(SYMBOL, "1m"): IndicatorState()}
    got = [
        await indicators_on_candle_closed(c, states=states, redis=aredis) for c in series(closes)
    ]
    assert got[14].rsi == pytest.approx(200 / 3)
    assert got[15].rsi == pytest.approx(200 / 3)
    assert got[16].rsi == pytest.approx(100 * 1690 / 2745)


async def test_the_hash_layout_is_exactly_the_contract(aredis, redis_client):
    states = {(SYMBOL, "1m"): IndicatorState()}
    candles = series(walk(40))
    for c in candles[:15]:
        await indicators_on_candle_closed(c, states=states, redis=aredis)
    # Warming up: only RSI is defined; the others are absent, not empty strings.
    during = decoded_hash(redis_client)
    assert set(during) == {"rsi"} | META_FIELDS

    for c in candles[15:]:
        values = await indicators_on_candle_closed(c, states=states, redis=aredis)
    assert redis_client.type(indicators_key(SYMBOL)) == b"hash"
    stored = decoded_hash(redis_client)
    assert set(stored) == HASH_FIELDS | META_FIELDS
    for field in HASH_FIELDS:
        assert float(stored[field]) == getattr(values, field)  # repr: reads back exactly
    assert stored["interval"] == "1m"
    assert stored["time"] == "2026-01-05T00:39:00Z" == candles[-1].to_dict()["timestamp"]
    updated_at = dt.datetime.fromisoformat(stored["updated_at"])
    assert stored["updated_at"].endswith("Z") and updated_at.utcoffset() == dt.timedelta(0)
    # Nothing else was written (channel layer keys aside).
    assert [k for k in redis_client.keys("*") if not k.startswith(b"asgi")] == [
        indicators_key(SYMBOL).encode()
    ]


async def test_only_the_configured_interval_is_written_to_the_contract_key(
    aredis, redis_client, settings, subscriber
):
    settings.INDICATOR_INTERVAL = "5m"
    states = {(SYMBOL, "1m"): IndicatorState(), (SYMBOL, "5m"): IndicatorState()}
    one_minute = await indicators_on_candle_closed(
        candle(0, 70_000), states=states, redis=aredis, correlation_id="ind-1m"
    )
    assert one_minute is not None  # computed and published...
    assert redis_client.exists(indicators_key(SYMBOL)) == 0  # ...but not written
    assert published(subscriber, "ind-1m")["data"]["interval"] == "1m"

    await indicators_on_candle_closed(candle(0, 70_000, interval="5m"), states=states, redis=aredis)
    assert decoded_hash(redis_client)["interval"] == "5m"


async def test_duplicates_and_out_of_order_candles_are_ignored(aredis, redis_client):
    candles = series(walk(40))
    states = {(SYMBOL, "1m"): IndicatorState()}
    counts = collections.Counter()
    for c in candles[:35]:
        await indicators_on_candle_closed(c, states=states, redis=aredis, counts=counts)
    before = decoded_hash(redis_client)

    assert await indicators_on_candle_closed(candles[34], states=states, redis=aredis) is None
    assert await indicators_on_candle_closed(candles[20], states=states, redis=aredis) is None
    replay = candle(34, 99_999)  # same time, other close: still the same candle
    assert await indicators_on_candle_closed(replay, states=states, redis=aredis) is None
    assert decoded_hash(redis_client) == before  # not even updated_at moved
    assert states[(SYMBOL, "1m")].count == 35

    for c in candles[35:]:
        values = await indicators_on_candle_closed(c, states=states, redis=aredis, counts=counts)
    assert values == expected(walk(40)).values  # each close counted once
    assert counts == {"applied": 40}


async def test_a_missed_candle_re_warms_from_the_redis_list(aredis, redis_client, settings):
    settings.INDICATOR_WARMUP_CANDLES = 50
    closes = walk(70)
    candles = series(closes)
    states = {(SYMBOL, "1m"): IndicatorState()}
    for c in candles[:40]:
        await indicators_on_candle_closed(c, states=states, redis=aredis)
    # The collector closed 40..69 into its list (and the open head 70), but the events for
    # 40..68 never arrived.
    push_list(redis_client, [*candles, candle(70, 1)])
    counts = collections.Counter()
    values = await indicators_on_candle_closed(
        candles[69], states=states, redis=aredis, counts=counts
    )
    assert counts == {"rewarmed": 1, "applied": 1}
    # The last 50 closed candles before 69 from the list (19..68), then 69.
    assert values == expected(closes[19:70]).values
    assert states[(SYMBOL, "1m")].last_time == candles[69].time
    assert states[(SYMBOL, "1m")].count == 51


async def test_a_session_break_in_the_list_is_not_a_gap(aredis, redis_client):
    # 15:19 .. 15:29 KST on Monday, then 09:00 .. on Tuesday: consecutive in the list.
    monday = [candle(i, c, start=OPEN + dt.timedelta(minutes=379)) for i, c in enumerate(walk(11))]
    tuesday = [candle(i, c, start=OPEN + dt.timedelta(days=1)) for i, c in enumerate(walk(3, 2))]
    push_list(redis_client, monday + tuesday)
    states = {(SYMBOL, "1m"): IndicatorState()}
    counts = collections.Counter()
    for c in monday + tuesday:
        await indicators_on_candle_closed(c, states=states, redis=aredis, counts=counts)
    assert counts == {"applied": 14}


@committed
async def test_a_symbol_without_state_is_warmed_from_redis_then_postgresql(
    aredis, redis_client, settings
):
    settings.INDICATOR_WARMUP_CANDLES = 60
    closes = walk(100)
    candles = series(closes)
    # PostgreSQL has 0..89 (the archiver lags), Redis 80..98 and the new candle 99.
    await sync_to_async(market_rows)(candles[:90])
    push_list(redis_client, candles[80:])
    states = {}
    values = await indicators_on_candle_closed(candles[99], states=states, redis=aredis)
    # 60 candles before 99: 40..79 from PostgreSQL (older than Redis' oldest), 80..98 from Redis.
    assert values == expected(closes[39:100]).values


# --- warm-up at start (setup) ---------------------------------------------------------------


@committed
async def test_setup_warms_from_redis_lists_and_skips_the_open_head(aredis, redis_client, settings):
    settings.INDICATOR_WARMUP_CANDLES = 50
    now = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    start = now - 60 * MINUTE
    closes = walk(61)
    candles = [candle(i, c, start=start) for i, c in enumerate(closes)]  # the last is open
    push_list(redis_client, candles)
    # PostgreSQL disagrees: it must not be read when Redis has enough.
    await sync_to_async(market_rows)([candle(i, 50_000, start=start) for i in range(60)])
    engine = IndicatorsEngine(redis_client=aredis)
    await engine.setup()
    state = engine.states[(SYMBOL, "1m")]
    assert state.values == expected(closes[10:60]).values
    assert state.last_time == candles[59].time
    assert engine.stats()["states"] == 1


@committed
async def test_setup_falls_back_to_postgresql_for_known_stocks(aredis, redis_client, settings):
    settings.INDICATOR_WARMUP_CANDLES = 40
    await sync_to_async(Stock.objects.create)(symbol="000660", name="SK hynix", market="KOSPI")
    closes = walk(45, 3)
    rows = series(closes, symbol="000660")
    await sync_to_async(market_rows)(rows)
    await sync_to_async(market_rows)(series(walk(45), symbol="035720"))  # not a known stock
    await sync_to_async(Stock.objects.create)(symbol="373220", name="LG ES", market="KOSPI")
    engine = IndicatorsEngine(redis_client=aredis)
    await engine.setup()
    assert set(engine.states) == {("000660", "1m")}  # no candles anywhere: no state
    assert engine.states[("000660", "1m")].values == expected(closes[5:]).values
    assert engine.states[("000660", "1m")].last_time == rows[-1].time


def test_postgresql_warm_up_is_one_query_for_many_symbols(db, django_assert_num_queries):
    symbols = [f"{n:06d}" for n in range(1, 31)]
    market_rows([c for s in symbols for c in series(walk(40), symbol=s)])
    wanted = {s: (None, 25) for s in symbols}
    wanted["000001"] = (OPEN + 10 * MINUTE, 25)  # only 10 candles are older than that
    with django_assert_num_queries(1):
        found = _database_closes(wanted, "1m")
    assert set(found) == set(symbols)
    assert list(found["000002"].values()) == [float(c) for c in walk(40)[15:]][::-1]
    assert sorted(found["000001"]) == [OPEN + i * MINUTE for i in range(10)]


# --- the engine: bad payloads and a real channel-layer message -------------------------------


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        ("not a dict", "not an envelope"),
        ({"event_type": "heartbeat", "data": {}}, "not 'candle_closed'"),
        ({"event_type": "candle_closed", "data": None}, "no data dict"),
        ({"event_type": "candle_closed", "data": {"symbol": "xx", "interval": "1m"}}, "symbol"),
        ({"event_type": "candle_closed", "data": {"symbol": SYMBOL, "interval": "2m"}}, "2m"),
        ({"event_type": "candle_closed", "data": {"symbol": SYMBOL, "interval": "1m"}}, "candle"),
    ],
)
async def test_bad_envelopes_are_rejected_with_the_reason(event, reason, caplog, aredis):
    engine = IndicatorsEngine(redis_client=aredis)
    with caplog.at_level(logging.WARNING, logger="qb.indicators"):
        await engine.handle(event)  # never raises
    assert engine.counts == {"rejected": 1}
    [record] = [r for r in caplog.records if r.name == "qb.indicators"]
    assert reason in record.getMessage()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"close": -5}, "close"),
        ({"close": "abc"}, "not a valid candle"),
        ({"timestamp": "yesterday"}, "not a valid candle"),
        ({"timestamp": "2026-01-05T00:00:00"}, "no time zone"),
        ({"interval": "5m"}, "differs"),
        ({"volume": None}, "not a valid candle"),
    ],
)
def test_bad_candles_are_refused_naming_the_field(change, reason):
    good = envelope(candle(0, 70_000))
    assert parse_candle_closed(good) == candle(0, 70_000)
    good["data"]["candle"].update(change)
    with pytest.raises(Exception, match=reason) as info:
        parse_candle_closed(good)
    assert info.value.code == "candle_payload"


@committed
async def test_a_bad_payload_lands_in_system_logs(aredis):
    engine = IndicatorsEngine(redis_client=aredis)
    bad = envelope(candle(0, 70_000))
    bad["data"]["candle"]["close"] = 0
    await engine.handle(bad)
    [handler] = [h for h in logging.getLogger().handlers if isinstance(h, SystemLogHandler)]
    assert await sync_to_async(handler.flush)(timeout=30)
    rows = await sync_to_async(list)(SystemLog.objects.filter(component="qb.indicators"))
    [row] = rows
    assert row.level == "WARNING"
    assert "data.candle.close 0 is not a positive price" in row.message
    assert "005930" in row.metadata["event"]


async def test_other_intervals_are_ignored_by_the_engine(aredis, redis_client):
    engine = IndicatorsEngine(redis_client=aredis)
    await engine.handle(envelope(candle(0, 70_000, interval="5m")))
    assert engine.counts == {"other_interval": 1}
    assert engine.states == {}


@committed
async def test_the_engine_handles_a_real_channel_layer_message(
    aredis, redis_client, subscriber, settings
):
    settings.INDICATOR_WARMUP_CANDLES = 50
    closes = walk(61)
    candles = series(closes)
    push_list(redis_client, candles[:60])  # closed candles 0..59 from before the restart
    engine = IndicatorsEngine(redis_client=aredis)
    await engine.setup()

    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(events.group_name(EventType.CANDLE_CLOSED), channel)
    correlation_id = f"test-{uuid.uuid4()}"
    push_list(redis_client, candles[60:])  # the collector's list update, then its event
    new = candles[60]
    await events.apublish(
        EventType.CANDLE_CLOSED,
        {"symbol": SYMBOL, "interval": "1m", "candle": new.to_dict()},
        source="collector",
        correlation_id=correlation_id,
    )
    message = await asyncio.wait_for(layer.receive(channel), WAIT)
    assert message["type"] == "event.message"
    await engine.handle(message["event"])

    want = expected(closes[10:61]).values
    assert engine.counts == {"applied": 1}  # it followed 59: no re-warm
    stored = decoded_hash(redis_client)
    assert {f: float(stored[f]) for f in HASH_FIELDS} == want._asdict()
    assert stored["time"] == "2026-01-05T01:00:00Z"

    event = await sync_to_async(published)(subscriber, correlation_id)
    assert event["event_type"] == "indicators_updated"
    assert event["source"] == "indicators"
    assert event["data"] == {
        "symbol": SYMBOL,
        "interval": "1m",
        "time": "2026-01-05T01:00:00Z",
        "values": want._asdict(),
    }
    # The same message delivered again changes nothing.
    await engine.handle(message["event"])
    assert engine.counts == {"applied": 1, "duplicate": 1}
