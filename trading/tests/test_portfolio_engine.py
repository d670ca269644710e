"""The portfolio engine (trading/engines/portfolio.py): quotes through the real Redis channel
layer mark open positions in one statement per batch, position_updated only for a change,
fills keep the set of open positions, strategy performance after the close, bad events.

Transactional tests: the engine works on database_sync_to_async's thread, its own connection.
Pub/Sub channels are shared by every Redis database number, so position_updated events are
picked out by correlation_id.
"""

import asyncio
import contextlib
import datetime as dt
import json
import logging
import time
import uuid
from decimal import Decimal

import pytest
import redis
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import connections

from qbsite import events
from qbsite.engines import Runtime, load_engine_class
from qbsite.events import EventType
from qbsite.tests.api_factories import make_stock
from trading import services
from trading.engines.portfolio import PortfolioEngine, parse_quote_event, positions_mark
from trading.models import OrderStatus, Position, Strategy, StrategyPerformance

D = Decimal
WAIT = 20
T = dt.datetime(2026, 11, 25, 1, 0, tzinfo=dt.UTC)  # Wednesday 10:00 KST
AFTER_CLOSE = dt.datetime(2026, 11, 25, 7, 0, tzinfo=dt.UTC)  # 16:00 KST
BEFORE_CLOSE = dt.datetime(2026, 11, 25, 6, 0, tzinfo=dt.UTC)  # 15:00 KST
SATURDAY = dt.datetime(2026, 11, 28, 8, 0, tzinfo=dt.UTC)
committed = pytest.mark.django_db(transaction=True)


def fill(symbol, side, quantity, price, cid):
    order, _ = services.order_create(
        client_order_id=cid, symbol=symbol, side=side, order_type="MARKET", quantity=quantity,
        actor="test", at=T,
    )  # fmt: skip
    services.order_set_status(order_id=order.pk, to_status=OrderStatus.SUBMITTED, actor="test")
    services.order_apply_fill(
        order_id=order.pk, execution_id=cid, quantity=quantity, price=D(price), at=T
    )


def build_book():
    """005930: 10 for 700,105 (700,000 + 105); 035720: 100 for 1,000,150; 000660 flat."""
    make_stock("005930", market="KOSPI")
    make_stock("035720", name="Kakao", market="KOSDAQ")
    make_stock("000660", name="SK hynix", market="KOSPI")
    services.account_ensure(broker="paper", initial_cash=D("100000000"))
    fill("005930", "BUY", 10, "70000", "b1")
    fill("035720", "BUY", 100, "10000", "b2")
    fill("000660", "BUY", 1, "180000", "b3")
    fill("000660", "SELL", 1, "181000", "s3")


def position(symbol):
    row = Position.objects.get(symbol=symbol)
    return row.quantity, row.current_price, row.unrealized_pnl


# --- the one statement --------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_batch_is_one_statement_and_returns_only_what_changed(django_assert_num_queries):
    build_book()
    prices = {"005930": D(71000), "035720": D(9900), "000660": D(182000), "999999": D(5)}
    with django_assert_num_queries(1):
        changed = positions_mark(prices)
    assert sorted((r["symbol"], r["current_price"], r["unrealized_pnl"]) for r in changed) == [
        ("005930", D(71000), D(9895)),  # 710,000 - 700,105
        ("035720", D(9900), D(-10150)),  # 990,000 - 1,000,150
    ]
    assert set(changed[0]) == {
        "symbol", "quantity", "average_price", "cost_basis", "realized_pnl", "unrealized_pnl",
        "current_price",
    }  # fmt: skip
    assert position("000660") == (0, None, 0)  # flat: not marked
    with django_assert_num_queries(1):
        assert positions_mark(prices) == []  # same prices: nothing changed
    assert positions_mark({"005930": D(70500)})[0]["unrealized_pnl"] == D(4895)
    assert positions_mark({}) == []


@pytest.mark.django_db
def test_a_mark_agrees_with_the_services_and_a_later_fill():
    build_book()
    positions_mark({"005930": D(71000)})
    fill("005930", "BUY", 5, "71000", "b4")  # 355,000 + 53: 15 for 1,055,158, marked 71,000
    assert position("005930") == (15, D(71000), D(1065000) - D(1055158))
    positions_mark({"005930": D(72000)})
    assert position("005930") == (15, D(72000), D(1080000) - D(1055158))
    services.position_mark(symbol="005930", price=D(72000))
    assert position("005930") == (15, D(72000), D(24842))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (None, "the event has no data object"),
        ({"symbol": "abc", "quote": {"close": "1"}}, "data.symbol 'abc' is not a KRX symbol"),
        ({"symbol": "005930"}, "data.quote is missing"),
        ({"symbol": "005930", "quote": {}}, "data.quote.close None is not a decimal string"),
        ({"symbol": "005930", "quote": {"close": 7.5}}, "7.5 is not a decimal string"),
        ({"symbol": "005930", "quote": {"close": "abc"}}, "'abc' is not a number"),
        ({"symbol": "005930", "quote": {"close": "NaN"}}, "'NaN' is not a positive price"),
        ({"symbol": "005930", "quote": {"close": "-5"}}, "'-5' is not a positive price"),
        ({"symbol": "005930", "quote": {"close": "0"}}, "'0' is not a positive price"),
    ],
)
def test_bad_quote_events_are_refused_naming_the_field(data, reason):
    with pytest.raises(ValueError, match=reason):
        parse_quote_event({"event_type": "market_data_received", "data": data})


def test_a_good_quote_event():
    event = {"data": {"symbol": "005930", "quote": {"close": "70100", "volume": "5"}}}
    assert parse_quote_event(event) == ("005930", D(70100))


# --- the engine on the real channel layer --------------------------------------------------------


@pytest.fixture
async def book(redis_client):
    await sync_to_async(build_book)()
    yield
    await sync_to_async(connections.close_all)()


@pytest.fixture
def subscriber(settings):
    client = redis.Redis.from_url(settings.REDIS_URL)
    pubsub = client.pubsub()
    pubsub.subscribe(events.pubsub_channel(EventType.POSITION_UPDATED))
    assert pubsub.get_message(timeout=WAIT)["type"] == "subscribe"
    yield pubsub
    pubsub.close()
    client.close()


def published(pubsub, correlation_id: str) -> list[dict]:
    """Every position_updated with this correlation id seen within a second of the first."""
    found, deadline = [], time.monotonic() + WAIT
    while time.monotonic() < deadline:
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
        if message and message["type"] == "message":
            event = json.loads(message["data"])
            if event["correlation_id"] == correlation_id:
                found.append(event)
                deadline = min(deadline, time.monotonic() + 1)
        elif found:
            break
    return found


async def through_the_layer(event_type, data, correlation_id=None) -> dict:
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(events.group_name(event_type), channel)
    try:
        await events.apublish(event_type, data, source="test", correlation_id=correlation_id)
        message = await asyncio.wait_for(layer.receive(channel), WAIT)
    finally:
        await layer.group_discard(events.group_name(event_type), channel)
    assert message["type"] == "event.message"
    return message["event"]


def quote(symbol, close):
    return {"symbol": symbol, "quote": {"timestamp": T.isoformat(), "close": str(close)}}


async def test_registered_under_its_name():
    assert load_engine_class("portfolio") is PortfolioEngine
    assert set(PortfolioEngine.subscribes) == {"market_data_received", "order_executed"}


@committed
async def test_a_quote_through_the_layer_marks_and_publishes_once(book, subscriber):
    engine = PortfolioEngine(clock=lambda: BEFORE_CLOSE)
    await engine.setup()
    assert engine.open_symbols == {"005930", "035720"}
    cid = f"test-{uuid.uuid4()}"
    await engine.handle(
        await through_the_layer(EventType.MARKET_DATA_RECEIVED, quote("005930", 71000), cid)
    )
    assert engine.pending == {"005930": (D(71000), cid)}
    assert await engine.flush() == 1
    assert await sync_to_async(position)("005930") == (10, D(71000), D(9895))
    [event] = await sync_to_async(published)(subscriber, cid)
    assert (event["event_type"], event["source"]) == ("position_updated", "portfolio")
    assert event["data"] == {
        "symbol": "005930",
        "quantity": 10,
        "average_price": "70000.0000",
        "cost_basis": "700105.0000",
        "realized_pnl": "0.0000",
        "unrealized_pnl": "9895.0000",
        "current_price": "71000.00",
    }
    # The same price again: a statement, no change, no event.
    again = f"test-{uuid.uuid4()}"
    await engine.handle(
        await through_the_layer(EventType.MARKET_DATA_RECEIVED, quote("005930", 71000), again)
    )
    assert await engine.flush() == 0
    assert await sync_to_async(published)(subscriber, again) == []
    assert (engine.counts["batches"], engine.counts["changed"]) == (2, 1)


@committed
async def test_quotes_noted_meanwhile_are_one_batch_with_the_newest_price(book, subscriber):
    engine = PortfolioEngine(clock=lambda: BEFORE_CLOSE)
    await engine.setup()
    cid = f"test-{uuid.uuid4()}"
    for symbol, close in [("005930", 70500), ("035720", 9900), ("005930", 71500)]:
        event = events.build_envelope(
            EventType.MARKET_DATA_RECEIVED, quote(symbol, close), source="t", correlation_id=cid
        )
        await engine.handle(event)
    await engine.handle(
        events.build_envelope(EventType.MARKET_DATA_RECEIVED, quote("000660", 1), source="t")
    )
    assert engine.counts["ignored"] == 1  # flat: not even noted
    assert await engine.flush() == 2
    assert engine.counts["batches"] == 1
    assert await sync_to_async(position)("005930") == (10, D(71500), D(14895))
    assert await sync_to_async(position)("035720") == (100, D(9900), D(-10150))
    seen = await sync_to_async(published)(subscriber, cid)
    assert sorted(e["data"]["symbol"] for e in seen) == ["005930", "035720"]


@committed
async def test_fills_open_and_close_symbols(book):
    engine = PortfolioEngine(clock=lambda: BEFORE_CLOSE)
    await engine.setup()
    await sync_to_async(fill)("000660", "BUY", 2, "180000", "b5")
    executed = {"symbol": "000660", "side": "BUY", "fill_quantity": 2}
    await engine.handle(await through_the_layer(EventType.ORDER_EXECUTED, executed))
    assert engine.open_symbols == {"005930", "035720", "000660"}
    await engine.handle(
        events.build_envelope(EventType.MARKET_DATA_RECEIVED, quote("000660", 181000), source="t")
    )
    await sync_to_async(fill)("000660", "SELL", 2, "181000", "s5")
    await engine.handle(await through_the_layer(EventType.ORDER_EXECUTED, executed))
    assert engine.open_symbols == {"005930", "035720"}
    assert engine.pending == {}  # the quote noted for a position now flat is dropped
    assert await engine.flush() == 0


@committed
@pytest.mark.parametrize(
    "event",
    [
        "not a dict",
        {"event_type": "market_data_received", "data": {"symbol": "005930", "quote": "x"}},
        {"event_type": "market_data_received", "data": {"symbol": "005930",
                                                          "quote": {"close": "Infinity"}}},
        {"event_type": "order_executed", "data": {"symbol": None}},
    ],
)  # fmt: skip
async def test_bad_events_are_logged_and_the_engine_goes_on(book, caplog, event):
    engine = PortfolioEngine(clock=lambda: BEFORE_CLOSE)
    await engine.setup()
    with caplog.at_level(logging.WARNING, logger="qb.engine.portfolio"):
        await engine.handle(event)
    if isinstance(event, dict):
        assert engine.counts["rejected"] == 1
        assert "Rejected a" in caplog.text
    assert engine.pending == {}


# --- strategy performance after the close ---------------------------------------------------------


@pytest.fixture
async def strategy(book):
    return await sync_to_async(Strategy.objects.create)(
        name="sma", kind="sma_crossover", capital_allocation=D(1000000), enabled=True
    )


def rows():
    return list(StrategyPerformance.objects.values_list("strategy", "date", "trades_count"))


@committed
@pytest.mark.parametrize("now", [BEFORE_CLOSE, SATURDAY])
async def test_no_performance_before_the_close_or_on_a_closed_day(strategy, now):
    engine = PortfolioEngine(clock=lambda: now)
    await engine.setup()
    assert await engine.performance_if_due() == 0
    assert await sync_to_async(rows)() == []


@committed
async def test_performance_at_setup_after_the_close_if_missing_and_once_in_the_loop(strategy):
    engine = PortfolioEngine(clock=lambda: AFTER_CLOSE)
    await engine.setup()
    assert await sync_to_async(rows)() == [("sma", dt.date(2026, 11, 25), 0)]
    assert engine.performance_day == dt.date(2026, 11, 25)

    # Someone edits the row; a restart finds the day done and leaves it.
    await sync_to_async(StrategyPerformance.objects.update)(trades_count=7)
    restarted = PortfolioEngine(clock=lambda: AFTER_CLOSE)
    await restarted.setup()
    assert await sync_to_async(rows)() == [("sma", dt.date(2026, 11, 25), 7)]
    assert await restarted.performance_if_due() == 0  # done for the day

    # An engine that runs through the close computes the day once, whatever is there.
    clock = {"now": BEFORE_CLOSE}
    running = PortfolioEngine(clock=lambda: clock["now"])
    await running.setup()
    clock["now"] = AFTER_CLOSE
    assert await running.performance_if_due() == 1
    assert await sync_to_async(rows)() == [("sma", dt.date(2026, 11, 25), 0)]
    assert await running.performance_if_due() == 0


# --- in the runtime ------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def run(engine):
    runtime = Runtime([engine], heartbeat_seconds=0.2, backoff_initial=0.05, backoff_max=0.2)
    task = asyncio.create_task(runtime.run(handle_signals=False))
    try:
        yield runtime
    finally:
        runtime.request_stop()
        async with asyncio.timeout(WAIT):
            await task


@committed
async def test_the_engine_in_the_runtime_marks_from_the_collectors_events(book, subscriber):
    engine = PortfolioEngine(clock=lambda: BEFORE_CLOSE)
    async with run(engine):
        async with asyncio.timeout(WAIT):
            while not engine.open_symbols:  # setup done
                await asyncio.sleep(0.02)
        cid = f"test-{uuid.uuid4()}"
        await events.apublish_many(
            [
                (EventType.MARKET_DATA_RECEIVED, quote("005930", 70900), cid),
                (EventType.MARKET_DATA_RECEIVED, quote("035720", 10100), cid),
            ],
            source="collector",
        )
        # Not sync_to_async: its one thread is the engine's database thread.
        seen = await asyncio.to_thread(published, subscriber, cid)
    assert sorted(e["data"]["symbol"] for e in seen) == ["005930", "035720"]
    assert await sync_to_async(position)("005930") == (10, D(70900), D(8895))
    assert await sync_to_async(position)("035720") == (100, D(10100), D(9850))
    await sync_to_async(connections.close_all)()
