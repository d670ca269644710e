"""The orders engine (trading/engines/orders.py): signals and quotes through the real Redis
channel layer, recovery at setup, the sweep, and bad events (logged, never fatal).

Transactional tests: the engine works on database_sync_to_async's thread, its own connection.
"""

import asyncio
import contextlib
import datetime as dt
import logging
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import connections

from marketdata.keys import heartbeat_key
from ops.logging import SystemLogHandler
from ops.models import SystemLog
from qbsite import events
from qbsite.engines import Runtime, load_engine_class
from qbsite.events import EventType
from qbsite.tests.api_factories import make_stock
from trading import oms
from trading.engines.orders import OrdersEngine
from trading.models import Order, OrderStatus, Signal
from trading.tests.oms_helpers import (
    assert_ledger_consistent,
    make_signal,
    make_strategy,
    paper_account,
    put_quote,
)

D = Decimal
S = OrderStatus
WAIT = 20
committed = pytest.mark.django_db(transaction=True)
pytestmark = committed


@pytest.fixture
async def world(redis_client):
    """A stock, the paper account, a strategy and a fresh quote (committed rows)."""

    def build():
        make_stock("005930", market="KOSPI")
        paper_account("10000000")
        return make_strategy(allocation="1000000")

    strategy = await sync_to_async(build)()
    put_quote(redis_client, close=70000)
    yield strategy
    # The engine's thread holds a connection to the test database: give it back.
    await sync_to_async(connections.close_all)()


def signal_event(signal_id) -> dict:
    return {"signal_id": signal_id, "strategy": "sma-a", "symbol": "005930", "action": "BUY"}


async def through_the_layer(event_type, data) -> dict:
    """Publish like any producer and take the envelope off a channel of the event's group."""
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(events.group_name(event_type), channel)
    try:
        await events.apublish(event_type, data, source="test")
        message = await asyncio.wait_for(layer.receive(channel), WAIT)
    finally:
        await layer.group_discard(events.group_name(event_type), channel)
    assert message["type"] == "event.message"
    return message["event"]


def orders(**filters):
    return list(Order.objects.filter(**filters).order_by("id"))


async def test_registered_under_its_name():
    assert load_engine_class("orders") is OrdersEngine
    assert set(OrdersEngine.subscribes) == {
        "trading_signal",
        "market_data_received",
        "order_placed",
    }


async def test_a_signal_through_the_channel_layer_becomes_one_order(world):
    engine = OrdersEngine()
    await engine.setup()
    signal = await sync_to_async(make_signal)(world)
    envelope = await through_the_layer(EventType.TRADING_SIGNAL, signal_event(signal.pk))
    await engine.handle(envelope)
    [order] = await sync_to_async(orders)()
    # 1,000,000 at 70,100: 14 shares (981,400 + 147).
    assert (order.signal_id, order.quantity, order.status) == (signal.pk, 14, S.FILLED)
    # The same event delivered again (a replay) changes nothing.
    await engine.handle(envelope)
    assert len(await sync_to_async(orders)()) == 1
    assert engine.counts["signals"] == 2
    assert engine.watched == set()
    await sync_to_async(assert_ledger_consistent)()


async def test_quotes_fill_resting_paper_orders_only_for_watched_symbols(world, redis_client):
    engine = OrdersEngine()
    await engine.setup()
    order, _ = await sync_to_async(oms.order_place)(
        client_order_id="rest",
        symbol="005930",
        side="BUY",
        order_type="LIMIT",
        quantity=3,
        limit_price=D(69000),
        actor="api:test",
    )
    assert order.status == S.ACCEPTED
    # Placed elsewhere (the API): its order_placed event tells the engine.
    assert engine.watched == set()
    placed = {"order_id": order.pk, "symbol": "005930", "broker": "paper", "status": "SUBMITTED"}
    await engine.handle(await through_the_layer(EventType.ORDER_PLACED, placed))
    assert engine.watched == {"005930"}

    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    put_quote(redis_client, close=69500, at=later)
    quote = {"symbol": "005930", "quote": {"close": "69500"}}
    await engine.handle(await through_the_layer(EventType.MARKET_DATA_RECEIVED, quote))
    assert engine.watched == {"005930"}  # not crossed yet
    put_quote(redis_client, close=68900, at=later + dt.timedelta(seconds=1))
    await engine.handle(await through_the_layer(EventType.MARKET_DATA_RECEIVED, quote))
    [filled] = await sync_to_async(orders)()
    assert (filled.status, filled.average_fill_price) == (S.FILLED, D(68900))
    assert engine.watched == set()  # nothing open there any more
    matches = engine.counts["matches"]
    other = {"symbol": "000660", "quote": {"close": "100000"}}
    await engine.handle(await through_the_layer(EventType.MARKET_DATA_RECEIVED, other))
    assert engine.counts["matches"] == matches  # an unwatched symbol costs no query


async def test_setup_recovers_pending_signals_and_watches_open_orders(world, redis_client):
    def before_the_crash():
        signal = make_signal(world, quantity=2)
        oms.order_place(
            client_order_id="rest",
            symbol="005930",
            side="BUY",
            order_type="LIMIT",
            quantity=1,
            limit_price=D(60000),
            actor="t",
        )
        return signal

    signal = await sync_to_async(before_the_crash)()
    engine = OrdersEngine()
    await engine.setup()
    signal = await sync_to_async(Signal.objects.select_related("order").get)(pk=signal.pk)
    assert signal.outcome == "ORDERED"
    assert (signal.order.quantity, signal.order.status) == (2, S.FILLED)
    assert engine.watched == {"005930"}  # the resting limit


async def test_the_sweep_orders_a_signal_whose_event_was_lost(world, settings):
    engine = OrdersEngine()
    await engine.setup()

    def lost():
        signal = make_signal(world, quantity=1)
        Signal.objects.filter(pk=signal.pk).update(
            created_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=10)
        )
        return signal

    signal = await sync_to_async(lost)()
    counts = await engine.sweep()
    assert counts["signals"] == 1
    signal = await sync_to_async(Signal.objects.get)(pk=signal.pk)
    assert signal.outcome == "ORDERED"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({}, "data.signal_id None is not a positive integer"),
        ({"signal_id": "7"}, "data.signal_id '7' is not a positive integer"),
        ({"signal_id": -1}, "data.signal_id -1 is not a positive integer"),
        ({"signal_id": True}, "data.signal_id True is not a positive integer"),
    ],
)
async def test_bad_signal_events_are_rejected_and_logged(world, caplog, data, reason):
    engine = OrdersEngine()
    with caplog.at_level(logging.WARNING, logger="qb.engine.orders"):
        await engine.handle({"event_type": "trading_signal", "data": data})
        await engine.handle({"event_type": "trading_signal", "data": "nonsense"})
    assert engine.counts["rejected"] == 2
    assert f"Rejected a trading_signal event: {reason}." in caplog.text
    assert "the event has no data object" in caplog.text


async def test_an_unknown_signal_is_logged_to_system_logs(world):
    engine = OrdersEngine()
    await engine.handle({"event_type": "trading_signal", "data": {"signal_id": 999999}})
    assert engine.counts["failed"] == 1
    [handler] = [h for h in logging.getLogger().handlers if isinstance(h, SystemLogHandler)]
    assert await sync_to_async(handler.flush)(timeout=30)
    # (Earlier tests' lines may land after their flush: look for this one.)
    rows = await sync_to_async(list)(
        SystemLog.objects.filter(component="qb.engine.orders", message__contains="999999")
    )
    assert [(r.level, r.message) for r in rows] == [
        ("WARNING", "trading_signal event not handled: No signal 999999.")
    ]


@contextlib.asynccontextmanager
async def running(engine):
    runtime = Runtime([engine], heartbeat_seconds=0.2, backoff_initial=0.05, backoff_max=0.2)
    task = asyncio.create_task(runtime.run(handle_signals=False))
    try:
        yield runtime
    finally:
        runtime.request_stop()
        async with asyncio.timeout(WAIT):
            await task


async def until(predicate, what):
    try:
        async with asyncio.timeout(WAIT):
            while not await predicate():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"no {what} within {WAIT} s") from None


async def test_the_engine_in_the_runtime(world, redis_client):
    """The whole delivery path: group -> engine.orders channel -> handle, with heartbeats."""
    engine = OrdersEngine()
    async with running(engine):

        async def ready():
            beat = redis_client.hgetall(heartbeat_key("orders"))
            return beat.get(b"ready") == b"1"

        await until(ready, "ready heartbeat")
        signals = [await sync_to_async(make_signal)(world, quantity=1) for _ in range(5)]
        for signal in signals:
            await events.apublish(EventType.TRADING_SIGNAL, signal_event(signal.pk), source="t")

        async def all_ordered():
            return await sync_to_async(
                Signal.objects.filter(outcome="ORDERED", order__status=S.FILLED).count
            )() == len(signals)

        await until(all_ordered, "orders for the five signals")
    assert await sync_to_async(Order.objects.count)() == 5
    await sync_to_async(assert_ledger_consistent)()
