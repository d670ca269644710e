"""The paper broker (trading/brokers/paper.py): fills at the Redis quote, KRX grid and band,
partial fills, idempotent ids, and the ledger it leaves through the OMS, to the won.

Fills are stamped with the quote's time (now), so the sell tax is the one for trades from
today: 0.20 % on KOSPI from 2026 (0.05 % transaction tax + 0.15 % rural tax, each truncated to
the won); commission 0.015 % truncated to the won.
"""

import datetime as dt
import json
from decimal import Decimal

import pytest

from marketdata import krx
from marketdata.keys import heartbeat_key
from qbsite.tests.api_factories import make_stock
from trading import oms, services
from trading.brokers import BrokerError, get_broker
from trading.brokers.base import market_quote, parse_market_now
from trading.brokers.paper import (
    PaperBroker,
    execution_id,
    market_fill_price,
    paper_order_id,
    ticks_away,
)
from trading.models import Account, Order, OrderStatus, Position, Trade
from trading.tests.oms_helpers import assert_ledger_consistent, paper_account, put_quote

D = Decimal
S = OrderStatus
pytestmark = pytest.mark.django_db


@pytest.fixture
def stock(db):
    return make_stock("005930", market="KOSPI")


@pytest.fixture
def account(db):
    return paper_account("10000000")


def place(cid, side="BUY", quantity=10, order_type="MARKET", limit_price=None, symbol="005930"):
    order, _ = oms.order_place(
        client_order_id=cid,
        symbol=symbol,
        side=side,
        order_type=order_type,
        quantity=quantity,
        limit_price=None if limit_price is None else D(limit_price),
        actor="test",
    )
    return order


def transitions(order):
    return [(t.from_status, t.to_status) for t in order.transitions.order_by("id")]


# --- the pure parts of the fill model ---------------------------------------------------------


@pytest.mark.parametrize(
    ("price", "ticks", "direction", "expected"),
    [
        (70000, 1, "up", 70100),
        (70000, 1, "down", 69900),
        (50000, 1, "down", 49950),  # below 50,000 the grid is 50
        (49950, 1, "up", 50000),
        (49950, 2, "up", 50100),
        (5000, 1, "down", 4995),
        (2000, 1, "down", 1999),
        (1999, 1, "up", 2000),
        (70000, 0, "up", 70000),
        (70050, 0, "up", 70100),  # off the grid: rounded against the order
        (70050, 0, "down", 70000),
        (1, 3, "down", 1),  # the lowest price
    ],
)
def test_ticks_away(price, ticks, direction, expected):
    assert ticks_away(D(price), ticks, direction) == D(expected)


def test_etf_ticks_and_band_clamp():
    assert ticks_away(D(70000), 1, "up", instrument="etf") == D(70005)
    band = krx.price_limits(D(70000))  # 49,000 .. 91,000
    assert market_fill_price(D(91000), "BUY", ticks=2, market="KOSPI", band=band) == D(91000)
    assert market_fill_price(D(49000), "SELL", ticks=1, market="KOSPI", band=band) == D(49000)
    assert market_fill_price(D(90900), "BUY", ticks=1, market="KOSPI", band=band) == D(91000)
    assert market_fill_price(D(70000), "BUY", ticks=1, market="KOSPI", band=None) == D(70100)


def test_ids_are_deterministic():
    assert paper_order_id("abc") == paper_order_id("abc")
    assert paper_order_id("abc") != paper_order_id("abd")
    assert len(execution_id(paper_order_id("x" * 64), 10**9)) <= 64


def test_get_broker_names_the_known_ones():
    assert isinstance(get_broker(), PaperBroker)
    with pytest.raises(BrokerError, match="Unknown broker 'ibkr'; known brokers: kis, paper"):
        get_broker("ibkr")


# --- market orders ------------------------------------------------------------------------------


def test_market_buy_fills_at_the_quote_plus_one_tick(stock, account, redis_client):
    at = put_quote(redis_client, close=70000)
    order = place("m-1")
    assert order.status == S.FILLED
    assert order.broker_order_id == paper_order_id("m-1")
    assert order.average_fill_price == D(70100)
    [trade] = order.fills.all()
    assert (trade.quantity, trade.price, trade.commission, trade.tax) == (10, D(70100), D(105), 0)
    assert trade.execution_id == f"{paper_order_id('m-1')}-0"
    assert trade.timestamp == at  # the quote's time
    assert transitions(order) == [
        ("", S.NEW),
        (S.NEW, S.SUBMITTED),
        (S.SUBMITTED, S.ACCEPTED),
        (S.ACCEPTED, S.FILLED),
    ]
    assert Account.objects.get(broker="paper").cash == D(10_000_000 - 701_000 - 105)


@pytest.mark.parametrize(("ticks", "buy", "sell"), [(0, 70000, 70000), (3, 70300, 69700)])
def test_slippage_in_ticks(stock, account, redis_client, settings, ticks, buy, sell):
    settings.PAPER_SLIPPAGE_TICKS = ticks
    put_quote(redis_client, close=70000)
    assert place("b").average_fill_price == D(buy)
    assert place("s", side="SELL").average_fill_price == D(sell)


def test_the_ledger_to_the_won(stock, account, redis_client):
    put_quote(redis_client, close=70000)
    place("l-1", quantity=10)  # 10 @ 70,100 = 701,000 + 105
    put_quote(redis_client, close=69000)
    place("l-2", quantity=5)  # 5 @ 69,100 = 345,500 + 51 (51.825)
    position = Position.objects.get(symbol="005930")
    assert (position.quantity, position.average_price, position.cost_basis) == (
        15,
        D("69766.6667"),
        D(1_046_656),
    )
    put_quote(redis_client, close=72000)
    place("l-3", side="SELL", quantity=6)
    # 6 @ 71,900 = 431,400; commission 64 (64.71); tax 215 (215.7) + 647 (647.1) = 862;
    # cost removed 1,046,656 x 6/15 = 418,662.4; realized 11,811.6.
    sale = Trade.objects.get(order__client_order_id="l-3")
    assert (sale.price, sale.commission, sale.tax, sale.profit_loss) == (
        D(71900),
        D(64),
        D(862),
        D("11811.6"),
    )
    place("l-4", side="SELL", quantity=9, order_type="LIMIT", limit_price=72000)
    # 9 @ 72,000 = 648,000; commission 97 (97.2); tax 324 + 972 = 1,296;
    # cost 627,993.6 left; realized 18,613.4.
    sale = Trade.objects.get(order__client_order_id="l-4")
    assert (sale.price, sale.commission, sale.tax, sale.profit_loss) == (
        D(72000),
        D(97),
        D(1296),
        D("18613.4"),
    )
    position.refresh_from_db()
    assert (position.quantity, position.cost_basis, position.realized_pnl) == (0, 0, D(30425))
    # 10,000,000 - 701,105 - 345,551 + 430,474 + 646,607
    assert Account.objects.get(broker="paper").cash == D(10_030_425)
    assert_ledger_consistent()


def test_partial_fills_in_several_steps(stock, account, redis_client, settings):
    settings.PAPER_FILL_RATIO = D("0.3")
    start = dt.datetime.now(dt.UTC)
    put_quote(redis_client, close=70000, at=start)
    order = place("p-1", quantity=10)
    assert (order.status, order.filled_quantity) == (S.PARTIALLY_FILLED, 3)
    # The same quote again fills nothing (an order fills once per quote).
    assert oms.match_open_orders(symbol="005930") == 1
    order.refresh_from_db()
    assert order.filled_quantity == 3
    for step, close in enumerate((70500, 71000, 71500), start=1):
        put_quote(redis_client, close=close, at=start + dt.timedelta(seconds=step))
        left = oms.match_open_orders(symbol="005930")
    assert left == 0
    order.refresh_from_db()
    assert order.status == S.FILLED
    fills = list(order.fills.order_by("id").values_list("execution_id", "quantity", "price"))
    boid = paper_order_id("p-1")
    assert fills == [
        (f"{boid}-0", 3, D(70100)),
        (f"{boid}-3", 3, D(70600)),
        (f"{boid}-6", 3, D(71100)),
        (f"{boid}-9", 1, D(71600)),
    ]
    # (210,300 + 211,800 + 213,300 + 71,600) / 10
    assert order.average_fill_price == D(70700)
    # commissions 31 + 31 + 31 + 10
    assert Account.objects.get(broker="paper").cash == D(10_000_000 - 707_000 - 103)
    assert [t[1] for t in transitions(order)] == [
        S.NEW,
        S.SUBMITTED,
        S.ACCEPTED,
        S.PARTIALLY_FILLED,
        S.PARTIALLY_FILLED,
        S.PARTIALLY_FILLED,
        S.FILLED,
    ]
    assert_ledger_consistent()


# --- limit orders -------------------------------------------------------------------------------


def test_limit_orders_fill_when_the_market_crosses_them(stock, account, redis_client):
    start = dt.datetime.now(dt.UTC)
    put_quote(redis_client, close=70000, at=start)
    buy = place("lb", quantity=4, order_type="LIMIT", limit_price=69500)
    assert buy.status == S.ACCEPTED and buy.filled_quantity == 0
    put_quote(redis_client, close=69600, at=start + dt.timedelta(seconds=1))
    assert oms.match_open_orders(symbol="005930") == 1  # 69,600 > 69,500: not yet
    put_quote(redis_client, close=69400, at=start + dt.timedelta(seconds=2))
    assert oms.match_open_orders(symbol="005930") == 0
    buy.refresh_from_db()
    assert (buy.status, buy.average_fill_price) == (S.FILLED, D(69400))  # at the last price

    sell = place("ls", side="SELL", quantity=4, order_type="LIMIT", limit_price=70000)
    assert sell.status == S.ACCEPTED
    put_quote(redis_client, close=69900, at=start + dt.timedelta(seconds=3))
    assert oms.match_open_orders(symbol="005930") == 1
    put_quote(redis_client, close=70000, at=start + dt.timedelta(seconds=4))  # exactly at it
    assert oms.match_open_orders(symbol="005930") == 0
    sell.refresh_from_db()
    assert (sell.status, sell.average_fill_price) == (S.FILLED, D(70000))
    assert_ledger_consistent()


def test_a_marketable_limit_fills_on_submission_at_the_last_price(stock, account, redis_client):
    put_quote(redis_client, close=70000)
    order = place("lm", quantity=2, order_type="LIMIT", limit_price=71000)
    assert (order.status, order.average_fill_price) == (S.FILLED, D(70000))


def test_a_stale_quote_fills_no_resting_order(stock, account, redis_client):
    start = dt.datetime.now(dt.UTC)
    put_quote(redis_client, close=70000, at=start)
    place("lr", quantity=1, order_type="LIMIT", limit_price=69000)
    put_quote(redis_client, close=68000, at=start - dt.timedelta(seconds=301))
    assert oms.match_open_orders(symbol="005930") == 1


# --- what the paper exchange refuses (our checks bypassed) --------------------------------------


def new_order(cid, **terms):
    fields = {"symbol": "005930", "side": "BUY", "order_type": "MARKET", "quantity": 1}
    fields.update(terms)
    order, _ = services.order_create(client_order_id=cid, actor="test", **fields)
    return order


@pytest.mark.parametrize(
    ("terms", "quote_age", "code", "words"),
    [
        ({"order_type": "LIMIT", "limit_price": D(70050)}, 0, "OFF_TICK", "tick 100"),
        (
            {"order_type": "LIMIT", "limit_price": D(91100)},
            0,
            "OUTSIDE_PRICE_BAND",
            "49,000 to 91,000",
        ),
        ({}, None, "NO_QUOTE", "no price to fill at"),
        ({}, 301, "STALE_QUOTE", "301 s old"),
        ({"order_type": "LIMIT", "limit_price": D(70000)}, None, "NO_QUOTE", "band is unknown"),
    ],
)
def test_the_paper_exchange_rejects(stock, redis_client, terms, quote_age, code, words):
    if quote_age is not None:
        put_quote(redis_client, at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=quote_age))
    ack = PaperBroker().submit(new_order("rej", **terms))
    assert not ack.accepted
    assert ack.reason_code == code
    assert words in ack.reason
    assert ack.broker_order_id == paper_order_id("rej")
    assert ack.fills == ()


def test_a_stale_limit_order_is_accepted_without_a_fill(stock, redis_client):
    put_quote(redis_client, at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=2))
    ack = PaperBroker().submit(new_order("ok", order_type="LIMIT", limit_price=D(90000)))
    assert ack.accepted and ack.fills == ()


def test_resubmitting_is_idempotent(stock, account, redis_client):
    start = dt.datetime.now(dt.UTC)
    put_quote(redis_client, close=70000, at=start)
    order = new_order("idem", quantity=5)
    services.order_set_status(order_id=order.pk, to_status=S.SUBMITTED, actor="test")
    broker = PaperBroker()
    first = broker.submit(order)
    put_quote(redis_client, close=71000, at=start + dt.timedelta(seconds=1))  # the market moved
    second = broker.submit(order)
    assert first.broker_order_id == second.broker_order_id
    assert [f.execution_id for f in first.fills] == [f.execution_id for f in second.fills]
    assert first.fills[0].price != second.fills[0].price
    for ack in (first, second):
        oms._apply_ack(order, ack, broker=broker)
    order.refresh_from_db()
    assert order.filled_quantity == 5
    assert Trade.objects.filter(order=order).count() == 1
    assert_ledger_consistent()


# --- the market clock ---------------------------------------------------------------------------


def test_quote_age_is_measured_on_the_collectors_clock(stock, redis_client):
    """At night the simulated feed replays the last session: its quotes are hours behind the
    wall clock, yet fresh for the market they belong to."""
    hours_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=6)
    put_quote(redis_client, at=hours_ago)
    assert PaperBroker().submit(new_order("night-1")).reason_code == "STALE_QUOTE"
    stats = {"last_tick_time": (hours_ago + dt.timedelta(seconds=10)).isoformat()}
    redis_client.hset(heartbeat_key("collector"), "stats", json.dumps(stats))
    quote, now = market_quote("005930")
    assert quote["close"] == D(70000)
    assert now == hours_ago + dt.timedelta(seconds=10)
    assert PaperBroker().submit(new_order("night-2")).accepted


@pytest.mark.parametrize("raw", [None, b"", b"not json", b"[]", b'{"last_tick_time": "x"}'])
def test_a_missing_or_bad_heartbeat_means_the_wall_clock(raw):
    wall = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
    assert parse_market_now(raw, wall) == wall
    naive = json.dumps({"last_tick_time": "2026-01-01T00:00:00"})
    assert parse_market_now(naive, wall) == wall


def test_an_unreadable_quote_is_no_quote(stock, redis_client, caplog):
    put_quote(redis_client)
    redis_client.hset("market:005930", "close", "seventy")
    assert market_quote("005930")[0] is None
    assert "Unreadable quote market:005930" in caplog.text


# --- the book views -----------------------------------------------------------------------------


def test_open_orders_fills_positions_balance(stock, account, redis_client):
    put_quote(redis_client, close=70000)
    place("v-1", quantity=3)
    resting = place("v-2", quantity=2, order_type="LIMIT", limit_price=60000)
    broker = PaperBroker()
    [open_order] = broker.open_orders()
    assert (open_order.client_order_id, open_order.status, open_order.limit_price) == (
        "v-2",
        S.ACCEPTED,
        D(60000),
    )
    assert open_order.broker_order_id == resting.broker_order_id
    [fill] = broker.fills()
    assert (fill.quantity, fill.price, fill.broker_order_id) == (3, D(70100), paper_order_id("v-1"))
    assert broker.fills(since=fill.time + dt.timedelta(seconds=1)) == []
    [position] = broker.positions()
    assert (position.symbol, position.quantity) == ("005930", 3)
    assert broker.balance().cash == D(10_000_000 - 210_300 - 31)
    assert Order.objects.count() == 2
