"""The KIS WebSocket feed against the fake KIS server: ticks pushed at the fake -> Tick batches
-> the collector -> Redis market:{symbol}; reconnects; malformed frames into system_logs."""

import asyncio
import contextlib
import datetime as dt
import logging
from decimal import Decimal

import pytest
import redis.asyncio

from kis.frames import TR_TRADES
from kis.testing import fake_kis, kis_settings  # noqa: F401 - fixtures, through `fake`
from kis.testing.fake_ws import trade_record, ws_hub
from marketdata import krx
from marketdata.engines.collector import CollectorState, acollect
from marketdata.feeds import FeedError, make_feed
from marketdata.feeds.kis import KISWebSocketFeed
from marketdata.types import Tick
from marketdata.validation import SymbolInfo

SEOUL = krx.SEOUL
SYMBOLS = {"005930": SymbolInfo("stock", "KOSPI"), "000660": SymbolInfo("stock", "KOSPI")}
AT = dt.datetime(2026, 3, 4, 9, 0, 5, tzinfo=SEOUL)  # a trading day, in the session


@pytest.fixture
def fake(request):
    """The fake KIS server, with settings.KIS_* aimed at it (kis.testing's fixtures)."""
    request.getfixturevalue("kis_settings")
    return request.getfixturevalue("fake_kis")


@contextlib.asynccontextmanager
async def running(feed):
    queue: asyncio.Queue = asyncio.Queue()

    async def pump():
        async for ticks in feed.batches():
            await queue.put(ticks)

    task = asyncio.create_task(pump())
    try:
        yield queue
    finally:
        await feed.close()
        await asyncio.wait_for(task, 5)


async def next_ticks(queue):
    return await asyncio.wait_for(queue.get(), 5)


def make(**kw):
    return KISWebSocketFeed(["005930", "000660"], wall_clock=lambda: AT, **kw)


async def test_ticks_from_the_fake_through_the_collector_into_redis(fake, settings, redis_client):
    feed = make()
    hub = ws_hub(fake.state)
    assert feed.symbols == ["005930", "000660"] and feed.reference_prices() == {}
    assert feed.now() == AT  # no print yet: the wall clock
    async with running(feed) as queue:
        await hub.wait_for(lambda: len(hub.registrations()) == 2)
        hub.push_trades(
            [
                trade_record("005930", AT, 70000, volume=5, day_volume=5, prev_close=69000),
                trade_record("000660", AT, 180000, volume=2, day_volume=2, prev_close=181000),
                trade_record(
                    "005930",
                    AT + dt.timedelta(seconds=1),
                    70100,
                    volume=3,
                    day_volume=8,
                    prev_close=69000,
                ),
            ]
        )
        ticks = await next_ticks(queue)
    utc = AT.astimezone(dt.UTC)
    assert ticks == [
        Tick("005930", utc, Decimal(70000), 5, 5),
        Tick("000660", utc, Decimal(180000), 2, 2),
        Tick("005930", utc + dt.timedelta(seconds=1), Decimal(70100), 3, 8),
    ]
    assert feed.reference_prices() == {"005930": Decimal(69000), "000660": Decimal(181000)}
    assert feed.now() == utc + dt.timedelta(seconds=1)  # the latest print, ahead of the wall
    # The approval key came from POST /oauth2/Approval on the fake, once, via the Redis cache.
    assert fake.state.approval_requests == 1
    assert fake.state.token_requests == 0

    state = CollectorState.create(SYMBOLS, intervals=("1m",))
    for symbol, price in feed.reference_prices().items():
        state.aggregator.set_prev_close(symbol, krx_day(AT), int(price))
    client = redis.asyncio.Redis.from_url(settings.REDIS_URL)
    try:
        result = await acollect(ticks, state=state, redis=client, now=feed.now())
    finally:
        await client.aclose()
    assert (result.accepted, result.rejected) == (3, 0)
    assert redis_client.hget("market:005930", "close") == b"70100"
    assert redis_client.hget("market:005930", "volume") == b"8"
    assert redis_client.hget("market:000660", "close") == b"180000"
    assert redis_client.hget("market:000660", "prev_close") == b"181000"


def krx_day(moment):
    from marketdata.aggregation import kst_day

    return kst_day(moment.timestamp())


async def test_reconnects_after_a_drop_and_goes_on(fake, settings, redis_client):
    feed = make()
    hub = ws_hub(fake.state)
    async with running(feed) as queue:
        await hub.wait_for(lambda: len(hub.registrations()) == 2)
        hub.push_trades([trade_record("005930", AT, 70000)])
        await next_ticks(queue)
        hub.drop()
        await hub.wait_for(lambda: hub.connections == 2 and len(hub.registrations()) == 2)
        hub.push_trades([trade_record("000660", AT, 180000, volume=7)])
        ticks = await next_ticks(queue)
    assert [(t.symbol, t.volume) for t in ticks] == [("000660", 7)]
    stats = feed.stats()
    assert (stats["connections"], stats["drops"], stats["ticks_received"]) == (2, 1, 2)
    assert fake.state.approval_requests == 1  # the cached key served the second session


async def test_a_revoked_approval_key_is_issued_again(fake, settings, redis_client):
    feed = make()
    hub = ws_hub(fake.state)
    async with running(feed) as queue:
        await hub.wait_for(lambda: len(hub.registrations()) == 2)
        with fake.state.lock:
            fake.state.approval_keys.clear()  # KIS no longer knows the cached key
        hub.drop()
        await hub.wait_for(lambda: fake.state.approval_requests == 2, timeout=10)
        await hub.wait_for(lambda: len(hub.registrations()) == 2, timeout=10)
        hub.push_trades([trade_record("005930", AT, 70000)])
        assert [t.symbol for t in await next_ticks(queue)] == ["005930"]


@pytest.mark.django_db(transaction=True)
def test_a_malformed_frame_is_logged_to_system_logs_and_skipped(fake, settings, redis_client):
    from ops.models import SystemLog

    async def scenario():
        feed = make()
        hub = ws_hub(fake.state)
        async with running(feed) as queue:
            await hub.wait_for(lambda: len(hub.registrations()) == 2)
            hub.push_raw("0|H0STCNT0|001|005930^090005^70000")  # truncated
            hub.push_trades([trade_record("005930", AT, 70000, volume=4)])
            ticks = await next_ticks(queue)
        return feed, ticks

    feed, ticks = asyncio.run(scenario())
    assert [(t.symbol, t.volume) for t in ticks] == [("005930", 4)]
    assert feed.stats()["bad_frames"] == 1
    handler = next(
        h for h in logging.getLogger().handlers if type(h).__name__ == "SystemLogHandler"
    )
    assert handler.flush(timeout=30)
    rows = list(SystemLog.objects.filter(component="qb.kis", level="WARNING"))
    assert any("3 fields for 1 record(s): expected 46" in r.message for r in rows)


def test_make_feed_builds_it_from_settings(fake, settings):
    settings.KIS_FEED_SYMBOLS = "005930, 000660,005930"
    feed = make_feed("kis", speed="1")
    assert isinstance(feed, KISWebSocketFeed)
    assert feed.symbols == ["005930", "000660"]
    assert feed.client.url == settings.KIS_WS_URL
    asyncio.run(feed.close())


@pytest.mark.parametrize(
    ("symbols", "speed", "error"),
    [
        ([f"{n:06d}" for n in range(42)], None, "got 42 symbols; KIS allows at most 41"),
        ([], None, "set KIS_FEED_SYMBOLS"),
        (["005930", "00-660"], None, "'00-660' is not a KRX code"),
        (["005930"], "10x", "runs at 1x"),
        (["005930"], "max", "runs at 1x"),
    ],
)
def test_bad_configuration_is_named(fake, symbols, speed, error):
    with pytest.raises(FeedError, match=error):
        KISWebSocketFeed(symbols, speed=speed)


def test_41_symbols_are_fine(fake, settings):
    feed = KISWebSocketFeed([f"{n:06d}" for n in range(41)])
    assert len(feed.symbols) == 41
    asyncio.run(feed.close())


def test_with_the_kis_brokers_fill_notices_40_symbols_at_most(fake, settings):
    settings.TRADING_BROKER = "kis"
    settings.KIS_HTS_ID = "qbtrader"
    with pytest.raises(FeedError, match="KIS_FEED_SYMBOLS may hold at most 40"):
        KISWebSocketFeed([f"{n:06d}" for n in range(41)])
    feed = KISWebSocketFeed([f"{n:06d}" for n in range(40)])
    assert len(feed.symbols) == 40
    asyncio.run(feed.close())
    settings.KIS_HTS_ID = ""  # no notices: the 41st registration is the feed's
    asyncio.run(KISWebSocketFeed([f"{n:06d}" for n in range(41)]).close())


async def test_the_feed_subscribes_trades_only(fake, settings, redis_client):
    feed = make()
    hub = ws_hub(fake.state)
    async with running(feed):
        await hub.wait_for(lambda: len(hub.registrations()) == 2)
    assert {(r["tr_id"], r["tr_key"]) for r in hub.received} == {
        (TR_TRADES, "005930"),
        (TR_TRADES, "000660"),
    }
