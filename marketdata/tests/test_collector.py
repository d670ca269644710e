"""The collector: collect() once on a mixed batch, the events, and the engine end to end."""

import asyncio
import datetime as dt
import json
import logging
from decimal import Decimal

import pytest
import redis.asyncio
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import connections

from marketdata import buffer, krx
from marketdata.engines.collector import CollectorEngine, CollectorState, collect, prepare
from marketdata.feeds.csv_replay import CSVReplayFeed
from marketdata.keys import market_stream_group
from marketdata.models import Stock
from marketdata.types import Tick
from marketdata.validation import SymbolInfo
from ops.models import SystemLog
from qbsite import events

SEOUL = krx.SEOUL
SYMBOLS = {"005930": SymbolInfo("stock", "KOSPI"), "000660": SymbolInfo("stock", "KOSPI")}


def kst(hour, minute, second=0) -> dt.datetime:
    return dt.datetime(2026, 3, 4, hour, minute, second, tzinfo=SEOUL)


def tick(symbol, when, price, volume=1):
    return Tick(symbol, when, Decimal(price), volume)


@pytest.mark.django_db(transaction=True)
def test_collect_keeps_the_good_ticks_and_logs_the_bad_ones(redis_client):
    state = CollectorState.create(SYMBOLS, intervals=("1m", "1d"))
    batch = [
        tick("005930", kst(9, 0, 1), 70000, 5),
        tick("005930", kst(9, 0, 2), 70050, 5),  # off the grid
        tick("999999", kst(9, 0, 2), 1000, 5),  # unknown
        tick("000660", kst(9, 0, 3), 180000, 2),
        tick("005930", kst(9, 1, 0), 70100, 1),
    ]
    result = collect(batch, state=state, redis=redis_client, now=kst(9, 1, 0))
    assert (result.accepted, result.rejected) == (3, 2)
    assert [(c.symbol, c.interval, c.close) for c in result.closed] == [("005930", "1m", 70000)]
    assert redis_client.hget("market:005930", "volume") == b"6"
    assert redis_client.hget("market:000660", "close") == b"180000"
    assert not redis_client.exists("market:999999")
    assert redis_client.llen("candles:005930:1m") == 2
    stats = state.stats()
    assert stats["ticks_accepted"] == 3
    assert stats["ticks_rejected"] == {"price_off_tick_grid": 1, "unknown_symbol": 1}
    assert stats["candles_closed"] == 1
    assert stats["last_tick_time"] == "2026-03-04T00:01:00+00:00"

    handler = next(
        h for h in logging.getLogger().handlers if type(h).__name__ == "SystemLogHandler"
    )
    assert handler.flush(timeout=30)
    rows = SystemLog.objects.filter(component="qb.collector", level="WARNING")
    reasons = {r.metadata["reason"]: r for r in rows if "reason" in r.metadata}
    assert set(reasons) >= {"price_off_tick_grid", "unknown_symbol"}
    assert reasons["unknown_symbol"].metadata["symbol"] == "999999"
    assert "'999999' is not in stocks_metadata" in reasons["unknown_symbol"].message
    # The events collect() hands to the engine: the closed candle, then one quote per symbol.
    kinds = [(kind, data["symbol"]) for kind, data in result.events()]
    assert kinds == [
        ("candle_closed", "005930"),
        ("market_data_received", "005930"),
        ("market_data_received", "000660"),
    ]


async def subscribe(client, event_type):
    pubsub = client.pubsub()
    await pubsub.subscribe(events.pubsub_channel(event_type))
    await pubsub.get_message(timeout=5)  # the subscribe confirmation
    return pubsub


async def mirrored(pubsub, envelope):
    """Wait for `envelope` on the Pub/Sub channel. Pub/Sub is server-wide (not per database),
    so other processes' events of the same type may come first: skip them."""
    for _ in range(200):
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
        if message and json.loads(message["data"]) == envelope:
            return True
    raise AssertionError(f"{envelope['event_type']} not seen on Pub/Sub")


async def test_events_reach_the_groups_and_the_pubsub_mirror(settings, redis_client):
    settings.MARKET_EVENT_MIN_INTERVAL_MS = 60_000  # a second quote within a minute is held
    client = redis.asyncio.Redis.from_url(settings.REDIS_URL)
    layer = get_channel_layer()
    bus = await layer.new_channel()
    market = await layer.new_channel()
    await layer.group_add(events.group_name("candle_closed"), bus)
    await layer.group_add(events.group_name("market_data_received"), bus)
    await layer.group_add(market_stream_group("005930"), market)
    candles = await subscribe(client, "candle_closed")
    quotes = await subscribe(client, "market_data_received")

    engine = CollectorEngine()
    engine.state = CollectorState.create(SYMBOLS, intervals=("1m",))
    first = prepare(
        [tick("005930", kst(9, 0, 1), 70000), tick("005930", kst(9, 1, 0), 70100)],
        state=engine.state,
        now=kst(9, 1, 0),
    )
    await engine.publish(first)
    second = prepare([tick("005930", kst(9, 1, 5), 70200)], state=engine.state, now=kst(9, 1, 5))
    await engine.publish(second)  # within the interval: held back, not sent

    candle_event = (await layer.receive(bus))["event"]
    quote_event = (await layer.receive(bus))["event"]
    assert candle_event["event_type"] == "candle_closed"
    assert candle_event["source"] == "collector"
    assert candle_event["data"] == {
        "symbol": "005930",
        "interval": "1m",
        "candle": {
            "timestamp": "2026-03-04T00:00:00Z",
            "open": 70000,
            "high": 70000,
            "low": 70000,
            "close": 70000,
            "volume": 1,
            "interval": "1m",
        },
    }
    assert quote_event["event_type"] == "market_data_received"
    assert quote_event["data"]["quote"]["close"] == "70100"
    assert set(quote_event["data"]["quote"]) == {
        "timestamp",
        "open",
        "high",
        "low",
        "close",
        "volume",
        "change",
        "change_rate",
    }
    assert await mirrored(candles, candle_event)
    assert await mirrored(quotes, quote_event)
    kinds = [(await layer.receive(market))["kind"] for _ in range(2)]
    assert kinds == ["candle", "quote"]
    assert engine.stats()["quotes_held_back"] == 1
    assert engine._pending["005930"]["close"] == "70200"  # the latest, sent when due
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(layer.receive(bus), 0.3)
    await candles.aclose()
    await quotes.aclose()
    await client.aclose()


async def test_a_held_quote_never_holds_back_a_closed_candle(settings, redis_client):
    """The publisher waits out a held quote's throttle interval (here a minute), but a batch
    that closes a candle wakes it at once: candle_closed is never held behind a quote."""
    settings.MARKET_EVENT_MIN_INTERVAL_MS = 60_000
    layer = get_channel_layer()
    bus = await layer.new_channel()
    await layer.group_add(events.group_name("candle_closed"), bus)
    await layer.group_add(events.group_name("market_data_received"), bus)
    engine = CollectorEngine()
    engine.state = CollectorState.create(SYMBOLS, intervals=("1m",))
    publisher = asyncio.create_task(engine._publisher())
    try:
        engine.offer(
            prepare([tick("005930", kst(9, 0, 1), 70000)], state=engine.state, now=kst(9, 0, 1))
        )
        first = (await asyncio.wait_for(layer.receive(bus), 10))["event"]
        assert first["event_type"] == "market_data_received"
        # A second quote within the minute: held; the publisher now waits out the interval.
        engine.offer(
            prepare([tick("005930", kst(9, 0, 2), 70100)], state=engine.state, now=kst(9, 0, 2))
        )
        await asyncio.sleep(0.05)
        assert engine.stats()["quotes_held_back"] == 1
        # The next minute's tick closes 09:00: its candle_closed goes out now, not in a minute.
        engine.offer(
            prepare([tick("005930", kst(9, 1, 0), 70200)], state=engine.state, now=kst(9, 1, 0))
        )
        closed = (await asyncio.wait_for(layer.receive(bus), 10))["event"]
        assert closed["event_type"] == "candle_closed"
        assert closed["data"]["candle"]["timestamp"] == "2026-03-04T00:00:00Z"
        assert engine.stats()["quotes_held_back"] == 1  # the quote still waits its turn
    finally:
        engine._closing = True
        engine._wake.set()
        await asyncio.wait_for(publisher, 10)


CSV_A = """time,symbol,price,volume
2026-03-04T09:00:01+09:00,005930,70000,10
2026-03-04T09:00:20+09:00,005930,70300,5
2026-03-04T09:00:30+09:00,005930,70050,5
2026-03-04T09:01:10+09:00,005930,70200,2
"""
CSV_B = """time,symbol,price,volume
2026-03-04T09:01:40+09:00,005930,70400,3
2026-03-04T09:02:00+09:00,005930,70100,1
"""


async def run_engine(path, settings):
    engine = CollectorEngine(feed=CSVReplayFeed(path, speed="max"))
    await engine.setup()
    await asyncio.wait_for(engine.loop(), 30)
    await engine.stop()
    return engine


@pytest.mark.django_db(transaction=True)
async def test_engine_runs_a_replay_and_a_restart_continues_the_open_candle(
    settings, redis_client, tmp_path
):
    settings.CANDLE_INTERVALS = ["1m", "5m"]
    settings.MARKET_EVENT_MIN_INTERVAL_MS = 0
    await Stock.objects.acreate(symbol="005930", name="Samsung Electronics", market="KOSPI")
    (tmp_path / "a.csv").write_text(CSV_A)
    (tmp_path / "b.csv").write_text(CSV_B)

    first = await run_engine(tmp_path / "a.csv", settings)
    stats = first.stats()
    assert stats["ticks_accepted"] == 3 and stats["ticks_rejected"] == {"price_off_tick_grid": 1}
    assert stats["candles_closed"] == 1
    # A new process: the 09:01 minute and the 09:00 5m candle go on from Redis.
    second = await run_engine(tmp_path / "b.csv", settings)
    assert second.warm["candles_restored"] == 2
    minutes = [json.loads(x) for x in redis_client.lrange("candles:005930:1m", 0, -1)]
    assert [(m["timestamp"], m["open"], m["close"], m["volume"]) for m in minutes] == [
        ("2026-03-04T00:02:00Z", 70100, 70100, 1),
        ("2026-03-04T00:01:00Z", 70200, 70400, 5),
        ("2026-03-04T00:00:00Z", 70000, 70300, 15),
    ]
    [five] = redis_client.lrange("candles:005930:5m", 0, -1)
    assert json.loads(five)["volume"] == 21
    assert redis_client.hget("market:005930", "volume") == b"21"
    streamed = [
        json.loads(text)["timestamp"]
        for _, fields in redis_client.xrange("stream:candles")
        for _, text, _ in buffer.unpack_stream_entry(fields)
    ]
    assert streamed == ["2026-03-04T00:00:00Z", "2026-03-04T00:01:00Z"]


@pytest.mark.django_db(transaction=True)
def test_a_symbol_seen_before_keeps_every_rule_on_the_next_batches(redis_client):
    """The second batch goes through the per-symbol fast path (UTC ticks of a known symbol in
    its open buckets); every rule and every candle figure must come out as for the first."""
    state = CollectorState.create(SYMBOLS, intervals=("1m", "5m", "1d"))
    state.aggregator.set_prev_close("005930", 20516, 70000)  # limits 49,000..91,000

    def utc(second, minute=0):
        return kst(9, minute, second).astimezone(dt.UTC)

    collect([tick("005930", utc(5), 70000, 1)], state=state, redis=redis_client, now=utc(5))
    batch = [
        tick("005930", utc(10), 70100, 2),
        tick("005930", utc(20), 70150, 9),  # off the 100-won grid
        tick("005930", utc(21), 49950, 3),  # on the 50-won grid below 50,000
        tick("005930", utc(22), 91100, 9),  # on the grid, above the upper limit
        Tick("005930", utc(8), 72000, 4),  # int won, late: high and volume, not close
        tick("005930", kst(9, 0, 25), 70200, 1),  # not UTC: same rules
        tick("005930", utc(26).replace(tzinfo=None), 70200, 9),  # naive
        tick("005930", utc(27), 70300, -1),  # bad volume
        tick("005930", utc(27), Decimal("70300.5"), 9),  # not whole won
        tick("005930", utc(40), 70300, 9),  # 10 s after the feed clock
    ]
    result = collect(batch, state=state, redis=redis_client, now=utc(30))
    assert (result.accepted, result.rejected) == (4, 6)
    assert state.stats()["ticks_rejected"] == {
        "price_off_tick_grid": 2,
        "price_outside_daily_limit": 1,
        "time_not_aware": 1,
        "volume_invalid": 1,
        "time_in_future": 1,
    }
    expected = {"open": 70000, "high": 72000, "low": 49950, "close": 70200, "volume": 11}
    for interval in ("1m", "5m", "1d"):
        head = json.loads(redis_client.lindex(f"candles:005930:{interval}", 0))
        assert {k: head[k] for k in expected} == expected, interval
    quote = redis_client.hgetall("market:005930")
    assert (quote[b"close"], quote[b"high"], quote[b"low"], quote[b"volume"]) == (
        b"70200",
        b"72000",
        b"49950",
        b"11",
    )
    # The next minute closes the 1m candle with those figures; the 5m candle goes on.
    result = collect(
        [tick("005930", utc(0, 1), 70000, 1)], state=state, redis=redis_client, now=utc(0, 1)
    )
    [closed] = result.closed
    assert (closed.interval, closed.high, closed.low, closed.close, closed.volume) == (
        "1m",
        72000,
        49950,
        70200,
        11,
    )
    head = json.loads(redis_client.lindex("candles:005930:5m", 0))
    assert (head["close"], head["volume"]) == (70000, 12)


@pytest.mark.django_db(transaction=True)
async def test_a_restarted_simulated_market_goes_on_inside_the_days_band(settings, redis_client):
    """`make run` stopped and started again the same day: the new random walk (another seed)
    starts from the quotes in Redis, so its prints stay inside the band the day's quotes were
    checked against (before, a fresh random price made every print of the day out of band)."""
    settings.MARKET_EVENT_MIN_INTERVAL_MS = 0
    settings.COLLECTOR_FEED = "simulated"
    settings.COLLECTOR_SPEED = "max"
    for symbol, name in (("005930", "Samsung Electronics"), ("000660", "SK hynix")):
        await Stock.objects.acreate(symbol=symbol, name=name, market="KOSPI")

    async def run(seed: int, ticks: int) -> CollectorEngine:
        settings.COLLECTOR_SIM_SEED = seed
        engine = CollectorEngine()
        await engine.setup()
        taken = engine.feed.take(ticks)
        collect(taken, state=engine.state, redis=redis_client, now=engine.feed.now())
        await engine.stop()
        return engine

    first = await run(1, 400)
    before = {s: redis_client.hgetall(f"market:{s}") for s in ("005930", "000660")}
    second = await run(2, 400)

    for symbol, quote in before.items():
        assert second.feed.prev_close[symbol] == int(quote[b"prev_close"])
    assert second.state.stats()["ticks_rejected"] == {}
    assert second.state.stats()["ticks_accepted"] == 400
    assert first.state.stats()["ticks_accepted"] == 400
    await sync_to_async(connections.close_all)()  # the setup's database thread
