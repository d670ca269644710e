"""The order management system (trading/oms.py): checks before the broker, idempotency, signal
sizing, cancels, recovery, and concurrent placement and fills on real connections.

Quotes are written to Redis as the collector writes them; the broker is the paper broker (one
test swaps in a broker that fails, at the broker edge). Figures by hand: commission 0.015 %
truncated to the won; the paper broker buys one tick above the last price by default.
"""

import datetime as dt
import json
import threading
from decimal import Decimal

import pytest
from django.db import connection

from marketdata.keys import heartbeat_key
from qbsite.exceptions import Conflict, NotFound
from qbsite.tests.api_factories import make_stock
from trading import oms, services
from trading.brokers import BROKERS, BrokerError
from trading.brokers.paper import PaperBroker, paper_order_id
from trading.models import Account, Order, OrderStatus, Position, Signal, Trade
from trading.states import IllegalTransition
from trading.tests.oms_helpers import (
    assert_ledger_consistent,
    make_signal,
    make_strategy,
    paper_account,
    put_quote,
)

D = Decimal
S = OrderStatus
pytestmark = pytest.mark.django_db


@pytest.fixture
def stock(db):
    return make_stock("005930", market="KOSPI")


@pytest.fixture
def account(db):
    return paper_account("10000000")


@pytest.fixture
def quote(redis_client):
    put_quote(redis_client, close=70000)
    return redis_client


def place(cid, side="BUY", quantity=10, order_type="MARKET", limit_price=None, **extra):
    return oms.order_place(
        client_order_id=cid,
        symbol=extra.pop("symbol", "005930"),
        side=side,
        order_type=order_type,
        quantity=quantity,
        limit_price=None if limit_price is None else D(limit_price),
        actor="test",
        **extra,
    )


def statuses(order):
    return [t.to_status for t in order.transitions.order_by("id")]


# --- checks before the broker -------------------------------------------------------------------


def test_a_denied_order_never_reaches_the_broker(stock, account, quote):
    # 143 x 70,100 = 10,024,300 > 10,000,000
    order, created = place("big", quantity=143)
    assert created
    assert order.status == S.DENIED
    assert order.reason_code == "INSUFFICIENT_CASH"
    assert "needs 10,025,803 KRW (10,024,300 + 1,503 commission)" in order.reason
    assert order.broker_order_id == ""
    assert statuses(order) == [S.NEW, S.DENIED]
    assert order.closed_at is not None
    # 142 x 70,100 = 9,954,200 + 1,493 fits.
    assert place("fits", quantity=142)[0].status == S.FILLED


def test_open_orders_reserve_cash_and_shares(stock, account, quote):
    # A resting limit buy reserves 5,000,000 + 750 commission.
    resting, _ = place("rest", quantity=100, order_type="LIMIT", limit_price=50000)
    assert resting.status == S.ACCEPTED
    # 70 x 70,100 = 4,907,000 + 736 = 4,907,736 <= 4,999,250 available
    assert place("ok", quantity=70)[0].status == S.FILLED
    denied, _ = place("no", quantity=2)
    assert denied.reason_code == "INSUFFICIENT_CASH"
    assert "reserved by open buy orders" in denied.reason
    # Shares: 70 held; a resting sell of 50 leaves 20 to sell.
    assert place("s1", side="SELL", quantity=50, order_type="LIMIT", limit_price=90000)[
        0
    ].status == (S.ACCEPTED)
    assert place("s2", side="SELL", quantity=21)[0].reason_code == "INSUFFICIENT_POSITION"
    assert place("s3", side="SELL", quantity=20)[0].status == S.FILLED
    assert_ledger_consistent()


@pytest.mark.parametrize(
    ("terms", "code"),
    [
        ({"order_type": "LIMIT", "limit_price": 70050}, "OFF_TICK"),
        ({"order_type": "LIMIT", "limit_price": 91100}, "OUTSIDE_PRICE_BAND"),
        ({"side": "SELL"}, "INSUFFICIENT_POSITION"),
    ],
)
def test_denials_carry_their_code(stock, account, quote, terms, code):
    order, _ = place("d", **terms)
    assert (order.status, order.reason_code) == (S.DENIED, code)


def test_no_quote_and_stale_quote(stock, account, redis_client):
    assert place("nq")[0].reason_code == "NO_QUOTE"
    put_quote(redis_client, at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=400))
    assert place("sq")[0].reason_code == "STALE_QUOTE"


@pytest.mark.parametrize(
    ("market_time", "enabled", "status"),
    [
        (dt.datetime(2026, 11, 25, 14, 0, tzinfo=dt.UTC), False, S.FILLED),  # 23:00 KST
        (dt.datetime(2026, 11, 25, 14, 0, tzinfo=dt.UTC), True, S.DENIED),
        (dt.datetime(2026, 11, 25, 1, 0, tzinfo=dt.UTC), True, S.FILLED),  # 10:00 KST
    ],
)
def test_market_hours_check_is_a_setting_on_the_market_clock(
    stock, account, redis_client, settings, market_time, enabled, status
):
    settings.TRADING_DENY_WHEN_CLOSED = enabled
    put_quote(redis_client, at=market_time)
    redis_client.hset(
        heartbeat_key("collector"), "stats", json.dumps({"last_tick_time": market_time.isoformat()})
    )
    order, _ = place("mh", quantity=1)
    assert order.status == status
    if status == S.DENIED:
        assert order.reason_code == "MARKET_CLOSED"
        assert "KRX is closed at 2026-11-25 23:00 KST" in order.reason


def test_unknown_symbols_and_bad_terms_are_refused_before_anything(stock, account, quote):
    with pytest.raises(services.OrderError, match="Unknown symbol '999999'"):
        place("x", symbol="999999")
    with pytest.raises(services.OrderError, match="quantity must be at least 1 share"):
        place("x", quantity=0)
    assert not Order.objects.exists()


# --- idempotency ----------------------------------------------------------------------------------


def test_the_same_client_order_id_twice_is_the_same_order(stock, account, quote):
    first, created = place("same", quantity=3)
    again, created_again = place("same", quantity=3)
    assert (created, created_again) == (True, False)
    assert again.pk == first.pk and again.status == S.FILLED
    assert Trade.objects.count() == 1
    assert first.transitions.count() == 4  # nothing sent a second time


def test_the_same_client_order_id_with_other_terms_is_a_conflict(stock, account, quote):
    place("dup", quantity=3)
    with pytest.raises(Conflict) as info:
        place("dup", quantity=4)
    assert info.value.status_code == 409
    assert info.value.code == "idempotency_conflict"
    assert "already used by order" in info.value.message
    assert Order.objects.count() == 1


def test_a_denied_order_stays_denied_when_asked_again(stock, account, quote):
    first, _ = place("den", side="SELL")
    put_quote(quote, close=70000)
    again, created = place("den", side="SELL")
    assert (again.pk, again.status, created) == (first.pk, S.DENIED, False)


# --- signals ------------------------------------------------------------------------------------


def test_a_signal_is_sized_from_the_allocation(stock, account, quote):
    make_stock("000660", name="SK hynix")
    strategy = make_strategy(symbols=("005930", "000660"), allocation="10000000")
    signal = make_signal(strategy)
    order = oms.order_from_signal(signal_id=signal.pk)
    # 5,000,000 per symbol at 70,100: 71 x 70,100 = 4,977,100 + 746 fits; 72 does not.
    assert (order.quantity, order.status, order.client_order_id) == (
        71,
        S.FILLED,
        f"sig-{signal.pk}",
    )
    assert order.strategy == strategy and order.signal == signal
    signal.refresh_from_db()
    assert (signal.outcome, signal.outcome_reason) == ("ORDERED", "")
    assert Trade.objects.get().strategy == strategy.name

    # Holding 71 x 70,100: 22,900 left, not a share's worth.
    second = make_signal(strategy)
    assert oms.order_from_signal(signal_id=second.pk) is None
    second.refresh_from_db()
    assert second.outcome == "SKIPPED"
    assert "already holds 71 005930" in second.outcome_reason

    # At 60,000 (60,100 with slippage) the 71 are worth 4,267,100: 732,900 buys 12.
    put_quote(quote, close=60000)
    third = make_signal(strategy)
    assert oms.order_from_signal(signal_id=third.pk).quantity == 12


def test_a_buy_is_at_most_the_max_order_value(stock, account, quote):
    from risk import services as risk_services

    # The default limit: 1,000,000 KRW an order. 5,000,000 per symbol at 70,100 would be 71.
    risk_services.limits_update(actor="test", max_order_value=Decimal(1_000_000))
    strategy = make_strategy(symbols=("005930", "000660"), allocation="10000000")
    make_stock("000660", name="SK hynix")
    first = oms.order_from_signal(signal_id=make_signal(strategy).pk)
    # 1,000,000 // 70,100 = 14 shares (981,400): under the limit with room for no 15th.
    assert (first.quantity, first.status) == (14, S.FILLED)
    # The next signal buys the next slice of the allocation, again at most 14.
    second = oms.order_from_signal(signal_id=make_signal(strategy).pk)
    assert (second.quantity, second.status) == (14, S.FILLED)
    # A limit of exactly 15 x 70,100 = 1,051,500 takes 15 (the limit is inclusive).
    risk_services.limits_update(actor="test", max_order_value=Decimal(1_051_500))
    third = oms.order_from_signal(signal_id=make_signal(strategy).pk)
    assert (third.quantity, third.status) == (15, S.FILLED)


def test_signal_quantity_caps_the_size(stock, account, quote):
    strategy = make_strategy()
    order = oms.order_from_signal(signal_id=make_signal(strategy, quantity=5).pk)
    assert order.quantity == 5
    sell = oms.order_from_signal(signal_id=make_signal(strategy, action="SELL", quantity=2).pk)
    assert (sell.side, sell.quantity, sell.status) == ("SELL", 2, S.FILLED)


def test_a_sell_signal_sells_only_the_strategys_own_shares(stock, account, quote):
    mine = make_strategy("mine", allocation="1000000")
    theirs = make_strategy("theirs", allocation="1000000")
    bought = oms.order_from_signal(signal_id=make_signal(mine).pk)
    oms.order_from_signal(signal_id=make_signal(theirs).pk)
    place("manual", quantity=4)
    assert Position.objects.get().quantity == 2 * bought.quantity + 4
    sold = oms.order_from_signal(signal_id=make_signal(mine, action="SELL").pk)
    assert sold.quantity == bought.quantity
    nothing = make_signal(mine, action="SELL")
    assert oms.order_from_signal(signal_id=nothing.pk) is None
    nothing.refresh_from_db()
    assert nothing.outcome == "SKIPPED"
    assert "holds 0 005930 by its own trades" in nothing.outcome_reason


def test_a_sell_signal_is_capped_by_what_the_position_has_free(stock, account, quote):
    strategy = make_strategy(allocation="1000000")
    bought = oms.order_from_signal(signal_id=make_signal(strategy).pk).quantity  # 14
    # Someone else's resting sell takes 10 of the 14.
    place("other", side="SELL", quantity=10, order_type="LIMIT", limit_price=90000)
    sold = oms.order_from_signal(signal_id=make_signal(strategy, action="SELL").pk)
    assert (bought, sold.quantity) == (14, 4)


def test_the_same_signal_twice_makes_one_order(stock, account, quote):
    signal = make_signal(make_strategy())
    first = oms.order_from_signal(signal_id=signal.pk)
    again = oms.order_from_signal(signal_id=signal.pk)
    assert again.pk == first.pk
    assert Order.objects.count() == 1 and Trade.objects.count() == 1


def test_a_denied_signal_order_is_recorded_on_the_signal(stock, account, redis_client):
    signal = make_signal(make_strategy())  # no quote at all
    order = oms.order_from_signal(signal_id=signal.pk)
    assert (order.status, order.reason_code) == (S.DENIED, "NO_QUOTE")
    signal.refresh_from_db()
    assert signal.outcome == "ORDERED"
    assert signal.outcome_reason.startswith("Order denied: NO_QUOTE No quote for 005930")


def test_signals_of_a_disabled_strategy_are_skipped(stock, account, quote):
    signal = make_signal(make_strategy(enabled=False))
    assert oms.order_from_signal(signal_id=signal.pk) is None
    signal.refresh_from_db()
    assert (signal.outcome, signal.outcome_reason) == ("SKIPPED", "Strategy sma-a is disabled.")


def test_an_unknown_signal_is_not_found(db):
    with pytest.raises(NotFound, match="No signal 123456"):
        oms.order_from_signal(signal_id=123456)


def test_max_shares_includes_commission():
    # 100 x 10,000 = 1,000,000 + 150 commission
    assert oms.max_shares(D(1_000_150), D(10000), rate=D("0.00015")) == 100
    assert oms.max_shares(D(1_000_149), D(10000), rate=D("0.00015")) == 99
    assert oms.max_shares(D(9_999), D(10000), rate=D("0.00015")) == 0
    assert oms.max_shares(D(-5), D(10000), rate=D("0.00015")) == 0
    # Commission truncation lets the last share fit: 6 x 1,111 = 6,666 + 0 (0.9999).
    assert oms.max_shares(D(6666), D(1111), rate=D("0.00015")) == 6


# --- cancels ------------------------------------------------------------------------------------


def test_cancel_a_new_order(stock, account):
    order, _ = services.order_create(
        client_order_id="n", symbol="005930", side="BUY", order_type="MARKET", quantity=1, actor="t"
    )
    canceled = oms.order_cancel(order_id=order.pk, actor="trader", reason="changed my mind")
    assert canceled.status == S.CANCELED
    assert statuses(canceled) == [S.NEW, S.CANCELED]


def test_cancel_a_resting_limit_order_through_the_broker(stock, account, quote):
    order, _ = place("rest", quantity=5, order_type="LIMIT", limit_price=60000)
    canceled = oms.order_cancel(order_id=order.pk, actor="trader")
    assert canceled.status == S.CANCELED
    assert statuses(canceled) == [S.NEW, S.SUBMITTED, S.ACCEPTED, S.CANCEL_PENDING, S.CANCELED]
    assert canceled.transitions.last().actor == "broker:paper"
    # The cash it reserved is free again: a buy of nearly everything passes.
    assert place("all", quantity=142)[0].status == S.FILLED


def test_cancel_keeps_the_partial_fills(stock, account, quote, settings):
    settings.PAPER_FILL_RATIO = D("0.5")
    order, _ = place("half", quantity=10)
    assert order.filled_quantity == 5
    canceled = oms.order_cancel(order_id=order.pk, actor="trader")
    assert (canceled.status, canceled.filled_quantity) == (S.CANCELED, 5)
    assert Position.objects.get().quantity == 5
    assert_ledger_consistent()


def test_a_filled_order_cannot_be_canceled(stock, account, quote):
    order, _ = place("done", quantity=1)
    with pytest.raises(IllegalTransition) as info:
        oms.order_cancel(order_id=order.pk, actor="trader")
    assert info.value.status_code == 409
    assert "is FILLED" in info.value.message
    with pytest.raises(NotFound):
        oms.order_cancel(order_id=987654, actor="trader")


# --- a broker that fails, and recovery -----------------------------------------------------------


class FlakyBroker(PaperBroker):
    """The paper exchange behind a link that drops the first submit and the first cancel."""

    name = "flaky"
    failures = {"submit": 1, "cancel": 1}

    def submit(self, order):
        if FlakyBroker.failures["submit"]:
            FlakyBroker.failures["submit"] -= 1
            raise BrokerError("connection reset by peer")
        return super().submit(order)

    def cancel(self, order):
        if FlakyBroker.failures["cancel"]:
            FlakyBroker.failures["cancel"] -= 1
            raise BrokerError("connection reset by peer")
        return super().cancel(order)


@pytest.fixture
def flaky(settings, monkeypatch):
    monkeypatch.setitem(BROKERS, "flaky", f"{__name__}.FlakyBroker")
    monkeypatch.setattr(FlakyBroker, "failures", {"submit": 1, "cancel": 1})
    settings.TRADING_BROKER = "flaky"
    services.account_ensure(broker="flaky", initial_cash=D(10_000_000))


def test_a_failed_submit_leaves_the_order_submitted_until_recovery(stock, quote, flaky, caplog):
    order, _ = place("fl", quantity=2)
    assert order.status == S.SUBMITTED
    assert "submit of order fl failed; it stays SUBMITTED" in caplog.text
    counts = oms.recover()
    assert counts["submitted"] == 1
    order.refresh_from_db()
    assert (order.status, order.filled_quantity) == (S.FILLED, 2)
    assert order.broker_order_id == paper_order_id("fl")


def test_a_failed_cancel_stays_pending_until_recovery(stock, quote, flaky):
    FlakyBroker.failures["submit"] = 0
    order, _ = place("fc", quantity=2, order_type="LIMIT", limit_price=60000)
    assert oms.order_cancel(order_id=order.pk, actor="t").status == S.CANCEL_PENDING
    assert oms.recover()["cancels"] == 1
    order.refresh_from_db()
    assert order.status == S.CANCELED


def test_recover_finishes_everything_left_half_done(stock, account, quote, settings):
    strategy = make_strategy()
    pending = make_signal(strategy, quantity=1)
    stale = make_signal(strategy, quantity=1)
    Signal.objects.filter(pk=stale.pk).update(
        created_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=301)
    )
    new, _ = services.order_create(
        client_order_id="new",
        symbol="005930",
        side="BUY",
        order_type="MARKET",
        quantity=1,
        actor="t",
    )
    submitted, _ = services.order_create(
        client_order_id="sub",
        symbol="005930",
        side="BUY",
        order_type="MARKET",
        quantity=1,
        actor="t",
    )
    services.order_set_status(order_id=submitted.pk, to_status=S.SUBMITTED, actor="t")
    resting, _ = place("rest", quantity=1, order_type="LIMIT", limit_price=69000)

    # What is younger than min_age is left alone (the 301 s old signal is not: it expires).
    assert oms.recover(min_age=60) == dict.fromkeys(
        ("signals", "new", "submitted", "cancels"), 0
    ) | {"expired": 1, "matched": 1}

    put_quote(quote, close=69000, at=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1))
    counts = oms.recover()
    assert counts == {
        "signals": 1,
        "expired": 0,
        "new": 1,
        "submitted": 1,
        "cancels": 0,
        "matched": 1,
    }
    pending.refresh_from_db()
    stale.refresh_from_db()
    assert pending.outcome == "ORDERED" and pending.order.status == S.FILLED
    assert stale.outcome == "SKIPPED" and stale.outcome_reason.startswith("Expired: made at")
    for order in (new, submitted, resting):
        order.refresh_from_db()
        assert order.status == S.FILLED, order
    # Everything is done: a second recovery finds nothing.
    assert sum(oms.recover().values()) == 0
    assert_ledger_consistent()


# --- concurrency on real connections -------------------------------------------------------------


def _threads(target, args_list):
    errors = []
    barrier = threading.Barrier(len(args_list))

    def run(*args):
        try:
            barrier.wait(timeout=10)
            target(*args)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=args) for args in args_list]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors


@pytest.mark.django_db(transaction=True)
def test_two_buys_that_each_fit_but_not_together(stock, redis_client):
    paper_account("1000000")
    put_quote(redis_client, close=70000)
    # 10 x 70,100 + 105 = 701,105 each: one fits in 1,000,000, two do not.
    _threads(lambda cid: place(cid, quantity=10), [("a",), ("b",)])
    assert sorted(Order.objects.values_list("status", flat=True)) == [S.DENIED, S.FILLED]
    assert Order.objects.get(status=S.DENIED).reason_code == "INSUFFICIENT_CASH"
    assert Account.objects.get(broker="paper").cash == D(1_000_000 - 701_105)
    assert_ledger_consistent()


@pytest.mark.django_db(transaction=True)
def test_concurrent_fills_on_one_position(stock, redis_client, settings):
    """Two threads, each on its own connection, place orders on one symbol while two more
    match the resting ones against the quote: every fill counts once."""
    settings.PAPER_FILL_RATIO = D("0.25")
    paper_account("100000000")
    start = dt.datetime.now(dt.UTC)
    put_quote(redis_client, close=70000, at=start)

    def buyer(prefix):
        for n in range(6):
            place(f"{prefix}-{n}", quantity=8)

    _threads(buyer, [("x",), ("y",)])
    assert Order.objects.filter(status=S.PARTIALLY_FILLED).count() == 12

    def matcher(_):
        for step in range(1, 4):
            put_quote(redis_client, close=70000, at=start + dt.timedelta(seconds=step))
            oms.match_open_orders(symbol="005930")

    _threads(matcher, [(1,), (2,)])
    # Whatever the interleaving left open fills on later quotes, one at a time.
    step = 3
    while Order.objects.exclude(status=S.FILLED).exists() and step < 10:
        step += 1
        put_quote(redis_client, close=70000, at=start + dt.timedelta(seconds=step))
        oms.match_open_orders(symbol="005930")
    assert set(Order.objects.values_list("status", flat=True)) == {S.FILLED}
    assert Trade.objects.count() == 12 * 4  # 2 + 2 + 2 + 2 shares each
    assert Position.objects.get().quantity == 96
    assert_ledger_consistent()


def test_an_ack_after_a_cancel_request_keeps_the_brokers_order_id(stock, account):
    """A cancel (a halt, an operator) lands while the submit is on its way: the broker's answer
    finds the order CANCEL_PENDING; its id is still recorded, since the cancel needs it."""
    from trading.brokers import BrokerAck, get_broker

    order, _ = services.order_create(
        client_order_id="race", symbol="005930", side="BUY", order_type="MARKET", quantity=1,
        actor="t",
    )  # fmt: skip
    services.order_set_status(order_id=order.pk, to_status=S.SUBMITTED, actor="t")
    pending = services.order_request_cancel(order_id=order.pk, actor="operator")
    assert pending.status == S.CANCEL_PENDING
    oms._apply_ack(pending, BrokerAck(True, broker_order_id="B-1"), broker=get_broker("paper"))
    order.refresh_from_db()
    assert (order.status, order.broker_order_id) == (S.CANCEL_PENDING, "B-1")
