"""The Redis buffer: exact key layout, caps, the stream, one round trip per batch, readers."""

import datetime as dt
import json
from decimal import Decimal

import pytest
import redis
import redis.asyncio

from marketdata import buffer, krx
from marketdata.aggregation import CandleAggregator, Sessions
from marketdata.types import Tick
from marketdata.validation import SymbolInfo, TickValidator

SEOUL = krx.SEOUL
SYMBOL = "005930"


def kst(hour, minute, second=0) -> dt.datetime:
    return dt.datetime(2026, 3, 4, hour, minute, second, tzinfo=SEOUL)


@pytest.fixture(scope="module")
def sessions():
    return Sessions()


@pytest.fixture
def agg(sessions):
    aggregator = CandleAggregator(("1m", "5m"), close_grace=2, sessions=sessions)
    day = (int(kst(9, 0).timestamp()) + 9 * 3600) // 86400
    aggregator.set_prev_close(SYMBOL, day, 70000)
    return aggregator


def feed(agg, client, ticks, *, now=None):
    """Add (time, price, volume) ticks, advance to `now`, write one batch."""
    validator = TickValidator({SYMBOL: SymbolInfo("stock", "KOSPI")})
    for when, price, volume in ticks:
        good = validator.check(Tick(SYMBOL, when, Decimal(price), volume), when.timestamp(), agg)
        agg.add(SYMBOL, *good)
    if now is not None:
        agg.advance(now.timestamp())
    batch = buffer.build(*agg.drain())
    buffer.write(client, batch)
    return batch


def candle(ts, o, h, low, c, v, interval="1m"):
    return {
        "timestamp": ts,
        "open": o,
        "high": h,
        "low": low,
        "close": c,
        "volume": v,
        "interval": interval,
    }


def test_exact_key_layout_after_a_known_tick_sequence(agg, redis_client):
    feed(agg, redis_client, [(kst(9, 0, 5), 70000, 10), (kst(9, 0, 40), 70500, 5)])
    feed(agg, redis_client, [(kst(9, 1, 2), 70400, 7), (kst(9, 2, 1), 70300, 1)])
    feed(agg, redis_client, [], now=kst(9, 3, 2))  # the 09:02 minute ends with no new tick

    assert redis_client.hgetall(f"market:{SYMBOL}") == {
        b"timestamp": b"2026-03-04T00:02:01Z",
        b"open": b"70000",
        b"high": b"70500",
        b"low": b"70000",
        b"close": b"70300",
        b"volume": b"23",
        b"prev_close": b"70000",
        b"change": b"300",
        b"change_rate": b"0.43",
        b"upper_limit": b"91000",
        b"lower_limit": b"49000",
    }
    minutes = [json.loads(x) for x in redis_client.lrange(f"candles:{SYMBOL}:1m", 0, -1)]
    assert minutes == [
        candle("2026-03-04T00:02:00Z", 70300, 70300, 70300, 70300, 1),
        candle("2026-03-04T00:01:00Z", 70400, 70400, 70400, 70400, 7),
        candle("2026-03-04T00:00:00Z", 70000, 70500, 70000, 70500, 15),
    ]
    fives = [json.loads(x) for x in redis_client.lrange(f"candles:{SYMBOL}:5m", 0, -1)]
    assert fives == [candle("2026-03-04T00:00:00Z", 70000, 70500, 70000, 70300, 23, "5m")]
    # One entry per write (each feed() call here), the candles it closed packed in it.
    entries = redis_client.xrange("stream:candles")
    assert all(list(fields) == [b"b"] for _, fields in entries)
    candles = [c for _, fields in entries for c in buffer.unpack_stream_entry(fields)]
    assert [(symbol, json.loads(text)) for symbol, text, _ in candles] == [
        (SYMBOL.encode(), minutes[2]),
        (SYMBOL.encode(), minutes[1]),
        (SYMBOL.encode(), minutes[0]),
    ]
    assert sorted(redis_client.keys("*")) == [
        f"candles:{SYMBOL}:1m".encode(),
        f"candles:{SYMBOL}:5m".encode(),
        f"market:{SYMBOL}".encode(),
        b"stream:candles",
    ]


def test_the_list_is_capped_at_max_candles_per_symbol(agg, redis_client, settings):
    settings.MAX_CANDLES_PER_SYMBOL = 3
    for minute in range(6):
        feed(agg, redis_client, [(kst(9, minute, 1), 70000 + minute * 100, 1)])
    rows = [json.loads(x) for x in redis_client.lrange(f"candles:{SYMBOL}:1m", 0, -1)]
    assert [r["close"] for r in rows] == [70500, 70400, 70300]
    # The stream is never trimmed here: five 1m candles and the 09:00 5m one.
    entries = redis_client.xrange("stream:candles")
    assert sum(len(buffer.unpack_stream_entry(fields)) for _, fields in entries) == 6


def test_several_candles_closed_in_one_batch_land_in_order(agg, redis_client):
    feed(agg, redis_client, [(kst(9, 0, 1), 70000, 1)])
    feed(agg, redis_client, [(kst(9, m, 1), 70000 + m * 100, 1) for m in (1, 2, 3)])
    rows = [json.loads(x)["close"] for x in redis_client.lrange(f"candles:{SYMBOL}:1m", 0, -1)]
    assert rows == [70300, 70200, 70100, 70000]


def test_a_list_removed_under_the_collector_is_started_again(agg, redis_client):
    feed(agg, redis_client, [(kst(9, 0, 1), 70000, 1)])
    redis_client.delete(f"candles:{SYMBOL}:1m")
    feed(agg, redis_client, [(kst(9, 0, 2), 70100, 1)])
    [row] = redis_client.lrange(f"candles:{SYMBOL}:1m", 0, -1)
    assert json.loads(row)["close"] == 70100


def commands_from(client, run) -> list[str]:
    """The commands `client`'s connection sent while run() ran, as Redis MONITOR saw them
    (commands a script runs are tagged "lua" and not counted)."""
    addr = client.client_info()["addr"]
    watcher = redis.Redis(connection_pool=redis.ConnectionPool.from_url(client_url(client)))
    sentinel = "qb-test-sentinel"
    seen = []
    with watcher.monitor() as monitor:
        run()
        client.echo(sentinel)
        while True:
            command = monitor.next_command()
            if f"{command['client_address']}:{command['client_port']}" != addr:
                continue
            if command["command"] == f"ECHO {sentinel}":
                break
            seen.append(command["command"].split()[0])
    watcher.close()
    return seen


def client_url(client) -> str:
    kwargs = client.connection_pool.connection_kwargs
    return f"redis://{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{kwargs['db']}"


def test_one_round_trip_per_batch(agg, redis_client, settings):
    # One connection, so the commands MONITOR attributes to its address are all the writer's.
    client = redis.Redis(
        connection_pool=redis.ConnectionPool.from_url(settings.REDIS_URL, max_connections=1)
    )
    client.script_load(buffer.SCRIPT)
    ticks = [(kst(9, m, s), 70000 + s * 100, 1) for m in range(3) for s in (1, 30)]
    batch_holder = []

    def run():
        batch_holder.append(feed(agg, client, ticks))

    assert commands_from(client, run) == ["EVALSHA"]
    assert batch_holder[0].stream_entries == 2 and batch_holder[0].list_writes == 2
    client.close()


def test_the_script_is_loaded_when_redis_does_not_have_it(agg, redis_client):
    redis_client.script_flush()
    feed(agg, redis_client, [(kst(9, 0, 1), 70000, 1)])
    assert redis_client.llen(f"candles:{SYMBOL}:1m") == 1
    assert redis_client.script_exists(buffer.SCRIPT_SHA) == [True]


def test_readers_give_typed_quotes_and_candles(agg, redis_client):
    assert buffer.latest_quote(redis_client, SYMBOL) is None
    feed(agg, redis_client, [(kst(9, 0, 1), 70000, 3), (kst(9, 1, 1), 70100, 2)])
    quote = buffer.latest_quote(redis_client, SYMBOL)
    assert quote["close"] == Decimal(70100) and quote["volume"] == 5
    assert quote["timestamp"] == kst(9, 1, 1).astimezone(dt.UTC)
    assert quote["change_rate"] == Decimal("0.14")
    newest, older = buffer.recent_candles(redis_client, SYMBOL, "1m", 5)
    assert (newest.time, newest.close, older.close) == (
        kst(9, 1).astimezone(dt.UTC),
        Decimal(70100),
        Decimal(70000),
    )
    assert buffer.recent_candles(redis_client, SYMBOL, "1m", 1) == [newest]


async def test_async_writer_and_readers(agg, redis_client, settings):
    client = redis.asyncio.Redis.from_url(settings.REDIS_URL)
    t = kst(9, 0, 1).timestamp()
    kind, _, second = agg.sessions.classify(t)
    agg.add(SYMBOL, t, 70000, 4, kind, second)
    await buffer.awrite(client, buffer.build(*agg.drain()))
    quote = await buffer.alatest_quote(client, SYMBOL)
    [only] = await buffer.arecent_candles(client, SYMBOL, "5m", 10)
    assert (quote["close"], only.volume) == (Decimal(70000), 4)
    await client.aclose()
