"""Reconciliation with KIS (trading/broker_sync.py) against the fake KIS server: a missing
fill, an order we did not place, a position that differs, an unreachable KIS, an order left
from an earlier day; the orders engine's start-up reconciliation, fill notices and polling."""

from __future__ import annotations

import asyncio
import datetime as dt
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from django.db import connections

from kis import config as kc
from kis.frames import TR_FILLS_REAL
from kis.testing.fake_ws import notice_record, ws_hub
from kis.ws import KISSessionConsumer, active_sessions
from trading import broker_sync
from trading.brokers.kis import kis_runtime
from trading.engines.orders import OrdersEngine
from trading.models import BrokerSync, BrokerSyncStatus, Order, OrderStatus, Position
from trading.tests import kis_fixtures
from trading.tests.kis_fixtures import odno, place, reconciled
from trading.tests.oms_helpers import assert_ledger_consistent

fake_kis = kis_fixtures.fake_kis
kis_settings = kis_fixtures.kis_settings
kis_world = kis_fixtures.kis_world
D = Decimal
S = OrderStatus


def place_at_kis(fake, *, side="buy", quantity=5, price=None):
    """An order placed at KIS by someone else (the HTS), through the fake's own socket."""
    runtime = kis_runtime()
    ack = runtime.call(runtime.client.order_cash(side, "005930", quantity, price))
    return ack.order_no


@pytest.mark.django_db
def test_a_first_reconciliation_agrees_and_opens_the_account_with_kis_cash(kis_world):
    report = reconciled()
    row = BrokerSync.objects.get(broker="kis")
    assert row.status == BrokerSyncStatus.AGREED and row.reason == ""
    assert broker_sync.trading_allowed("kis") == (True, "")
    assert any("account kis created" in note for note in report.notes)
    from trading.models import Account

    assert Account.objects.get(broker="kis").cash == D(100_000_000)


@pytest.mark.django_db
def test_a_missing_fill_is_applied(kis_world):
    reconciled()
    order = place(quantity=10)
    kis_world.state.fill(odno(order), 6, 70000)  # the notice was lost, the engine was down
    report = broker_sync.broker_reconcile()
    assert report.agreed, report.lines()
    order.refresh_from_db()
    assert (order.status, order.filled_quantity) == (S.PARTIALLY_FILLED, 6)
    assert any("missing fill of 6 @ 70000" in line for line in report.applied)
    # Again: nothing more to apply.
    assert broker_sync.broker_reconcile().applied == []
    assert_ledger_consistent("kis")


@pytest.mark.django_db
def test_an_unknown_kis_order_is_recorded_as_external_with_its_fills(kis_world):
    reconciled()
    number = place_at_kis(kis_world, quantity=5, price=D(70000))
    kis_world.state.fill(number, 5, 70000)
    report = broker_sync.broker_reconcile()
    assert report.agreed, report.lines()
    [external] = Order.objects.filter(client_order_id__startswith="kis-ext-")
    assert external.client_order_id.endswith(number)
    assert (external.status, external.filled_quantity, external.strategy_id) == (
        S.FILLED, 5, None,
    )  # fmt: skip
    assert external.broker_order_id.endswith(f"-{number}")
    assert "recorded as " + external.client_order_id in report.external[0]
    assert Position.objects.get(symbol_id="005930").quantity == 5
    assert broker_sync.broker_reconcile().external == []  # recorded once


@pytest.mark.django_db
def test_a_position_mismatch_disagrees_and_stops_trading(kis_world):
    reconciled()
    kis_world.state.set_position("000660", 7, 100000)
    report = broker_sync.broker_reconcile()
    assert not report.agreed
    assert report.disagreements == ["position 000660: shares ours 0, KIS 7."]
    row = BrokerSync.objects.get(broker="kis")
    assert row.status == BrokerSyncStatus.DISAGREED
    assert "000660" in row.reason and row.report["disagreements"] == report.disagreements
    allowed, why = broker_sync.trading_allowed("kis")
    assert not allowed and "position 000660" in why
    # Once the two agree again (the holding sold at KIS), trading resumes.
    del kis_world.state.positions["000660"]
    assert broker_sync.broker_reconcile().agreed
    assert broker_sync.trading_allowed("kis") == (True, "")


@pytest.mark.django_db
def test_ours_filled_beyond_kis_is_a_disagreement_never_a_fix(kis_world):
    reconciled()
    order = place(quantity=10)
    kis_world.state.fill(odno(order), 2)
    broker_sync.kis_refresh()
    Order.objects.filter(pk=order.pk).update(filled_quantity=5)  # a bug, say
    report = broker_sync.broker_reconcile()
    assert any("we have 5 filled, KIS only 2" in d for d in report.disagreements)


@pytest.mark.django_db
def test_unreachable_kis_stops_trading_with_the_reason(kis_world):
    kis_world.state.fail_next(50, status=500, path=kc.PATH_DAILY_FILLS)
    report = broker_sync.broker_reconcile()
    assert report.status == BrokerSyncStatus.UNREACHABLE
    allowed, why = broker_sync.trading_allowed("kis")
    assert not allowed and "could not reach the broker" in why


@pytest.mark.django_db
def test_an_open_order_of_an_earlier_day_expires(kis_world):
    reconciled()
    order = place()
    # Our order is from yesterday and KIS's day has ended (it lists today only).
    Order.objects.filter(pk=order.pk).update(created_at=order.created_at - dt.timedelta(days=1))
    kis_world.state.orders.clear()
    report = broker_sync.broker_reconcile()
    order.refresh_from_db()
    assert order.status == S.EXPIRED
    assert report.agreed, report.lines()


@pytest.mark.django_db
def test_an_open_order_kis_does_not_know_today_disagrees(kis_world):
    reconciled()
    order = place()
    kis_world.state.orders.clear()
    report = broker_sync.broker_reconcile()
    assert report.disagreements == [
        f"order o-1 ({order.broker_order_id}) is ACCEPTED here but KIS does not list it."
    ]


@pytest.mark.django_db
def test_an_order_canceled_at_kis_is_canceled_here(kis_world):
    reconciled()
    order = place(quantity=10)
    kis_world.state.fill(odno(order), 4)
    kis_world.state.orders[odno(order)].cancelled = 6  # canceled in the HTS
    broker_sync.kis_refresh()
    order.refresh_from_db()
    assert (order.status, order.filled_quantity) == (S.CANCELED, 4)
    assert "Canceled at KIS with 4 of 10 filled" in order.reason


@pytest.mark.django_db
def test_override_needs_an_operator(kis_world):
    from qbsite.exceptions import InvalidInput

    reconciled()
    with pytest.raises(InvalidInput, match="operator"):
        broker_sync.sync_override(broker="kis", user=None)


# --- the orders engine ----------------------------------------------------------------------


@pytest.fixture
async def engine_world(kis_world, kis_settings):
    kis_settings.ORDERS_SWEEP_SECONDS = 30  # the notice must do it, not the sweep
    yield kis_world
    await sync_to_async(connections.close_all)()


async def wait_until(predicate, timeout=10.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not await sync_to_async(predicate)():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


@pytest.mark.django_db(transaction=True)
async def test_engine_reconciles_at_start_and_applies_a_fill_notice_at_once(engine_world):
    fake = engine_world
    await sync_to_async(place_at_kis)(fake, quantity=2, price=D(70000))  # external, to record
    from trading.brokers.kis import notice_websocket

    client = await sync_to_async(notice_websocket)()
    engine = OrdersEngine(notice_client=client)
    await engine.setup()
    assert engine.sync_status == BrokerSyncStatus.AGREED
    assert await sync_to_async(Order.objects.filter(client_order_id__startswith="kis-ext").count)()
    loop = asyncio.create_task(engine.loop())
    try:
        hub = ws_hub(fake.state)
        await hub.wait_for(lambda: hub.registered(TR_FILLS_REAL, "qbtester"))
        order = await sync_to_async(place)(quantity=10)
        assert order.status == S.ACCEPTED
        fake.state.fill(odno(order), 10, 70000)
        hub.push_notices(
            TR_FILLS_REAL,
            [
                notice_record(
                    order_no=odno(order),
                    symbol="005930",
                    quantity=10,
                    price=70000,
                    at=dt.datetime.now(dt.UTC),
                )
            ],
        )

        def filled():
            return Order.objects.get(pk=order.pk).status == S.FILLED

        await wait_until(filled)
        assert engine.counts["notices"] == 1
    finally:
        engine.stopping.set()
        await asyncio.wait_for(loop, 10)
        await engine.stop()
    assert active_sessions() == []  # its only consumer left: the session closed


@pytest.mark.django_db(transaction=True)
async def test_engine_and_kis_feed_in_one_process_share_one_websocket(engine_world):
    """runengines with COLLECTOR_FEED=kis and TRADING_BROKER=kis: the feed and the engine's own
    notice listener (no notice_client given) on one KIS session, each with its own frames."""
    from kis.frames import TR_TRADES
    from kis.testing.fake_ws import trade_record
    from marketdata.feeds.kis import KISWebSocketFeed

    fake = engine_world
    hub = ws_hub(fake.state)
    feed = KISWebSocketFeed(["005930"])
    ticks: asyncio.Queue = asyncio.Queue()

    async def pump():
        async for batch in feed.batches():
            await ticks.put(batch)

    feeding = asyncio.create_task(pump())
    engine = OrdersEngine()
    await engine.setup()
    loop = asyncio.create_task(engine.loop())
    try:
        wanted = {(TR_TRADES, "005930"), (TR_FILLS_REAL, "qbtester")}
        await hub.wait_for(lambda: hub.registrations() == wanted)
        assert engine.notice_client.session is feed.client.session
        order = await sync_to_async(place)(quantity=4)
        fake.state.fill(odno(order), 4, 70000)
        hub.push_notices(
            TR_FILLS_REAL,
            [
                notice_record(
                    order_no=odno(order),
                    symbol="005930",
                    quantity=4,
                    price=70000,
                    at=dt.datetime.now(dt.UTC),
                )
            ],
        )
        hub.push_trades([trade_record("005930", dt.datetime.now(dt.UTC), 70000, volume=9)])
        assert [t.volume for t in await asyncio.wait_for(ticks.get(), 5)] == [9]

        def filled():
            return Order.objects.get(pk=order.pk).status == S.FILLED

        await wait_until(filled)
        await asyncio.sleep(0.3)
        assert engine.counts["notices"] == 1  # the print did not reach the listener
        assert ticks.empty()  # nor the notice the feed
        assert hub.connections == 1 and len(hub.live) == 1
        await engine_stop(engine, loop)
        # The feed goes on alone on the same session.
        await hub.wait_for(lambda: hub.registrations() == {(TR_TRADES, "005930")})
        hub.push_trades([trade_record("005930", dt.datetime.now(dt.UTC), 70000, volume=2)])
        assert [t.volume for t in await asyncio.wait_for(ticks.get(), 5)] == [2]
        assert hub.connections == 1
    finally:
        if not loop.done():
            await engine_stop(engine, loop)
        await feed.close()
        await asyncio.wait_for(feeding, 5)
    assert active_sessions() == []


async def engine_stop(engine, loop):
    engine.stopping.set()
    await asyncio.wait_for(loop, 10)
    await engine.stop()


@pytest.mark.django_db(transaction=True)
async def test_engine_polls_kis_fills_without_notices(engine_world, kis_settings):
    kis_settings.ORDERS_SWEEP_SECONDS = 0.2
    kis_settings.KIS_HTS_ID = ""  # no listener: polling only
    fake = engine_world
    engine = OrdersEngine()
    await engine.setup()
    assert engine._listener is None
    loop = asyncio.create_task(engine.loop())
    try:
        order = await sync_to_async(place)(quantity=3)
        fake.state.fill(odno(order), 3, 70000)

        def filled():
            return Order.objects.get(pk=order.pk).status == S.FILLED

        await wait_until(filled)
    finally:
        engine.stopping.set()
        await asyncio.wait_for(loop, 10)
        await engine.stop()


@pytest.mark.django_db(transaction=True)
async def test_engine_refuses_to_trade_when_unreconciled(engine_world, kis_settings):
    kis_settings.KIS_HTS_ID = ""
    engine_world.state.set_position("000660", 1, 100000)
    engine = OrdersEngine()
    await engine.setup()
    assert engine.sync_status == BrokerSyncStatus.DISAGREED
    assert engine.stats()["kis_sync"] == "DISAGREED"
    order = await sync_to_async(place)()
    assert order.status == S.REJECTED and "position 000660" in order.reason
    await engine.stop()


def test_the_notice_client_is_a_consumer_of_the_shared_session(kis_settings):
    from trading.brokers.kis import notice_websocket

    client = notice_websocket()
    assert isinstance(client, KISSessionConsumer)
    assert client.name == "orders notices" and client.url == kis_settings.KIS_WS_URL
    assert client.session is None  # nothing opened before its first subscribe()
    asyncio.run(client.close())
