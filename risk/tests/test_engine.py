"""The risk engine (risk/engines.py): automatic halts and reductions, alerts de-duplicated
across checks, exits on quotes through the real Redis channel layer, the high-water mark
across a restart, risk_metrics rows, and the engine in the runtime.

Transactional tests: the engine works on database_sync_to_async's thread, its own connection.
"""

import asyncio
import contextlib
import datetime as dt
import itertools
import logging
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import connections
from django.utils import timezone

from qbsite import events
from qbsite.engines import Runtime, load_engine_class
from qbsite.events import EventType
from qbsite.tests.api_factories import make_candle, make_stock
from risk import services as risk_services
from risk.engines import RiskEngine, metrics_snapshot, portfolio_figures
from risk.models import RiskAlert, RiskLock, RiskMetric, TradingStateChange
from risk.protections import hwm_key
from trading import services
from trading.models import Order, OrderStatus, Position
from trading.tests.oms_helpers import make_strategy, paper_account, put_quote

D = Decimal
WAIT = 20
committed = pytest.mark.django_db(transaction=True)
_ids = itertools.count(1)


def fill(side, quantity, price, *, symbol="005930", strategy=None):
    cid = f"t-{next(_ids)}"
    order, _ = services.order_create(
        client_order_id=cid, symbol=symbol, side=side, order_type="MARKET",
        quantity=quantity, strategy=strategy, actor="test",
    )  # fmt: skip
    services.order_set_status(order_id=order.pk, to_status=OrderStatus.SUBMITTED, actor="test")
    return services.order_apply_fill(
        order_id=order.pk, execution_id=cid, quantity=quantity, price=D(price)
    )


def build():
    make_stock("005930", market="KOSPI", sector="Tech")
    make_stock("000660", name="SK hynix", market="KOSPI", sector="Tech")
    paper_account("100000000")
    make_strategy("sma-a")


@pytest.fixture
async def book(redis_client):
    await sync_to_async(build)()
    yield redis_client
    await sync_to_async(connections.close_all)()


def state():
    return risk_services.trading_state_get()


def alerts_of(kind):
    return list(RiskAlert.objects.filter(alert_type=kind).order_by("id"))


async def through_the_layer(event_type, data) -> dict:
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(events.group_name(event_type), channel)
    try:
        await events.apublish(event_type, data, source="test")
        message = await asyncio.wait_for(layer.receive(channel), WAIT)
    finally:
        await layer.group_discard(events.group_name(event_type), channel)
    return message["event"]


def quote(symbol, close):
    return {"symbol": symbol, "quote": {"close": str(close)}}


async def test_registered_under_its_name():
    assert load_engine_class("risk") is RiskEngine
    assert set(RiskEngine.subscribes) == {"market_data_received", "order_executed"}


# --- limits and the trading state ---------------------------------------------------------------


@committed
async def test_the_daily_loss_limit_halts_once_and_an_operator_may_resume(book):
    def lose():
        fill("BUY", 10, 100000)
        fill("SELL", 10, 94000)  # -60,000 and costs: above the 50,000 limit

    await sync_to_async(lose)()
    engine = RiskEngine()
    await engine.setup()
    [alert] = await engine.check()
    assert (alert.alert_type, alert.severity) == ("DAILY_LOSS", "CRITICAL")
    assert alert.action_taken == "Trading state ACTIVE -> HALTED."
    assert await sync_to_async(state)() == "HALTED"
    change = await sync_to_async(TradingStateChange.objects.get)(to_state="HALTED")
    assert (change.automatic, change.actor) == (True, "engine:risk")
    assert change.reason.startswith("DAILY_LOSS: Realized loss today 62,171 KRW")
    assert await sync_to_async(RiskMetric.objects.count)() == 1  # stored with the breach

    assert await engine.check() == []  # the same breach: no second alert, no second change
    await sync_to_async(risk_services.trading_state_set)(
        state="ACTIVE", actor="admin:olivia", reason="Reviewed."
    )
    await sync_to_async(risk_services.limits_update)(alert_dedup_seconds=1, actor="test")
    await sync_to_async(book.flushdb)()  # the Redis de-duplication window is over
    await sync_to_async(RiskAlert.objects.update)(created_at=timezone.now() - dt.timedelta(5))
    [again] = await engine.check()
    assert again.alert_type == "DAILY_LOSS"
    assert again.action_taken.startswith("None: trading was set to HALTED for this breach")
    assert await sync_to_async(state)() == "ACTIVE"  # the operator is not overruled


@committed
async def test_losing_sells_in_a_row_reduce_at_the_limit_not_below(book):
    engine = RiskEngine()
    await engine.setup()
    for n in range(1, 6):
        await sync_to_async(fill)("BUY", 1, 100000)
        await sync_to_async(fill)("SELL", 1, 99000)
        figures = await sync_to_async(portfolio_figures)(now=timezone.now())
        assert figures.consecutive_losses == n
        raised = await engine.check()
        if n < 5:
            assert raised == [] and await sync_to_async(state)() == "ACTIVE"
    assert [a.alert_type for a in raised] == ["CONSECUTIVE_LOSSES"]
    assert await sync_to_async(state)() == "REDUCING"
    # The state changed: the streak starts again, as the pre-trade check counts it.
    figures = await sync_to_async(portfolio_figures)(now=timezone.now())
    assert figures.consecutive_losses == 0


@committed
async def test_a_halt_is_never_lowered_to_reducing(book):
    await sync_to_async(risk_services.trading_state_set)(
        state="HALTED", actor="admin:olivia", reason="Maintenance."
    )
    await sync_to_async(risk_services.limits_update)(monthly_loss_limit=1000, actor="test")
    await sync_to_async(fill)("BUY", 1, 100000)
    await sync_to_async(fill)("SELL", 1, 98000)
    engine = RiskEngine()
    await engine.setup()
    [alert] = await engine.check()
    assert (alert.alert_type, alert.action_taken) == ("MONTHLY_LOSS", "Trading already HALTED.")
    assert await sync_to_async(state)() == "HALTED"


@committed
async def test_exposure_alerts_are_not_a_flood(book):
    await sync_to_async(fill)("BUY", 250, 100000)  # 25 % of 100,000,000: above 20 %
    engine = RiskEngine()
    await engine.setup()
    first = await engine.check()
    assert [(a.alert_type, a.symbol_id) for a in first] == [("POSITION_RATIO", "005930")]
    for _ in range(3):
        assert await engine.check() == []
    assert await sync_to_async(RiskAlert.objects.count)() == 1
    assert engine.counts["checks"] == 4


# --- protections on quotes ------------------------------------------------------------------------


@committed
async def test_a_stop_loss_quote_through_the_layer_sells_and_cools_down(book, caplog):
    await sync_to_async(fill)("BUY", 10, 100000)
    engine = RiskEngine()
    await engine.setup()
    assert set(engine.holdings) == {"005930"}
    await engine.handle(await through_the_layer(EventType.MARKET_DATA_RECEIVED,
                                                quote("005930", 97010)))  # fmt: skip
    assert (
        await sync_to_async(Order.objects.filter(client_order_id__startswith="risk-").count)() == 0
    )
    put_quote(book, close=97000, prev_close=100000)  # what the order path prices it at
    engine.evaluated.clear()  # past the quote throttle
    with caplog.at_level(logging.WARNING, logger="qb.risk.alerts"):
        await engine.handle(
            await through_the_layer(EventType.MARKET_DATA_RECEIVED, quote("005930", 97000))
        )
    order = await sync_to_async(Order.objects.get)(client_order_id__startswith="risk-sl-")
    assert (order.side, order.order_type, order.quantity, order.status) == (
        "SELL", "MARKET", 10, OrderStatus.FILLED,
    )  # fmt: skip
    assert await sync_to_async(lambda: Position.objects.get(symbol="005930").quantity)() == 0
    assert engine.holdings == {}
    lock = await sync_to_async(RiskLock.objects.get)()
    assert (lock.kind, lock.symbol_id) == ("COOLDOWN", "005930")
    [alert] = await sync_to_async(alerts_of)("STOP_LOSS")
    assert (alert.current_value, alert.limit_value) == (D(97000), D(97000))
    assert "COOLDOWN lock until" in alert.action_taken
    assert "Risk alert STOP_LOSS 005930" in caplog.text


@committed
async def test_the_trailing_stop_follows_the_high_across_a_restart(book):
    await sync_to_async(fill)("BUY", 10, 100000)
    engine = RiskEngine()
    engine.quote_interval = 0
    await engine.setup()
    for price in (101000, 104000, 102000):
        await engine.handle(
            events.build_envelope(
                EventType.MARKET_DATA_RECEIVED, quote("005930", price), source="t"
            )
        )
    assert engine.high["005930"] == D(104000)
    episode = engine.holdings["005930"].episode
    assert book.hgetall(hwm_key("005930")) == {
        b"episode": str(episode).encode(), b"high": b"104000",
    }  # fmt: skip
    # A restart finds the high in Redis; with Redis flushed, in the episode's candles.
    restarted = RiskEngine()
    await restarted.setup()
    assert restarted.high["005930"] == D(104000)
    book.delete(hwm_key("005930"))
    await sync_to_async(make_candle)("005930", time=timezone.now(), close="103500")
    rebuilt = RiskEngine()
    rebuilt.quote_interval = 0
    await rebuilt.setup()
    assert rebuilt.high["005930"] == D(103500)
    # 103,500 x 0.98 = 101,430: just above, nothing; at it, the trailing stop.
    put_quote(book, close=101430, prev_close=100000)
    for price in (101440, 101430):
        await rebuilt.handle(
            events.build_envelope(
                EventType.MARKET_DATA_RECEIVED, quote("005930", price), source="t"
            )
        )
    order = await sync_to_async(Order.objects.get)(client_order_id__startswith="risk-")
    assert order.client_order_id == f"risk-ts-005930-{episode}-0-1"
    assert await sync_to_async(RiskLock.objects.count)() == 0  # no cool-down after a gain


@committed
async def test_bad_events_are_logged_and_the_engine_goes_on(book, caplog):
    engine = RiskEngine()
    await engine.setup()
    with caplog.at_level(logging.WARNING, logger="qb.engine.risk"):
        await engine.handle({"event_type": "market_data_received", "data": {"symbol": "x"}})
        await engine.handle({"event_type": "order_executed", "data": None})
    assert engine.counts["rejected"] == 2
    assert "Rejected a market_data_received event" in caplog.text


# --- metrics --------------------------------------------------------------------------------------


def history():
    """60 daily candles: 005930 moves 1.5 x the benchmark 069500, plus noise."""
    make_stock("069500", name="KODEX 200", market="ETF")
    start = dt.datetime(2026, 8, 1, 6, 0, tzinfo=dt.UTC)
    bench, ours = D(30000), D(100000)
    for i in range(60):
        step = D((i * 37) % 11 - 5) / 1000  # -0.5 % .. +0.5 %
        bench = (bench * (1 + step)).quantize(D(1))
        ours = (ours * (1 + step * D("1.5") + D((i % 3) - 1) / 10000)).quantize(D(1))
        at = start + dt.timedelta(days=i)
        make_candle("069500", interval="1d", time=at, close=str(bench))
        make_candle("005930", interval="1d", time=at, close=str(ours))


@committed
async def test_a_snapshot_stores_var_sharpe_beta_and_drawdown(book):
    await sync_to_async(history)()
    await sync_to_async(fill)("BUY", 100, 100000)
    now = dt.datetime(2026, 10, 1, 6, 0, tzinfo=dt.UTC)
    row = await sync_to_async(metrics_snapshot)(now=now, prices={"005930": D(99000)})
    # cash 100,000,000 - 10,001,500 (with commission); 100 x 99,000 marked.
    assert row.portfolio_value == D("99898500.0000")
    assert row.var_95 > 0
    assert row.beta == pytest.approx(D("0.15"), abs=D("0.02"))  # 1.5 x a 10 % holding
    assert row.sharpe_ratio is not None
    assert row.max_drawdown == 0
    later = await sync_to_async(metrics_snapshot)(
        now=now + dt.timedelta(minutes=1), prices={"005930": D(89000)}
    )
    assert later.max_drawdown == pytest.approx(D("0.010010"), abs=D("0.000001"))
    assert later.daily_pnl == D(-1000000)  # against the day's first snapshot


# --- in the runtime -------------------------------------------------------------------------------


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
async def test_the_engine_in_the_runtime_takes_profit_from_the_collectors_quote(book):
    await sync_to_async(fill)("BUY", 10, 100000)
    put_quote(book, close=105000, prev_close=100000)
    engine = RiskEngine()
    async with run(engine):
        async with asyncio.timeout(WAIT):
            while not engine.holdings:  # setup done
                await asyncio.sleep(0.02)
        await events.apublish_many(
            [(EventType.MARKET_DATA_RECEIVED, quote("005930", 105000))], source="collector"
        )
        async with asyncio.timeout(WAIT):
            while engine.holdings:  # sold: the fill's event or the engine's own refresh
                await asyncio.sleep(0.05)
    order = await sync_to_async(Order.objects.get)(client_order_id__startswith="risk-tp-")
    assert order.status == OrderStatus.FILLED
    await sync_to_async(connections.close_all)()


@pytest.mark.django_db
def test_the_snapshot_command_stores_and_prints_a_row(redis_client):
    from io import StringIO

    from django.core.management import call_command

    build()
    fill("BUY", 10, 100000)
    out = StringIO()
    call_command("risk_snapshot", stdout=out)
    row = RiskMetric.objects.get()
    assert out.getvalue().startswith(f"risk_metrics {row.pk} at ")
    assert "portfolio 99,999,850 KRW" in out.getvalue()  # marked at its average price
    assert "VaR 95 -" in out.getvalue()  # no history in market_data
