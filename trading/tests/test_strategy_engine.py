"""The strategy engine on real Redis, the real Redis channel layer and real PostgreSQL.

Pub/Sub channels are shared by every Redis database number (other test runs publish on them
too), so tests pick out their own events by correlation_id.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import json
import logging
import time
import uuid
from decimal import Decimal

import pytest
import redis.asyncio
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import connections

from marketdata.keys import candles_key, indicators_key
from marketdata.krx import SEOUL
from marketdata.services import stock_upsert
from marketdata.types import Candle
from ops.logging import SystemLogHandler
from ops.models import SystemLog
from qbsite import events
from qbsite.events import EventType
from qbsite.testing import closed_port
from trading.engines.strategy import (
    ON_CANDLE,
    ON_INDICATORS,
    StrategyEngine,
    closes_until,
    parse_indicators_updated,
    strategies_evaluate,
    strategies_load,
    strategy_load,
)
from trading.models import Signal, Strategy, Trade
from trading.strategies.base import _REGISTRY, BaseStrategy, SignalIntent, register
from trading.strategies.builtin import LIQUIDATION_REASON
from trading.strategies.services import strategy_create, strategy_update

WAIT = 10
SYMBOL = "005930"
OPEN = dt.datetime(2026, 1, 5, 0, 0, tzinfo=dt.UTC)  # 09:00 KST, a Monday
MINUTE = dt.timedelta(minutes=1)
UP = [70_000, 70_000, 70_000, 70_000, 70_500]  # the last close is above the mean of five

committed = pytest.mark.django_db(transaction=True)


# --- strategies for the tests (registered only while a test runs) ---------------------------


class Exploding(BaseStrategy):
    kind = "test_exploding"

    def on_candle(self, ctx):
        return [1 / 0]  # ZeroDivisionError: division by zero


class TwoAtOnce(BaseStrategy):
    kind = "test_two_at_once"

    def on_candle(self, ctx):
        return [SignalIntent("BUY"), SignalIntent("BUY")]


class NotAList(BaseStrategy):
    kind = "test_not_a_list"

    def on_candle(self, ctx):
        return SignalIntent("BUY")


class OnIndicators(BaseStrategy):
    """BUYs when the indicators engine's RSI is under 30; reports what it was given."""

    kind = "test_on_indicators"
    seen: list = []

    def history(self) -> int:
        return 3

    def on_indicators(self, ctx):
        OnIndicators.seen.append(ctx)
        if ctx.indicators["rsi"] is not None and ctx.indicators["rsi"] < 30:
            return [SignalIntent("BUY", confidence=0.5, reason="rsi low")]
        return []


TEST_KINDS = (Exploding, TwoAtOnce, NotAList, OnIndicators)


@pytest.fixture
def test_kinds():
    for cls in TEST_KINDS:
        register(cls)
    OnIndicators.seen = []
    yield
    for cls in TEST_KINDS:
        _REGISTRY.pop(cls.kind, None)


# --- helpers ---------------------------------------------------------------------------------


def candle(index: int, close, *, interval: str = "1m", start=OPEN) -> Candle:
    price = Decimal(close)
    step = {"1m": MINUTE, "5m": 5 * MINUTE}[interval]
    return Candle(SYMBOL, interval, start + index * step, price, price + 10, price - 10, price, 100)


def series(closes, **kwargs) -> list[Candle]:
    return [candle(i, c, **kwargs) for i, c in enumerate(closes)]


def push_list(client, candles) -> None:
    """The collector's list: newest first (pushed oldest first)."""
    for c in candles:
        client.lpush(candles_key(c.symbol, c.interval), c.to_json())


def envelope(c: Candle, correlation_id=None) -> dict:
    return events.build_envelope(
        EventType.CANDLE_CLOSED,
        {"symbol": c.symbol, "interval": c.interval, "candle": c.to_dict()},
        source="collector",
        correlation_id=correlation_id,
    )


def stocks() -> None:
    stock_upsert(symbol=SYMBOL, name="Samsung Electronics", market="KOSPI")
    stock_upsert(symbol="000660", name="SK hynix", market="KOSPI")


def make(name, kind="sample_mean5", *, enabled=True, symbols=(SYMBOL,), **kwargs) -> Strategy:
    return strategy_create(
        name=name,
        kind=kind,
        symbols=list(symbols),
        enabled=enabled,
        capital_allocation=Decimal("10000000"),
        **kwargs,
    )


def hold(strategy: str, quantity: int) -> None:
    Trade.objects.create(
        timestamp=OPEN,
        symbol_id=SYMBOL,
        side="BUY",
        quantity=quantity,
        price=Decimal(70000),
        strategy=strategy,
        order_type="MARKET",
    )


def system_logs(**filters) -> list[SystemLog]:
    [handler] = [h for h in logging.getLogger().handlers if isinstance(h, SystemLogHandler)]
    assert handler.flush(timeout=30)
    return list(SystemLog.objects.filter(**filters))


@pytest.fixture
async def aredis(redis_client, settings):
    client = redis.asyncio.Redis.from_url(settings.REDIS_URL)
    yield client
    await client.aclose()
    # database_sync_to_async's thread keeps a connection: close it, or the test database
    # cannot be dropped at the end of the run.
    await sync_to_async(connections.close_all)()


@pytest.fixture
def pubsub(settings, redis_client):
    """subscribe(*event_types) -> a Pub/Sub connection, subscriptions confirmed."""
    made = []

    def subscribe(*event_types):
        client = redis_client.pubsub()
        for event_type in event_types:
            client.subscribe(events.pubsub_channel(event_type))
            assert client.get_message(timeout=WAIT)["type"] == "subscribe"
        made.append(client)
        return client

    yield subscribe
    for client in made:
        client.close()


def collect(client, correlation_id, *, wait: float) -> list[dict]:
    """Every envelope with our correlation_id arriving within `wait` seconds."""
    found = []
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        message = client.get_message(ignore_subscribe_messages=True, timeout=0.2)
        if message and message["type"] == "message":
            envelope = json.loads(message["data"])
            if envelope["correlation_id"] == correlation_id:
                found.append(envelope)
    return found


# --- closes from the Redis list --------------------------------------------------------------


def _raw(candles):
    return [c.to_json().encode() for c in reversed(candles)]  # newest first


def test_closes_skip_the_open_head_repeats_and_strays():
    candles = series([100, 101, 102, 103, 104, 105])
    current = candles[4]
    raw = _raw(candles)  # head: candle 5, still open when candle 4 closes
    raw.insert(2, candles[3].to_json().encode())  # a repeat
    raw.insert(4, b"{not json")
    raw.insert(5, candle(1, 999, interval="5m").to_json().encode())  # another interval's
    counts = collections.Counter()
    got = closes_until(
        raw, interval="1m", until=current.time, last_close=current.close, limit=10, counts=counts
    )
    assert got == tuple(Decimal(c) for c in (100, 101, 102, 103, 104))
    assert counts == {"unreadable_candles": 2}


def test_closes_end_with_the_events_close_and_stop_at_the_limit():
    candles = series([100, 101, 102, 103])
    # The list lost the current candle (Redis flushed since): the event's close stands in.
    got = closes_until(
        _raw(candles[:3]), interval="1m", until=candles[3].time, last_close=Decimal(7), limit=3
    )
    assert got == (Decimal(101), Decimal(102), Decimal(7))
    assert closes_until([], interval="1m", until=OPEN, last_close=Decimal(5), limit=5) == (
        Decimal(5),
    )


def test_the_parse_memo_gives_the_same_closes_and_parses_each_item_once(monkeypatch):
    from trading.engines import strategy as module

    candles = series([100, 101, 102, 103, 104, 105, 106])
    parsed = []
    real = module._parse_list_item
    monkeypatch.setattr(
        module,
        "_parse_list_item",
        lambda item, interval: parsed.append(item) or real(item, interval),
    )
    memo = {}
    first = closes_until(
        _raw(candles[:6]), interval="1m", until=candles[5].time, last_close=Decimal(105),
        limit=10, memo=memo,
    )  # fmt: skip
    assert first == _closes([100, 101, 102, 103, 104, 105]) and len(parsed) == 6
    second = closes_until(
        _raw(candles), interval="1m", until=candles[6].time, last_close=Decimal(106),
        limit=10, memo=memo,
    )  # fmt: skip
    assert second == _closes([100, 101, 102, 103, 104, 105, 106])
    assert len(parsed) == 7  # only the new head was parsed


async def test_the_engine_keeps_memos_of_a_bounded_number_of_series(aredis, monkeypatch):
    from trading.engines import strategy as module

    monkeypatch.setattr(module, "MEMO_KEYS", 3)
    engine = StrategyEngine(redis_client=aredis)
    for symbol in ("000001", "000002", "000003", "000004"):
        engine._memo(symbol, "1m", [])
    engine._memo("000002", "1m", [])  # used again: the newest
    engine._memo("000005", "1m", [])
    assert list(engine._parsed) == [("000004", "1m"), ("000002", "1m"), ("000005", "1m")]
    memo = engine._memo("000005", "1m", [b"a"])
    memo.update({b"a": None, b"b": None})
    assert engine._memo("000005", "1m", [b"a", b"c"]) == {b"a": None}  # only this read's


# --- the plain function ----------------------------------------------------------------------


def _loaded(*names):
    return [strategy_load(Strategy.objects.get(name=n)) for n in names]


def _closes(values):
    return tuple(Decimal(v) for v in values)


@pytest.mark.django_db
def test_evaluate_records_one_signal_per_strategy_that_asks(django_capture_on_commit_callbacks):
    stocks()
    make("buyer")
    make("seller")
    make("silent", parameters={"window": 10})  # ten closes wanted, five known: no opinion
    hold("seller", 30)
    c = candle(4, UP[-1])
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        outcome = strategies_evaluate(
            candle=c,
            closes=_closes(UP),
            strategies=_loaded("buyer", "seller", "silent"),
            correlation_id="cid-1",
        )
    assert len(callbacks) == 1  # one trading_signal, on commit
    assert [(s.strategy.name, s.action, s.quantity) for s in outcome.signals] == [
        ("buyer", "BUY", None)
    ]
    [signal] = Signal.objects.all()
    assert (signal.symbol_id, signal.interval, signal.time, signal.price) == (
        SYMBOL,
        "1m",
        c.time,
        Decimal("70500.00"),
    )
    assert signal.reason == "close 70500 > mean 70100.00 of 5"
    assert outcome.disabled == [] and outcome.replayed == []


@pytest.mark.django_db
def test_a_replayed_candle_makes_no_second_signal_and_no_second_event(
    django_capture_on_commit_callbacks,
):
    stocks()
    make("buyer")
    c, closes = candle(4, UP[-1]), _closes(UP)
    counts = collections.Counter()
    with django_capture_on_commit_callbacks(execute=False) as first:
        strategies_evaluate(candle=c, closes=closes, strategies=_loaded("buyer"), counts=counts)
    with django_capture_on_commit_callbacks(execute=False) as second:
        outcome = strategies_evaluate(
            candle=c, closes=closes, strategies=_loaded("buyer"), counts=counts
        )
    assert len(first) == 1 and second == []
    assert outcome.signals == [] and len(outcome.replayed) == 1
    assert Signal.objects.count() == 1
    assert counts == {"evaluated": 2, "signals": 1, "replayed": 1}


@pytest.mark.django_db
def test_evaluate_is_one_query_plus_the_signal(django_assert_num_queries):
    stocks()
    for i in range(5):
        make(f"s{i}", parameters={"window": 10})  # no opinion: reads holdings only
    make("buyer")
    loaded = _loaded(*(f"s{i}" for i in range(5)), "buyer")
    # holdings (trades and orders in one) + the signal's SAVEPOINT, INSERT, RELEASE inside
    # the test's transaction (BEGIN ... COMMIT outside one)
    with django_assert_num_queries(4):
        strategies_evaluate(candle=candle(4, UP[-1]), closes=_closes(UP), strategies=loaded)


@pytest.mark.django_db
def test_the_1520_liquidation_through_the_engine_function():
    stocks()
    make("sample")
    hold("sample", 12)
    before = dt.datetime(2026, 1, 5, 15, 18, tzinfo=SEOUL)  # ends 15:19
    at = dt.datetime(2026, 1, 5, 15, 19, tzinfo=SEOUL)  # ends 15:20
    # Closes above their mean, holding: an ordinary candle says nothing...
    outcome = strategies_evaluate(
        candle=candle(0, UP[-1], start=before.astimezone(dt.UTC)),
        closes=_closes(UP),
        strategies=_loaded("sample"),
    )
    assert outcome.signals == []
    # ...the one ending at 15:20 sells everything held.
    outcome = strategies_evaluate(
        candle=candle(0, UP[-1], start=at.astimezone(dt.UTC)),
        closes=_closes(UP),
        strategies=_loaded("sample"),
    )
    [signal] = outcome.signals
    assert (signal.action, signal.quantity, signal.reason) == ("SELL", 12, LIQUIDATION_REASON)


@committed
def test_a_raising_strategy_is_disabled_and_the_others_still_signal(test_kinds, pubsub):
    client = pubsub(EventType.RISK_ALERT, EventType.TRADING_SIGNAL)
    stocks()
    make("exploding", kind="test_exploding")
    make("two-at-once", kind="test_two_at_once")
    make("not-a-list", kind="test_not_a_list")
    make("buyer")
    correlation_id = f"test-{uuid.uuid4()}"
    c = candle(4, UP[-1])
    counts = collections.Counter()
    outcome = strategies_evaluate(
        candle=c,
        closes=_closes(UP),
        strategies=_loaded("exploding", "two-at-once", "not-a-list", "buyer"),
        correlation_id=correlation_id,
        counts=counts,
    )
    assert [s.name for s in outcome.disabled] == ["exploding", "two-at-once", "not-a-list"]
    assert [s.strategy.name for s in outcome.signals] == ["buyer"]
    assert counts == {"evaluated": 4, "strategy_errors": 3, "signals": 1}

    rows = {s.name: s for s in Strategy.objects.all()}
    assert rows["buyer"].enabled
    stamp = "2026-01-05T00:04:00+00:00"
    reasons = {
        "exploding": f"on_candle raised on 005930 1m {stamp}: ZeroDivisionError: division by zero",
        "two-at-once": f"on_candle raised on 005930 1m {stamp}: ValueError: TwoAtOnce "
        "returned 2 signals for one candle; at most one is allowed.",
        "not-a-list": f"on_candle raised on 005930 1m {stamp}: TypeError: NotAList returned "
        "SignalIntent, not a list of SignalIntent.",
    }
    for name, reason in reasons.items():
        assert not rows[name].enabled
        assert rows[name].disabled_reason == reason

    got = collect(client, correlation_id, wait=3)
    alerts = [e["data"] for e in got if e["event_type"] == "risk_alert"]
    assert sorted(a["strategy"] for a in alerts) == ["exploding", "not-a-list", "two-at-once"]
    assert alerts[0] == {
        "alert_type": "STRATEGY_ERROR",
        "strategy": "exploding",
        "symbol": SYMBOL,
        "message": reasons["exploding"],
        "severity": "CRITICAL",
        "action_taken": "strategy disabled",
    }
    [signal_event] = [e for e in got if e["event_type"] == "trading_signal"]
    assert signal_event["data"]["strategy"] == "buyer"

    # (Rows of other tests' strategies may be there: the log writer commits on its own.)
    logged = [
        row
        for row in system_logs(component="qb.strategies", level="ERROR")
        if row.message.split()[1] in reasons
    ]
    assert sorted(row.message for row in logged) == sorted(
        f"Strategy {name} disabled: {reason}" for name, reason in reasons.items()
    )
    exploded = next(row for row in logged if "exploding" in row.message)
    assert "ZeroDivisionError" in exploded.metadata["exception"]
    assert exploded.metadata["correlation_id"] == correlation_id


@pytest.mark.django_db
def test_a_row_that_no_longer_loads_is_disabled_at_load(test_kinds):
    stocks()
    make("good")
    broken = make("broken", kind="sma_crossover", symbols=[SYMBOL])
    # The code changed under a stored row: its parameters no longer fit (written by hand).
    Strategy.objects.filter(pk=broken.pk).update(parameters={"fast": 50, "slow": 10})
    gone = make("gone", kind="test_exploding")
    Strategy.objects.filter(pk=gone.pk).update(kind="retired_kind")
    book = strategies_load()
    assert [item.row.name for item in book.loaded.values()] == ["good"]
    broken.refresh_from_db()
    gone.refresh_from_db()
    assert not broken.enabled
    assert broken.disabled_reason == (
        "Could not load: ParameterError: Invalid parameters for sma_crossover: "
        "fast: must be less than slow (10), got 50"
    )
    assert not gone.enabled
    assert gone.disabled_reason.startswith(
        "Could not load: UnknownStrategyKind: Unknown strategy kind 'retired_kind'"
    )


@pytest.mark.django_db
def test_the_book_indexes_by_symbol_interval_and_hook(test_kinds):
    stocks()
    make("a", symbols=[SYMBOL, "000660"])
    make("b", kind="test_on_indicators", symbols=[SYMBOL])
    make("c", kind="sma_crossover", interval="5m")
    make("off", enabled=False)
    book = strategies_load()
    names = lambda found: [item.row.name for item in found]  # noqa: E731
    assert names(book.matching(SYMBOL, "1m", ON_CANDLE)) == ["a"]
    assert names(book.matching("000660", "1m", ON_CANDLE)) == ["a"]
    assert names(book.matching(SYMBOL, "1m", ON_INDICATORS)) == ["b"]
    assert names(book.matching(SYMBOL, "5m", ON_CANDLE)) == ["c"]
    assert book.matching("000660", "5m", ON_CANDLE) == []
    book.remove(Strategy.objects.get(name="a").pk)
    assert book.matching("000660", "1m", ON_CANDLE) == []


# --- parsing ---------------------------------------------------------------------------------


def _indicators_envelope(**data):
    base = {
        "symbol": SYMBOL,
        "interval": "1m",
        "time": "2026-01-05T00:04:00Z",
        "values": {"sma_20": None, "rsi": 25.5, "macd": 1, "macd_signal": None, "macd_hist": None},
    }
    return events.build_envelope(
        EventType.INDICATORS_UPDATED, {**base, **data}, source="indicators"
    )


def test_indicators_updated_is_parsed():
    symbol, interval, moment, _stamp, values = parse_indicators_updated(_indicators_envelope())
    assert (symbol, interval, moment) == (SYMBOL, "1m", OPEN + 4 * MINUTE)
    assert values == {
        "sma_20": None,
        "rsi": 25.5,
        "macd": 1.0,
        "macd_signal": None,
        "macd_hist": None,
    }


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"symbol": "5930"}, "data.symbol '5930' is not a KRX symbol"),
        ({"interval": "2m"}, "data.interval '2m' is not one of"),
        ({"time": "yesterday"}, "data.time 'yesterday' is not an ISO 8601 time"),
        ({"time": "2026-01-05T00:04:00"}, "has no time zone"),
        ({"values": [1, 2]}, "data.values is missing or not a dict"),
        ({"values": {"rsi": "low"}}, "data.values.rsi 'low' is not a number or null"),
    ],
)
def test_bad_indicators_updated_are_refused(data, message):
    with pytest.raises(Exception, match=message):
        parse_indicators_updated(_indicators_envelope(**data))


# --- the engine ------------------------------------------------------------------------------


async def test_an_event_no_strategy_wants_costs_no_io(aredis):
    engine = StrategyEngine(redis_client=aredis)  # nothing loaded
    await aredis.aclose()  # any Redis call would now fail
    await engine.handle(envelope(candle(0, 70_000)))
    assert engine.counts == {"no_strategy": 1}


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        ({"event_type": "candle_closed", "data": {}}, "data.symbol None is not a KRX symbol"),
        (_indicators_envelope(symbol="x"), "data.symbol 'x' is not a KRX symbol"),
        ({"event_type": "order_placed", "data": {}}, "Unexpected event type 'order_placed'"),
        ("junk", "Unexpected event type None"),
    ],
)
async def test_bad_events_are_rejected_and_logged(aredis, caplog, event, reason):
    engine = StrategyEngine(redis_client=aredis)
    with caplog.at_level(logging.WARNING, logger="qb.strategies"):
        await engine.handle(event)
    assert engine.counts == {"rejected": 1}
    assert reason in caplog.text


@committed
async def test_the_engine_handles_a_real_channel_layer_message(aredis, redis_client, pubsub):
    client = pubsub(EventType.TRADING_SIGNAL)

    def rows():
        stocks()
        make("sample")
        make("other-symbol", symbols=["000660"])

    await sync_to_async(rows)()
    engine = StrategyEngine(redis_client=aredis)
    await engine.setup()
    assert len(engine.book) == 2

    candles = series([69_000, *UP, 70_600])  # the last one is the next, still-open candle
    push_list(redis_client, candles)
    current = candles[5]
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(events.group_name(EventType.CANDLE_CLOSED), channel)
    correlation_id = f"test-{uuid.uuid4()}"
    await events.apublish(
        EventType.CANDLE_CLOSED,
        {"symbol": SYMBOL, "interval": "1m", "candle": current.to_dict()},
        source="collector",
        correlation_id=correlation_id,
    )
    message = await asyncio.wait_for(layer.receive(channel), WAIT)
    assert message["type"] == "event.message"
    await engine.handle(message["event"])

    [signal] = await sync_to_async(list)(Signal.objects.select_related("strategy"))
    assert (signal.strategy.name, signal.action, signal.time) == ("sample", "BUY", current.time)
    assert engine.counts == {"evaluated": 1, "signals": 1}
    [event] = await sync_to_async(collect)(client, correlation_id, wait=2)
    assert event["source"] == "strategy"
    assert event["data"] == {
        "signal_id": signal.pk,
        "strategy": "sample",
        "symbol": SYMBOL,
        "action": "BUY",
        "price": "70500.00",
        "quantity": None,
        "confidence": "1.000000",
        "time": "2026-01-05T00:05:00+00:00",
    }

    # The same message delivered again: no second signal, no second event.
    await engine.handle(message["event"])
    assert engine.counts == {"evaluated": 2, "signals": 1, "replayed": 1}
    assert await sync_to_async(Signal.objects.count)() == 1
    assert await sync_to_async(collect)(client, correlation_id, wait=1) == []


@committed
async def test_the_engine_drops_a_strategy_it_disabled_and_goes_on(
    aredis, redis_client, test_kinds
):
    def rows():
        stocks()
        make("exploding", kind="test_exploding")
        make("sample")

    await sync_to_async(rows)()
    engine = StrategyEngine(redis_client=aredis)
    await engine.setup()
    candles = series(UP)
    push_list(redis_client, candles)
    await engine.handle(envelope(candles[4]))
    assert engine.counts == {"evaluated": 2, "strategy_errors": 1, "signals": 1}
    assert [item.row.name for item in engine.book.loaded.values()] == ["sample"]
    # The next candle runs the one left only.
    push_list(redis_client, [candle(5, 70_400)])
    await engine.handle(envelope(candle(5, 70_400)))
    assert engine.counts["evaluated"] == 3
    exploding = await sync_to_async(Strategy.objects.get)(name="exploding")
    assert not exploding.enabled


@committed
async def test_indicators_updated_runs_on_indicators_with_the_events_values(
    aredis, redis_client, test_kinds
):
    def rows():
        stocks()
        make("by-rsi", kind="test_on_indicators")

    await sync_to_async(rows)()
    engine = StrategyEngine(redis_client=aredis)
    await engine.setup()
    candles = series([70_300, 70_200, 70_100, 70_000, 69_000, 69_500])
    push_list(redis_client, candles)  # the head (candle 5) is the open one
    await engine.handle(_indicators_envelope())  # candle 4's values: RSI 25.5
    [ctx] = OnIndicators.seen
    assert ctx.candle.time == candles[4].time and ctx.candle.close == Decimal(69_000)
    assert ctx.closes == (Decimal(70_100), Decimal(70_000), Decimal(69_000))
    assert ctx.indicators["rsi"] == 25.5
    [signal] = await sync_to_async(list)(Signal.objects.all())
    assert (signal.action, signal.confidence, signal.reason) == ("BUY", Decimal("0.5"), "rsi low")
    # candle_closed does not call a strategy that only overrides on_indicators
    await engine.handle(envelope(candles[4]))
    assert engine.counts["no_strategy"] == 1


@committed
async def test_indicators_updated_for_a_candle_not_in_the_list_is_skipped(
    aredis, redis_client, test_kinds, caplog
):
    await sync_to_async(stocks)()
    await sync_to_async(make)("by-rsi", kind="test_on_indicators")
    engine = StrategyEngine(redis_client=aredis)
    await engine.setup()
    push_list(redis_client, series([70_000, 70_100]))  # candles 0 and 1 only
    with caplog.at_level(logging.WARNING, logger="qb.strategies"):
        await engine.handle(_indicators_envelope())  # candle 4
    assert engine.counts == {"candle_missing": 1}
    assert "but the candle is not in candles:005930:1m" in caplog.text
    assert OnIndicators.seen == []


@committed
async def test_on_candle_sees_the_indicators_hash_only_for_its_own_candle(
    aredis, redis_client, test_kinds
):
    seen = []

    class Peek(BaseStrategy):
        kind = "test_peek"

        def on_candle(self, ctx):
            seen.append(ctx.indicators)
            return []

    register(Peek)
    try:
        await sync_to_async(stocks)()
        await sync_to_async(make)("peek", kind="test_peek")
        engine = StrategyEngine(redis_client=aredis)
        await engine.setup()
        candles = series([70_000, 70_100])
        push_list(redis_client, candles)
        fields = {"interval": "1m", "time": "2026-01-05T00:00:00Z", "rsi": "41.5", "macd": "2"}
        redis_client.hset(indicators_key(SYMBOL), mapping=fields)
        await engine.handle(envelope(candles[1]))  # the hash still holds candle 0
        redis_client.hset(indicators_key(SYMBOL), "time", "2026-01-05T00:01:00Z")
        await engine.handle(envelope(candles[1]))
    finally:
        _REGISTRY.pop("test_peek", None)
    assert seen == [
        None,
        {"sma_20": None, "rsi": 41.5, "macd": 2.0, "macd_signal": None, "macd_hist": None},
    ]


@committed
async def test_reload_follows_the_table(aredis, redis_client, settings):
    await sync_to_async(stocks)()
    await sync_to_async(make)("sample")
    engine = StrategyEngine(redis_client=aredis)
    await engine.setup()
    assert await engine.reload() is False  # nothing changed: nothing rebuilt
    sample = await sync_to_async(Strategy.objects.get)(name="sample")
    await sync_to_async(strategy_update)(strategy=sample, enabled=False)
    assert await engine.reload() is True
    assert len(engine.book) == 0
    await sync_to_async(strategy_update)(strategy=sample, enabled=True)
    await sync_to_async(make)("second", symbols=["000660"])

    # loop() does it by itself every STRATEGY_RELOAD_SECONDS.
    settings.STRATEGY_RELOAD_SECONDS = 0.05
    task = asyncio.create_task(engine.loop())
    deadline = time.monotonic() + WAIT
    while len(engine.book) != 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    engine.stopping.set()
    await asyncio.wait_for(task, WAIT)
    assert sorted(i.row.name for i in engine.book.loaded.values()) == ["sample", "second"]


@committed
async def test_a_signal_the_database_refuses_is_logged_and_the_engine_goes_on(
    aredis, redis_client, caplog, settings
):
    await sync_to_async(stocks)()
    await sync_to_async(make)("sample")
    engine = StrategyEngine(redis_client=aredis)
    await engine.setup()
    push_list(redis_client, series(UP))
    # The strategy's row is gone under the engine (deleted by hand): its signal cannot be
    # stored. Logged, counted; the engine answers the next event.
    await sync_to_async(Strategy.objects.all().delete)()
    with caplog.at_level(logging.WARNING, logger="qb.strategies"):
        await engine.handle(envelope(candle(4, UP[-1])))
    assert engine.counts["signals_refused"] == 1
    assert "Signal of sample on 005930 refused by the database" in caplog.text
    assert engine.stats()["strategies"] == 1


@committed
async def test_redis_gone_fails_the_event_not_the_engine(aredis, redis_client, caplog):
    await sync_to_async(stocks)()
    await sync_to_async(make)("sample")
    gone = redis.asyncio.Redis(host="127.0.0.1", port=closed_port(), socket_connect_timeout=1)
    engine = StrategyEngine(redis_client=gone)
    await engine.setup()
    with caplog.at_level(logging.ERROR, logger="qb.strategies"):
        await engine.handle(envelope(candle(4, UP[-1])))
    assert engine.counts == {"failed": 1}
    assert "Strategy engine failed on a candle_closed event" in caplog.text
    await gone.aclose()
    # Back on a Redis that answers, the next event is handled.
    engine._redis = aredis
    push_list(redis_client, series(UP))
    await engine.handle(envelope(candle(4, UP[-1])))
    assert engine.counts["signals"] == 1


def test_the_registry_names_this_engine():
    from qbsite.engines import load_engine_class

    assert load_engine_class("strategy") is StrategyEngine


@committed
async def test_the_engine_in_the_runtime_turns_a_candle_into_a_signal(aredis, redis_client):
    import os

    from marketdata.keys import heartbeat_key
    from qbsite.engines import Runtime

    await sync_to_async(stocks)()
    await sync_to_async(make)("runtime-sample")
    mine = Signal.objects.filter(strategy__name="runtime-sample")
    candles = series(UP)
    push_list(redis_client, candles)
    engine = StrategyEngine()
    runtime = Runtime([engine], heartbeat_seconds=0.2, backoff_initial=0.05, backoff_max=0.2)
    task = asyncio.create_task(runtime.run(handle_signals=False))
    try:
        async with asyncio.timeout(WAIT):  # this process's engine ready, its channel in the groups
            while True:
                beat = await aredis.hgetall(heartbeat_key("strategy"))
                if beat.get(b"pid") == str(os.getpid()).encode() and beat.get(b"ready") == b"1":
                    break
                await asyncio.sleep(0.05)
        await events.apublish(
            EventType.CANDLE_CLOSED,
            {"symbol": SYMBOL, "interval": "1m", "candle": candles[4].to_dict()},
            source="collector",
        )
        async with asyncio.timeout(WAIT):
            while not await sync_to_async(mine.exists)():
                await asyncio.sleep(0.05)
        assert engine.stats() == {"strategies": 1, "evaluated": 1, "signals": 1}
    finally:
        runtime.request_stop()
        async with asyncio.timeout(WAIT):
            await task
    signal = await sync_to_async(mine.get)()
    assert (signal.action, signal.time) == ("BUY", candles[4].time)
