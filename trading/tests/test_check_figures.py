"""The figures the pre-trade checks read (trading.oms.check_inputs: the account and trading state
locked, then one prepared statement), computed from real rows built with the services, and the
decision an order then gets through oms.order_place with the paper broker, at, just below and
just above each limit.

Times: `at` is the wall clock (pace of orders, locks, the losing streak's window), `now` the
market's clock (realized PnL of the KST day and month); order_place reads the market clock from
the collector's heartbeat, which these tests write when they need a given market time.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import threading
import time
from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.utils import timezone

from marketdata import krx
from marketdata.keys import heartbeat_key, quote_key
from qbsite.tests.api_factories import make_stock
from risk import services as risk_services
from risk.models import TradingState
from trading import checks, oms, services
from trading.brokers import get_broker
from trading.brokers.base import market_quote
from trading.models import Account, OrderStatus, Position, Trade
from trading.tests.oms_helpers import make_strategy, paper_account, put_quote

D = Decimal
S = OrderStatus
pytestmark = pytest.mark.django_db

A, B, C, Z = "005930", "000660", "035420", "035720"  # Tech, Tech, Internet, Internet
X, Y = "100001", "100002"  # no sector
_ids = itertools.count()


def kst(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=krx.SEOUL)


@pytest.fixture
def market(redis_client):
    """Six stocks with sectors (two without) and their quotes."""
    for symbol, sector, close in (
        (A, "Tech", 70000),
        (B, "Tech", 50000),
        (C, "Internet", 30000),
        (Z, "Internet", 30000),
        (X, "", 10000),
        (Y, "", 20000),
    ):
        make_stock(symbol, market="KOSPI", sector=sector)
        put_quote(redis_client, symbol, close=close, prev_close=close)
    return redis_client


def limits(**changes) -> None:
    risk_services.limits_update(actor="test", reason="a limit under test", **changes)


def sent(symbol=A, side="BUY", quantity=10, *, at, limit_price=None, strategy=None):
    """An order created and sent (SUBMITTED, then ACCEPTED) at `at`, through the services, as a
    broker that has not filled it yet leaves it. A market order without limit_price."""
    with transaction.atomic():
        order, _ = services.order_create(
            client_order_id=f"o-{next(_ids)}",
            symbol=symbol,
            side=side,
            order_type="LIMIT" if limit_price is not None else "MARKET",
            quantity=quantity,
            limit_price=None if limit_price is None else D(limit_price),
            strategy=strategy,
            broker="paper",
            actor="test",
            at=at,
        )
        order = services.order_lock(order.pk)
        services.order_transition(order, S.SUBMITTED, actor="test", at=at)
        services.order_transition(order, S.ACCEPTED, actor="test", at=at)
    return order


def fill(order, quantity, price, *, at) -> Trade:
    return services.order_apply_fill(
        order_id=order.pk,
        execution_id=f"x-{next(_ids)}",
        quantity=quantity,
        price=D(price),
        at=at,
        actor="test",
    )


def trade(symbol, side, quantity, price, *, at, placed=None) -> Trade:
    """A limit order placed at `placed` (default `at`) and filled whole at `at`."""
    order = sent(symbol, side, quantity, at=placed or at, limit_price=price)
    return fill(order, quantity, price, at=at)


def unsent(symbol=A, side="BUY", quantity=1, *, at, status=S.DENIED):
    """An order that never left QB: DENIED, or left NEW."""
    with transaction.atomic():
        order, _ = services.order_create(
            client_order_id=f"u-{next(_ids)}",
            symbol=symbol,
            side=side,
            order_type="LIMIT",
            quantity=quantity,
            limit_price=D(70000),
            broker="paper",
            actor="test",
            at=at,
        )
        if status == S.DENIED:
            order = services.order_lock(order.pk)
            services.order_transition(order, S.DENIED, actor="test", at=at, reason="test")
    return order


def figures(
    symbol=A, side="BUY", quantity=1, limit_price="70000", *, at, now=None, order=None,
    strategy=None,
) -> checks.CheckInput:  # fmt: skip
    """check_inputs for a new order (rolled back afterwards: it leaves nothing), or for
    `order`; `now` (market clock) defaults to `at`."""
    with transaction.atomic():
        if order is None:
            order, _ = services.order_create(
                client_order_id=f"f-{next(_ids)}",
                symbol=symbol,
                side=side,
                order_type="LIMIT" if limit_price is not None else "MARKET",
                quantity=quantity,
                limit_price=None if limit_price is None else D(limit_price),
                strategy=strategy,
                broker="paper",
                actor="test",
                at=at,
            )
        quote, _ = market_quote(order.symbol_id)
        inputs = oms.check_inputs(
            order, quote=quote, now=now or at, broker=get_broker("paper"), at=at
        )
        transaction.set_rollback(True)
    return inputs


def place(symbol=A, side="BUY", quantity=1, limit_price="60000", *, strategy=None):
    """oms.order_place with the paper broker (a limit buy below the market rests: ACCEPTED)."""
    order, _ = oms.order_place(
        client_order_id=f"p-{next(_ids)}",
        symbol=symbol,
        side=side,
        order_type="LIMIT" if limit_price is not None else "MARKET",
        quantity=quantity,
        limit_price=None if limit_price is None else D(limit_price),
        strategy=strategy,
        actor="test",
    )
    return order


def market_clock(client, moment: dt.datetime) -> None:
    """The collector's heartbeat: the market clock order_place reads."""
    client.hset(
        heartbeat_key("collector"), "stats", json.dumps({"last_tick_time": moment.isoformat()})
    )


def outcome(order) -> tuple[str, str]:
    """("PASSED", "") when the checks let the order go and the paper broker took it."""
    if order.status in (S.ACCEPTED, S.PARTIALLY_FILLED, S.FILLED):
        return ("PASSED", "")
    return (order.status, order.reason_code)


# --- realized PnL of the KST day and month ---------------------------------------------------


def test_realized_pnl_is_of_the_kst_day_and_month_without_busted_trades_or_buys(market):
    paper_account("100000000")
    trade(A, "BUY", 100, 70000, at=kst(2026, 10, 20, 10))
    last_october = trade(A, "SELL", 10, 69000, at=kst(2026, 10, 31, 23, 59, 59, 999999))
    first = trade(A, "SELL", 10, 68000, at=kst(2026, 11, 1))  # 31 Oct 15:00 UTC
    busted = trade(A, "SELL", 10, 60000, at=kst(2026, 11, 1, 10))
    Trade.objects.filter(pk=busted.pk).update(status="CANCELED")
    trade(A, "BUY", 10, 75000, at=kst(2026, 11, 1, 11))  # a buy: no realized PnL
    assert last_october.profit_loss < 0 and first.profit_loss < 0 and busted.profit_loss < 0

    book = figures(at=kst(2026, 11, 1, 12)).book
    assert (book.realized_today, book.realized_month) == (first.profit_loss, first.profit_loss)

    late = trade(A, "SELL", 10, 67000, at=kst(2026, 11, 1, 23, 59, 59, 999999))
    next_day = trade(A, "SELL", 10, 72000, at=kst(2026, 11, 2))  # a win
    book = figures(at=kst(2026, 11, 2, 9)).book
    assert book.realized_today == next_day.profit_loss > 0
    assert book.realized_month == first.profit_loss + late.profit_loss + next_day.profit_loss
    # Seen from the last instant of October (a replay of it): October's day and month only.
    book = figures(at=kst(2026, 11, 2, 9), now=kst(2026, 10, 31, 23, 59, 59, 999999)).book
    assert (book.realized_today, book.realized_month) == (last_october.profit_loss,) * 2


@pytest.mark.parametrize(
    ("limit", "offset", "expected"),
    [
        ("daily_loss_limit", -1, ("DENIED", "DAILY_LOSS_LIMIT")),
        ("daily_loss_limit", 0, ("DENIED", "DAILY_LOSS_LIMIT")),  # a loss of exactly the limit
        ("daily_loss_limit", 1, ("PASSED", "")),
        ("monthly_loss_limit", -1, ("DENIED", "MONTHLY_LOSS_LIMIT")),
        ("monthly_loss_limit", 0, ("DENIED", "MONTHLY_LOSS_LIMIT")),
        ("monthly_loss_limit", 1, ("PASSED", "")),
    ],
)
def test_loss_limits_through_the_oms(market, limit, offset, expected):
    paper_account("100000000")
    trade(A, "BUY", 100, 70000, at=kst(2026, 10, 20, 10))
    earlier = trade(A, "SELL", 10, 69000, at=kst(2026, 11, 1, 23, 59))  # the month only
    today = trade(A, "SELL", 10, 68000, at=kst(2026, 11, 2, 0, 0, 1))
    market_clock(market, kst(2026, 11, 2, 12))
    loss = -(today.profit_loss if limit == "daily_loss_limit" else today.profit_loss
             + earlier.profit_loss)  # fmt: skip
    limits(**{limit: loss + offset})
    assert outcome(place()) == expected
    # a sell still passes (it reduces the position)
    assert place(side="SELL", limit_price="60000").status == S.FILLED


# --- the losing streak -----------------------------------------------------------------------


def _held(quantity=1000, *, at):
    paper_account("1000000000")
    return trade(A, "BUY", quantity, 70000, at=at)


def sell(price, *, at, pieces=1, shares=10):
    """A sell order placed at `at` and filled in `pieces` pieces a second apart."""
    order = sent(A, "SELL", shares * pieces, at=at, limit_price=price)
    for i in range(pieces):
        fill(order, shares, price, at=at + dt.timedelta(seconds=i + 1))
    return order


def _break_even(at: dt.datetime) -> tuple[int, Decimal]:
    """(shares, price to the cent) at which a sell of A at `at` realizes exactly 0."""
    position = Position.objects.get(symbol_id=A)

    def realized(shares: int, cents: int) -> Decimal:
        price = D(cents) / 100
        commission, tax = services.fill_costs(
            side="SELL", amount=price * shares, market="KOSPI", at=at
        )
        copy = Position(
            symbol_id=A,
            quantity=position.quantity,
            cost_basis=position.cost_basis,
            average_price=position.average_price,
        )
        return services.position_apply(
            copy, side="SELL", quantity=shares, price=price, commission=commission, tax=tax
        )

    for shares in range(1, 40):
        low, high = 100, 20000000  # realized grows with the price: the lowest price >= 0
        while low < high:
            middle = (low + high) // 2
            if realized(shares, middle) >= 0:
                high = middle
            else:
                low = middle + 1
        if realized(shares, low) == 0:
            return shares, D(low) / 100
    raise AssertionError("no break-even sell of A")


def test_streak_counts_losing_sell_orders_once_each_until_a_win_or_break_even(market):
    base = timezone.now() - dt.timedelta(hours=5)
    _held(at=base)
    sell(69000, at=base + dt.timedelta(minutes=1))  # a loss before the win
    sell(71000, at=base + dt.timedelta(minutes=2))  # a win: the streak starts after it
    sell(69000, at=base + dt.timedelta(minutes=3), pieces=3)  # one order, three fills
    sell(69500, at=base + dt.timedelta(minutes=4))
    sell(68000, at=base + dt.timedelta(minutes=5), pieces=2)
    assert figures(at=timezone.now()).book.consecutive_losses == 3

    at = base + dt.timedelta(minutes=6)
    shares, price = _break_even(at + dt.timedelta(seconds=1))
    assert sell(price, at=at, shares=shares).fills.get().profit_loss == 0
    assert figures(at=timezone.now()).book.consecutive_losses == 0  # break-even ends it
    sell(69000, at=base + dt.timedelta(minutes=7))
    assert figures(at=timezone.now()).book.consecutive_losses == 1


def test_a_busted_losing_sell_is_not_in_the_streak(market):
    base = timezone.now() - dt.timedelta(hours=5)
    _held(at=base)
    sell(69000, at=base + dt.timedelta(minutes=1))
    sell(71000, at=base + dt.timedelta(minutes=2))  # a win ...
    busted = sell(69000, at=base + dt.timedelta(minutes=3))  # ... then a loss, busted
    Trade.objects.filter(order=busted).update(status="CANCELED")
    assert figures(at=timezone.now()).book.consecutive_losses == 0


@pytest.mark.parametrize(
    ("limit", "expected"),
    [(2, ("DENIED", "CONSECUTIVE_LOSSES")), (3, ("DENIED", "CONSECUTIVE_LOSSES")),
     (4, ("PASSED", ""))],
)  # fmt: skip
def test_consecutive_losses_through_the_oms(market, limit, expected):
    base = timezone.now() - dt.timedelta(hours=5)
    _held(at=base)
    sell(71000, at=base + dt.timedelta(minutes=1))
    for minute in (2, 3, 4):
        sell(69000, at=base + dt.timedelta(minutes=minute), pieces=minute - 1)
    limits(max_consecutive_losses=limit)
    assert outcome(place()) == expected
    assert place(side="SELL", limit_price="60000").status == S.FILLED  # sells pass


def test_streak_counts_only_since_the_trading_state_last_changed(market):
    base = timezone.now() - dt.timedelta(hours=5)
    _held(at=base)
    for minute in (1, 2, 3):
        sell(69000, at=base + dt.timedelta(minutes=minute))
    assert figures(at=timezone.now()).book.consecutive_losses == 3
    changed = base + dt.timedelta(minutes=10)
    risk_services.trading_state_set(state="REDUCING", actor="test", reason="t", at=changed)
    risk_services.trading_state_set(
        state="ACTIVE", actor="test", reason="resume", at=changed + dt.timedelta(seconds=1)
    )
    assert figures(at=timezone.now()).book.consecutive_losses == 0
    sell(69000, at=base + dt.timedelta(minutes=11))
    assert figures(at=timezone.now()).book.consecutive_losses == 1


def test_streak_looks_back_30_days_by_when_the_sell_was_placed(market):
    at = timezone.now().replace(microsecond=0)
    start = at - dt.timedelta(days=40)
    risk_services.trading_state_set(state="REDUCING", actor="test", reason="t", at=start)
    risk_services.trading_state_set(state="ACTIVE", actor="test", reason="t", at=start)
    _held(at=start)
    sell(69000, at=at - dt.timedelta(days=31))
    sell(69000, at=at - dt.timedelta(days=30))  # exactly 30 days before: out
    assert figures(at=at).book.consecutive_losses == 0
    sell(69000, at=at - dt.timedelta(days=30) + dt.timedelta(seconds=1))
    sell(69000, at=at - dt.timedelta(days=29))
    assert figures(at=at).book.consecutive_losses == 2


@pytest.mark.parametrize(
    ("limit", "expected"),
    [(100, ("DENIED", "CONSECUTIVE_LOSSES")), (101, ("PASSED", "")),
     (1_000_000, ("PASSED", ""))],
)  # fmt: skip
def test_streak_is_counted_up_to_its_cap(market, limit, expected):
    assert oms._STREAK_MAX == 100
    base = timezone.now() - dt.timedelta(hours=5)
    _held(at=base)
    for i in range(101):
        sell(69000, at=base + dt.timedelta(seconds=10 * i + 10), shares=1)
    limits(max_consecutive_losses=limit)
    assert figures(at=timezone.now()).book.consecutive_losses == 100
    assert outcome(place()) == expected


# --- portfolio, symbol, sector and exposure values -------------------------------------------


def test_portfolio_symbol_sector_and_exposure_values(market):
    at = timezone.now() - dt.timedelta(minutes=5)
    paper_account("10000000")
    trade(A, "BUY", 10, 70000, at=at)
    services.position_mark(symbol=A, price=D(72000))  # A at its marked price: 720,000
    trade(B, "BUY", 20, 50000, at=at)  # B unmarked: at its average price
    partly = sent(B, "BUY", 10, at=at, limit_price=50000)
    fill(partly, 4, 50000, at=at)  # B: 24 x 50,000 held; 6 x 50,000 still open
    trade(X, "BUY", 5, 10000, at=at)  # 50,000, no sector
    trade(Y, "BUY", 3, 20000, at=at)  # 60,000, no sector
    trade(C, "BUY", 5, 30000, at=at)
    trade(C, "SELL", 5, 31000, at=at)  # closed: nothing held
    services.position_mark(symbol=C, price=D(31000))
    sent(A, "BUY", 3, at=at, limit_price=69000)  # open limit buy: 207,000
    sent(A, "SELL", 2, at=at, limit_price=80000)  # open sell: reserves 2 shares
    sent(Z, "BUY", 4, at=at)  # open market buy, not held: 4 x (30,000 + 1 tick) = 120,200
    sent(A, "BUY", 1, at=at)  # open market buy of A: quote 70,000 + 1 tick = 70,100
    sent(Y, "BUY", 2, at=at)  # open market buy of Y without a quote: its average price
    market.delete(quote_key(Y))
    unsent(A, "BUY", 100, at=at)  # DENIED: nothing
    unsent(A, "BUY", 100, at=at, status=S.NEW)  # never sent: nothing
    canceled = sent(A, "BUY", 50, at=at, limit_price=69000)
    services.order_set_status(order_id=canceled.pk, to_status=S.CANCELED, actor="test")
    cash = Account.objects.get(broker="paper").cash
    held = 720000 + 1200000 + 50000 + 60000
    buys = 207000 + 300000 + 120200 + 70100 + 40000

    c = figures(A, at=timezone.now())
    assert (c.held, c.held_reserved, c.cash) == (10, 2, cash)
    assert c.cash_reserved == buys + krx.commission(D(buys))
    assert c.book.portfolio_value == cash + held
    assert c.book.symbol_value == 720000 + 207000 + 70100
    assert c.book.sector == "Tech"
    assert c.book.sector_value == 720000 + 1200000 + 207000 + 300000 + 70100
    assert c.book.exposure_value == held + buys

    c = figures(Z, limit_price="30000", at=timezone.now())
    assert (c.book.symbol_value, c.book.sector, c.book.sector_value) == (120200, "Internet", 120200)
    c = figures(X, limit_price="10000", at=timezone.now())
    # stocks without a sector are not one sector together
    assert (c.book.symbol_value, c.book.sector, c.book.sector_value) == (50000, "", 0)


@pytest.mark.parametrize(
    ("limit", "ratio", "price", "expected"),
    [
        ("max_position_ratio", "0.1", "84900", ("PASSED", "")),
        ("max_position_ratio", "0.1", "85000", ("PASSED", "")),  # exactly the limit passes
        ("max_position_ratio", "0.1", "85100", ("DENIED", "POSITION_LIMIT")),
        ("max_sector_ratio", "0.15", "84900", ("PASSED", "")),
        ("max_sector_ratio", "0.15", "85000", ("PASSED", "")),
        ("max_sector_ratio", "0.15", "85100", ("DENIED", "SECTOR_LIMIT")),
        ("max_exposure_ratio", "0.16", "84900", ("PASSED", "")),
        ("max_exposure_ratio", "0.16", "85000", ("PASSED", "")),
        ("max_exposure_ratio", "0.16", "85100", ("DENIED", "EXPOSURE_LIMIT")),
    ],
)
def test_share_limits_through_the_oms(market, limit, ratio, price, expected):
    """A book worth 10,000,000: A 700,000 and B 500,000 held (Tech), X 100,000 (no sector),
    an open buy of A for 130,000. A buy of 2 A at 85,000 brings A to 1,000,000 (10 %), Tech to
    1,500,000 (15 %), everything to 1,600,000 (16 %)."""
    at = timezone.now() - dt.timedelta(minutes=5)
    costs = sum(krx.commission(D(v)) for v in (700000, 500000, 100000))
    paper_account(str(10000000 + costs))
    trade(A, "BUY", 10, 70000, at=at)
    trade(B, "BUY", 10, 50000, at=at)
    trade(X, "BUY", 10, 10000, at=at)
    sent(A, "BUY", 2, at=at, limit_price=65000)
    book = figures(at=timezone.now()).book
    assert (book.portfolio_value, book.symbol_value, book.sector_value, book.exposure_value) == (
        10000000,
        830000,
        1330000,
        1430000,
    )
    limits(**{limit: D(ratio)})
    assert outcome(place(quantity=2, limit_price=price)) == expected


# --- the pace of orders ----------------------------------------------------------------------


def test_orders_today_last_second_and_last_order_on_the_symbol(market):
    paper_account()
    at = kst(2026, 11, 25, 10)
    sent(A, at=kst(2026, 11, 24, 23, 59, 59, 999999), limit_price=60000)  # yesterday (KST)
    sent(B, at=kst(2026, 11, 25), limit_price=40000)  # midnight: today
    sent(B, at=kst(2026, 11, 25, 8), limit_price=40000)  # 23:00 UTC the day before: today
    sent(A, at=at - dt.timedelta(seconds=1), limit_price=60000)  # today, not the last second
    just_now = sent(B, at=at - dt.timedelta(milliseconds=999), limit_price=40000)
    unsent(A, at=at - dt.timedelta(milliseconds=100))  # DENIED: never sent
    unsent(A, at=at - dt.timedelta(milliseconds=50), status=S.NEW)  # not sent (yet)
    book = figures(at=at).book
    assert (book.orders_today, book.orders_last_second) == (4, 1)
    assert book.last_order_at == at - dt.timedelta(seconds=1)
    assert figures(B, limit_price="50000", at=at).book.last_order_at == just_now.submitted_at
    # the order being checked is not among them (a re-check of a sent order)
    book = figures(order=just_now, at=at).book
    assert (book.orders_today, book.orders_last_second, book.last_order_at) == (
        3,
        0,
        kst(2026, 11, 25, 8),
    )


def test_last_order_on_the_symbol_is_the_latest_sent_not_the_latest_created(market):
    """An order left NEW (a crash) is sent by recovery after a newer one was."""
    paper_account()
    at = kst(2026, 11, 25, 10)
    older = unsent(A, at=at - dt.timedelta(minutes=30), status=S.NEW)
    sent(A, at=at - dt.timedelta(minutes=10), limit_price=60000)
    with transaction.atomic():
        older = services.order_lock(older.pk)
        services.order_transition(older, S.SUBMITTED, actor="test", at=at - dt.timedelta(seconds=2))
    book = figures(at=at).book
    assert book.last_order_at == at - dt.timedelta(seconds=2)
    assert (book.orders_today, book.orders_last_second) == (2, 0)


@pytest.mark.parametrize(
    ("limit", "value", "expected"),
    [
        ("max_orders_per_second", 1, "RATE_LIMIT"),
        ("max_orders_per_second", 2, "RATE_LIMIT"),
        ("max_orders_per_second", 3, ""),
        ("max_trades_per_day", 3, "TRADES_PER_DAY"),
        ("max_trades_per_day", 4, "TRADES_PER_DAY"),
        ("max_trades_per_day", 5, ""),
        ("same_symbol_interval_seconds", 9, ""),
        ("same_symbol_interval_seconds", 10, ""),  # 10 s apart exactly: passes
        ("same_symbol_interval_seconds", 11, "SAME_SYMBOL_INTERVAL"),
    ],
)
def test_pace_limits_at_their_edges(market, limit, value, expected):
    paper_account()
    at = kst(2026, 11, 25, 10)
    sent(B, at=kst(2026, 11, 24, 23, 59, 59), limit_price=40000)  # yesterday
    sent(A, at=at - dt.timedelta(seconds=10), limit_price=60000)
    sent(B, at=at - dt.timedelta(seconds=5), limit_price=40000)
    sent(B, at=at - dt.timedelta(milliseconds=900), limit_price=40000)
    sent(B, at=at - dt.timedelta(milliseconds=10), limit_price=40000)
    unsent(A, at=at - dt.timedelta(seconds=1))
    limits(**{limit: value})
    assert checks.run(figures(at=at, limit_price="60000")).code == expected


def test_pace_limits_through_the_oms(market):
    paper_account()
    now = timezone.now()
    trade(A, "BUY", 10, 70000, at=now - dt.timedelta(seconds=60))
    for seconds in (50, 40, 30):
        sent(B, at=now - dt.timedelta(seconds=seconds), limit_price=40000)
    unsent(B, at=now - dt.timedelta(seconds=25))  # DENIED: not counted
    sent(A, at=now - dt.timedelta(seconds=20), limit_price=60000)
    limits(max_trades_per_day=6)
    assert outcome(place()) == ("PASSED", "")  # 5 sent before it
    assert outcome(place(B, limit_price="40000")) == ("DENIED", "TRADES_PER_DAY")  # 6 now
    assert outcome(place(side="SELL", limit_price="60000")) == ("PASSED", "")  # sells pass
    limits(max_trades_per_day=1000, same_symbol_interval_seconds=3600)
    assert outcome(place(C, limit_price="25000")) == ("PASSED", "")  # C: never traded
    assert outcome(place(C, limit_price="25000")) == ("DENIED", "SAME_SYMBOL_INTERVAL")


# --- locks -----------------------------------------------------------------------------------


def test_live_locks_are_read_and_dead_ones_ignored(market):
    paper_account()
    at = kst(2026, 11, 25, 10)
    hour = dt.timedelta(hours=1)
    strategy = make_strategy("s1", symbols=(A, B))
    other = make_strategy("s2", symbols=(A,))

    def lock(**kw):
        kw.setdefault("at", at - hour)
        kw.setdefault("until", at + hour)
        return risk_services.lock_create(kind="MANUAL", reason="t", actor="test", **kw).pk

    on_a = lock(symbol=A)
    on_b = lock(symbol=B)
    on_strategy = lock(strategy=strategy)
    on_other = lock(strategy=other)
    both = lock(symbol=A, strategy=strategy)
    lock(at=at - 2 * hour, until=at - dt.timedelta(microseconds=1))  # expired
    lock(until=at)  # ends exactly now
    removed = lock(symbol=A)
    risk_services.lock_remove(lock_id=removed, actor="test", at=at - dt.timedelta(minutes=1))
    lock(at=at + dt.timedelta(seconds=1), until=at + hour)  # created in the future
    ids = {lk.id for lk in figures(at=at).book.locks}
    assert ids == {on_a}  # a manual order of A: no strategy's lock covers it
    ids = {lk.id for lk in figures(at=at, strategy=strategy).book.locks}
    assert ids == {on_a, on_strategy, both}
    assert {lk.id for lk in figures(B, at=at, strategy=other).book.locks} == {on_b, on_other}
    assert figures(C, limit_price="30000", at=at).book.locks == ()
    everything = lock(at=at)  # created exactly now: in force
    assert {lk.id for lk in figures(C, limit_price="30000", at=at).book.locks} == {everything}
    got = figures(at=at).book.locks
    assert {lk.id: lk.until for lk in got} == {on_a: at + hour, everything: at + hour}


def test_locks_through_the_oms(market):
    paper_account()
    now = timezone.now()
    strategy = make_strategy("s1", symbols=(A, B))
    lock = risk_services.lock_create(
        kind="MANUAL", reason="t", actor="test", symbol=A, until=now + dt.timedelta(hours=1)
    )
    assert outcome(place()) == ("DENIED", "LOCKED")
    assert outcome(place(B, limit_price="40000")) == ("PASSED", "")
    risk_services.lock_remove(lock_id=lock.pk, actor="test")
    assert outcome(place()) == ("PASSED", "")
    risk_services.lock_create(
        kind="COOLDOWN", reason="t", actor="test", strategy=strategy,
        until=timezone.now() + dt.timedelta(hours=1),
    )  # fmt: skip
    assert outcome(place(B, limit_price="40000", strategy=strategy)) == ("DENIED", "LOCKED")
    assert outcome(place(B, limit_price="40000")) == ("PASSED", "")  # manual: not covered
    risk_services.lock_create(
        kind="MANUAL", reason="t", actor="test", until=timezone.now() + dt.timedelta(hours=1)
    )
    assert outcome(place(C, limit_price="25000")) == ("DENIED", "LOCKED")


# --- the trading state -----------------------------------------------------------------------


def test_state_reducing_lets_a_reducing_sell_through_and_halted_denies(market):
    paper_account()
    trade(A, "BUY", 10, 70000, at=timezone.now() - dt.timedelta(minutes=1))
    risk_services.trading_state_set(state="REDUCING", actor="test", reason="t")
    assert figures(at=timezone.now()).state == "REDUCING"
    assert outcome(place()) == ("DENIED", "REDUCING_ONLY")
    assert place(side="SELL", quantity=4, limit_price="60000").status == S.FILLED
    risk_services.trading_state_set(state="HALTED", actor="test", reason="t")
    assert figures(at=timezone.now()).state == "HALTED"
    assert outcome(place(side="SELL", limit_price="60000")) == ("DENIED", "TRADING_HALTED")
    assert outcome(place()) == ("DENIED", "TRADING_HALTED")


@pytest.mark.django_db(transaction=True)
def test_the_checks_wait_for_a_state_change_in_flight_and_see_it(market):
    """The trading state is read under a share lock: checks that start while a change is not
    yet committed wait for it and read the new state (and a change waits for checks in
    flight)."""
    paper_account()
    TradingState.objects.get_or_create(pk=1)
    changing = threading.Event()
    release = threading.Event()
    seen: list = []

    def change():
        try:
            with transaction.atomic():
                TradingState.objects.select_for_update().filter(pk=1).update(state="HALTED")
                changing.set()
                release.wait(10)
        finally:
            connection.close()

    def check():
        try:
            seen.append(figures(at=timezone.now()).state)
        finally:
            connection.close()

    changer = threading.Thread(target=change)
    changer.start()
    assert changing.wait(10)
    checker = threading.Thread(target=check)
    checker.start()
    time.sleep(0.5)
    assert seen == [] and checker.is_alive()  # waiting for the change
    release.set()
    changer.join(10)
    checker.join(10)
    assert seen == ["HALTED"]
