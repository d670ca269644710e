"""risk/protections.py: each protection at, just below and just above its threshold; exits
through the order path with idempotent ids; the cool-down and the stop-loss guard's locks;
episodes and the high-water mark in Redis.

Average price 100,000 KRW; the limits' defaults: stop-loss 3 % (97,000), take-profit 5 %
(105,000), trailing stop 2 %.
"""

import datetime as dt
import itertools
from decimal import Decimal

import pytest
from django.utils import timezone

from qbsite.tests.api_factories import make_stock
from risk import services as risk_services
from risk.models import LockKind, RiskLimits, RiskLock
from risk.protections import (
    HWM_SCRIPT,
    ExitKind,
    evaluate,
    exit_place,
    exit_split,
    holdings_open,
    hwm_key,
    position_episode,
)
from trading import services
from trading.models import OrderStatus, Position
from trading.tests.oms_helpers import make_strategy, paper_account, put_quote

D = Decimal
AVG = D(100000)
LIMITS = RiskLimits()  # the defaults, unsaved: evaluate() is pure
_ids = itertools.count(1)


def check(price, high=None, limits=LIMITS):
    found = evaluate(average_price=AVG, high_water=high or AVG, price=D(price), limits=limits)
    return found and found.kind


@pytest.mark.parametrize(
    ("price", "expected"),
    [
        (97010, None),  # just above the stop
        (97000, ExitKind.STOP_LOSS),  # at it
        (96990, ExitKind.STOP_LOSS),  # below
        (104990, None),
        (105000, ExitKind.TAKE_PROFIT),
        (105010, ExitKind.TAKE_PROFIT),
        (100000, None),
    ],
)
def test_stop_loss_and_take_profit_thresholds(price, expected):
    assert check(price) == expected


@pytest.mark.parametrize(
    ("price", "expected"),
    [
        (100950, None),  # high 103,000: trail 100,940
        (100940, ExitKind.TRAILING_STOP),
        (100930, ExitKind.TRAILING_STOP),
    ],
)
def test_trailing_stop_thresholds(price, expected):
    assert check(price, high=D(103000)) == expected


def test_trailing_stop_protects_a_gain_only_and_the_stop_loss_wins_a_gap():
    # High 102,000: the trail 99,960 lies below the entry; the stop-loss governs there.
    assert check(99960, high=D(102000)) is None
    # A gap from a high of 104,000 to 96,000 crosses both: it is a stop-loss.
    found = evaluate(average_price=AVG, high_water=D(104000), price=D(96000), limits=LIMITS)
    assert found.kind == ExitKind.STOP_LOSS
    assert (found.trigger, found.change) == (D(97000), D("-0.04"))
    assert "stop-loss at -3.00 %" in found.describe("005930")
    # The high is never below the price seen now.
    assert evaluate(average_price=AVG, high_water=None, price=D(104000), limits=LIMITS) is None


def test_a_zero_ratio_turns_a_rule_off_and_bad_prices_are_no_exit():
    off = RiskLimits(stop_loss_ratio=0, take_profit_ratio=0, trailing_stop_ratio=0)
    assert check(50000, limits=off) is None
    assert check(200000, limits=off) is None
    assert evaluate(average_price=0, high_water=None, price=D(1), limits=LIMITS) is None
    assert evaluate(average_price=AVG, high_water=None, price=D(0), limits=LIMITS) is None


def test_exit_split_gives_each_strategy_its_own_shares_and_the_rest_none():
    a, b = object(), object()
    assert exit_split(15, [(a, 10), (b, 3)]) == [(a, 10), (b, 3), (None, 2)]
    assert exit_split(8, [(a, 10), (b, 3)]) == [(a, 8)]
    assert exit_split(4, []) == [(None, 4)]
    assert exit_split(0, [(a, 1)]) == []


# --- the ledger side ---------------------------------------------------------------------------


def fill(side, quantity, price, *, strategy=None, symbol="005930"):
    cid = f"t-{next(_ids)}"
    order, _ = services.order_create(
        client_order_id=cid, symbol=symbol, side=side, order_type="MARKET",
        quantity=quantity, strategy=strategy, actor="test",
    )  # fmt: skip
    services.order_set_status(order_id=order.pk, to_status=OrderStatus.SUBMITTED, actor="test")
    return services.order_apply_fill(
        order_id=order.pk, execution_id=cid, quantity=quantity, price=D(price)
    )


@pytest.fixture
def book(db, redis_client):
    make_stock("005930", market="KOSPI")
    paper_account("100000000")
    strategy = make_strategy("sma-a")
    return strategy


def test_the_episode_is_the_buy_that_opened_the_position_from_flat(book):
    first = fill("BUY", 10, 100000)
    fill("BUY", 5, 100000)
    assert position_episode("005930")[0] == first.pk
    fill("SELL", 15, 99000)
    again = fill("BUY", 3, 98000)
    fill("SELL", 1, 99000)
    assert position_episode("005930") == (again.pk, again.timestamp)
    assert position_episode("000660") == (0, None)


def stop_loss_now(holding):
    return evaluate(
        average_price=holding.average_price, high_water=None, price=D(96900), limits=LIMITS
    )


def test_a_stop_loss_sells_each_book_then_locks_the_symbol(book, redis_client):
    fill("BUY", 10, 100000, strategy=book)
    fill("BUY", 5, 100000)  # by hand (the API)
    put_quote(redis_client, close=96900, prev_close=100000)
    holding = holdings_open()["005930"]
    exit = stop_loss_now(holding)
    now = timezone.now()
    result = exit_place(holding=holding, exit=exit, limits=risk_services.limits_get(), now=now)
    assert result.free == 15
    base = f"risk-sl-005930-{holding.episode}"
    assert [(o.client_order_id, o.quantity, o.strategy_id, o.status) for o in result.orders] == [
        (f"{base}-{book.pk}-1", 10, book.pk, OrderStatus.FILLED),
        (f"{base}-0-1", 5, None, OrderStatus.FILLED),
    ]
    assert Position.objects.get(symbol="005930").quantity == 0
    [lock] = result.locks
    assert (lock.kind, lock.symbol_id, lock.strategy_id) == (LockKind.COOLDOWN, "005930", None)
    assert lock.until == now + dt.timedelta(seconds=1800)
    assert lock.created_by == "engine:risk"
    # Nothing left to sell: the same trigger again does nothing.
    again = exit_place(holding=holding, exit=exit, limits=risk_services.limits_get(), now=now)
    assert (again.orders, again.locks, again.free) == ([], [], 0)


def test_a_denied_exit_locks_nothing_and_the_next_attempt_has_a_new_id(book, redis_client):
    fill("BUY", 10, 100000)
    holding = holdings_open()["005930"]
    exit = stop_loss_now(holding)
    limits = risk_services.limits_get()
    now = timezone.now()
    denied = exit_place(holding=holding, exit=exit, limits=limits, now=now)  # no quote
    [order] = denied.orders
    assert (order.status, order.reason_code) == (OrderStatus.DENIED, "NO_QUOTE")
    assert denied.locks == [] and not RiskLock.objects.exists()
    put_quote(redis_client, close=96900, prev_close=100000)
    sold = exit_place(holding=holding, exit=exit, limits=limits, now=now)
    assert sold.orders[0].client_order_id.endswith("-0-2")
    assert sold.orders[0].status == OrderStatus.FILLED
    assert [lock.kind for lock in sold.locks] == [LockKind.COOLDOWN]


def test_the_guard_locks_symbol_and_strategy_at_the_count_not_below(book, redis_client):
    risk_services.limits_update(stoploss_guard_count=2, actor="test")
    risk_services.limits_forget()  # its on_commit does not run inside the test's transaction
    limits = risk_services.limits_get()
    put_quote(redis_client, close=96900, prev_close=100000)
    now = timezone.now()
    kinds = []
    for _ in range(3):
        fill("BUY", 10, 100000, strategy=book)
        holding = holdings_open()["005930"]
        result = exit_place(holding=holding, exit=stop_loss_now(holding), limits=limits, now=now)
        kinds.append([(k.kind, k.symbol_id, k.strategy_id) for k in result.locks])
    assert kinds[0] == [(LockKind.COOLDOWN, "005930", None)]  # one stop-loss: below the count
    assert kinds[1] == [  # two: at the count (the cool-down is still in force)
        (LockKind.STOPLOSS_GUARD, "005930", None),
        (LockKind.STOPLOSS_GUARD, None, book.pk),
    ]
    assert kinds[2] == []  # three: already locked, not locked twice
    guard = RiskLock.objects.get(kind=LockKind.STOPLOSS_GUARD, strategy=book)
    assert guard.until == now + dt.timedelta(seconds=3600)
    assert "2 stop-losses of strategy sma-a" in guard.reason


def test_a_take_profit_sells_and_locks_nothing(book, redis_client):
    fill("BUY", 10, 100000, strategy=book)
    put_quote(redis_client, close=105000, prev_close=100000)
    holding = holdings_open()["005930"]
    exit = evaluate(
        average_price=holding.average_price, high_water=None, price=D(105000), limits=LIMITS
    )
    result = exit_place(holding=holding, exit=exit, limits=LIMITS, now=timezone.now())
    assert [o.client_order_id for o in result.orders] == [
        f"risk-tp-005930-{holding.episode}-{book.pk}-1"
    ]
    assert result.locks == []


def test_the_high_water_mark_only_rises_and_restarts_with_an_episode(redis_client):
    script = redis_client.register_script(HWM_SCRIPT)
    key = hwm_key("005930")
    assert script(keys=[key], args=["7", "100000"]) == b"100000"
    assert script(keys=[key], args=["7", "103000"]) == b"103000"
    assert script(keys=[key], args=["7", "101000"]) == b"103000"
    assert script(keys=[key], args=["8", "99000"]) == b"99000"  # a new position
    assert redis_client.hgetall(key) == {b"episode": b"8", b"high": b"99000"}
