"""Pre-trade checks (trading/checks.py): each at its limit, just inside and just outside it.

Pure functions: no database, no Redis. Figures by hand: 005930 (KOSPI) previous close 70,000
-> limits 49,000 .. 91,000; tick 100 from 50,000, 50 from 20,000 to 49,999; commission 0.015 %
truncated to the won.
"""

import datetime as dt
from dataclasses import replace
from decimal import Decimal

import pytest

from trading import checks
from trading.checks import Code

D = Decimal
NOW = dt.datetime(2026, 11, 25, 1, 0, tzinfo=dt.UTC)  # Wednesday 10:00 KST: KRX open
LIMITS = checks.Limits(quote_max_age=300, deny_when_closed=False, commission_rate=D("0.00015"))


def quote(**overrides):
    q = {
        "timestamp": NOW,
        "open": D(70000),
        "high": D(70500),
        "low": D(69500),
        "close": D(70000),
        "volume": 1000,
        "prev_close": D(70000),
        "change": D(0),
        "change_rate": D(0),
        "upper_limit": D(91000),
        "lower_limit": D(49000),
    }
    q.update(overrides)
    return q


def inputs(**overrides) -> checks.CheckInput:
    base = checks.CheckInput(
        symbol="005930",
        side="BUY",
        order_type="MARKET",
        quantity=10,
        limit_price=None,
        market="KOSPI",
        quote=quote(),
        now=NOW,
        price=D(70100),
        held=0,
        held_reserved=0,
        cash=D(100_000_000),
        cash_reserved=D(0),
        limits=LIMITS,
    )
    return replace(base, **overrides)


def limit(price, **overrides):
    return inputs(order_type="LIMIT", limit_price=D(price), price=D(price), **overrides)


def test_a_plain_order_is_approved():
    assert checks.run(inputs()) == checks.APPROVED
    assert checks.run(limit(70000)).approved


# --- LOT_SIZE ----------------------------------------------------------------------------------


@pytest.mark.parametrize("quantity", [1, 2, 10_000])
def test_lot_size_whole_shares_from_one(quantity):
    assert checks.check_lot_size(inputs(quantity=quantity)) is None


@pytest.mark.parametrize("quantity", [0, -1, 1.5, D("1.5"), True, "1", None])
def test_lot_size_refuses_anything_else(quantity):
    decision = checks.run(inputs(quantity=quantity))
    assert decision.code == Code.LOT_SIZE
    assert not decision.approved
    assert repr(quantity) in decision.message
    assert decision.figures == {"quantity": quantity, "lot": 1}


# --- OFF_TICK ----------------------------------------------------------------------------------


@pytest.mark.parametrize("price", [70000, 70100, 50000, 49950, 20000, 19990, 4995, 1999, 1])
def test_prices_on_the_grid_pass(price):
    assert checks.check_off_tick(limit(price)) is None


@pytest.mark.parametrize(
    ("price", "tick", "below", "above"),
    [
        (70050, 100, 70000, 70100),  # 50,000+: tick 100
        (50050, 100, 50000, 50100),  # just above the band edge
        (49975, 50, 49950, 50000),  # just below it: tick 50
        (20025, 50, 20000, 20050),
        (19995, 10, 19990, 20000),
        (4997, 5, 4995, 5000),
    ],
)
def test_off_tick_names_the_nearest_valid_prices(price, tick, below, above):
    decision = checks.run(limit(price))
    assert decision.code == Code.OFF_TICK
    assert decision.figures == {
        "limit_price": D(price),
        "tick": D(tick),
        "below": D(below),
        "above": D(above),
    }
    assert f"nearest valid prices are {below:,} or {above:,}" in decision.message


def test_off_tick_fractions_and_etfs():
    assert checks.run(limit("1999.5")).code == Code.OFF_TICK
    # An ETF trades on a 5-won grid at every price.
    assert checks.check_off_tick(limit(70005, market="ETF")) is None
    assert checks.run(limit(70003, market="ETF")).code == Code.OFF_TICK
    # Stock grid at the same price: 70,005 is off.
    assert checks.run(limit(70005)).code == Code.OFF_TICK


def test_market_orders_have_no_tick_to_check():
    assert checks.check_off_tick(inputs()) is None


# --- NO_QUOTE / STALE_QUOTE --------------------------------------------------------------------


@pytest.mark.parametrize("order_type", ["MARKET", "LIMIT"])
def test_no_quote_is_denied(order_type):
    made = inputs(quote=None) if order_type == "MARKET" else limit(70000, quote=None)
    decision = checks.run(made)
    assert decision.code == Code.NO_QUOTE
    assert "No quote for 005930" in decision.message
    assert checks.run(replace(made, quote=quote(close=None))).code == Code.NO_QUOTE


@pytest.mark.parametrize(
    ("age", "approved"),
    [(0, True), (299.999, True), (300, True), (300.001, False), (3600, False)],
)
def test_market_order_quote_age_limit(age, approved):
    decision = checks.run(inputs(now=NOW + dt.timedelta(seconds=age)))
    assert decision.approved is approved
    if not approved:
        assert decision.code == Code.STALE_QUOTE
        assert decision.figures["age_seconds"] == pytest.approx(age)
        assert decision.figures["max_age_seconds"] == 300
        assert "at most 300 s for a market order" in decision.message


def test_a_quote_from_the_future_of_the_market_clock_is_fresh():
    assert checks.run(inputs(now=NOW - dt.timedelta(seconds=30))).approved


def test_limit_orders_do_not_need_a_fresh_quote_and_undated_quotes_are_stale():
    assert checks.run(limit(70000, now=NOW + dt.timedelta(hours=5))).approved
    decision = checks.run(inputs(quote=quote(timestamp=None)))
    assert decision.code == Code.STALE_QUOTE
    assert "undated" in decision.message


# --- OUTSIDE_PRICE_BAND ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("price", "approved"),
    [(91000, True), (91100, False), (49000, True), (48950, False), (70000, True)],
)
def test_price_band_edges(price, approved):
    decision = checks.run(limit(price))
    assert decision.approved is approved
    if not approved:
        assert decision.code == Code.OUTSIDE_PRICE_BAND
        assert decision.figures == {
            "limit_price": D(price),
            "lower": D(49000),
            "upper": D(91000),
            "base": D(70000),
        }
        assert "49,000 to 91,000" in decision.message


def test_band_base_is_close_minus_change_without_prev_close():
    q = quote(prev_close=None, close=D(72000), change=D(2000))
    assert checks.previous_close(q) == D(70000)
    assert checks.run(limit(91000, quote=q)).approved
    assert checks.run(limit(91100, quote=q)).code == Code.OUTSIDE_PRICE_BAND


def test_band_from_the_limit_fields_or_unknown():
    q = quote(prev_close=None, change=None)
    assert checks.run(limit(91000, quote=q)).approved
    assert checks.run(limit(91100, quote=q)).code == Code.OUTSIDE_PRICE_BAND
    unknown = quote(prev_close=None, change=None, upper_limit=None, lower_limit=None)
    assert checks.price_band(unknown, market="KOSPI") is None
    assert checks.run(limit(200000, quote=unknown)).approved  # cannot be judged: let through


def test_konex_band_is_15_percent():
    assert checks.run(limit(80500, market="KONEX")).approved  # 70,000 x 1.15
    assert checks.run(limit(80600, market="KONEX")).code == Code.OUTSIDE_PRICE_BAND


# --- MARKET_CLOSED -----------------------------------------------------------------------------

KST = dt.timezone(dt.timedelta(hours=9))
OPEN = dt.datetime(2026, 11, 25, 9, 0, tzinfo=KST)
CLOSE = dt.datetime(2026, 11, 25, 15, 30, tzinfo=KST)
SECOND = dt.timedelta(seconds=1)


def test_closed_market_is_not_denied_by_default():
    night = dt.datetime(2026, 11, 25, 23, 0, tzinfo=KST)
    assert checks.check_market_hours(inputs(now=night)) is None


@pytest.mark.parametrize(
    ("when", "approved"),
    [(OPEN - SECOND, False), (OPEN, True), (CLOSE - SECOND, True), (CLOSE, False)],
)
def test_market_hours_when_enabled(when, approved):
    limits = replace(LIMITS, deny_when_closed=True)
    decision = checks.check_market_hours(inputs(now=when, limits=limits))
    assert (decision is None) is approved
    if not approved:
        assert decision.code == Code.MARKET_CLOSED
        assert "KRX is closed at 2026-11-25" in decision.message


# --- INSUFFICIENT_POSITION ---------------------------------------------------------------------


@pytest.mark.parametrize(("quantity", "approved"), [(6, True), (7, True), (8, False)])
def test_position_limit_counts_open_sells(quantity, approved):
    c = inputs(side="SELL", quantity=quantity, held=10, held_reserved=3)
    decision = checks.run(c)
    assert decision.approved is approved
    if not approved:
        assert decision.code == Code.INSUFFICIENT_POSITION
        assert decision.figures == {"quantity": 8, "held": 10, "reserved": 3, "available": 7}
        assert "exceeds the 7 available (10 held, 3 already in open sell orders" in (
            decision.message
        )


def test_selling_with_nothing_held_and_buys_ignore_the_position():
    assert checks.run(inputs(side="SELL", quantity=1)).code == Code.INSUFFICIENT_POSITION
    assert checks.check_position(inputs(side="BUY", quantity=10**6)) is None


# --- INSUFFICIENT_CASH -------------------------------------------------------------------------

# 10 x 70,100 = 701,000; commission 105.15 -> 105; needed 701,105.
NEEDED = D(701_105)


@pytest.mark.parametrize(
    ("cash", "reserved", "approved"),
    [
        (NEEDED, 0, True),
        (NEEDED - 1, 0, False),
        (NEEDED + 1, 0, True),
        (NEEDED + 1, 1, True),
        (NEEDED + 1, 2, False),
    ],
)
def test_cash_limit_includes_commission_and_reservations(cash, reserved, approved):
    decision = checks.run(inputs(cash=cash, cash_reserved=D(reserved)))
    assert decision.approved is approved
    if not approved:
        assert decision.code == Code.INSUFFICIENT_CASH
        assert decision.figures["needed"] == NEEDED
        assert decision.figures["commission"] == D(105)
        assert decision.figures["available"] == NEEDED - 1
        assert "needs 701,105 KRW (701,000 + 105 commission)" in decision.message


def test_sells_need_no_cash_and_a_limit_buy_is_valued_at_its_limit():
    assert checks.run(inputs(side="SELL", held=10, cash=D(0))).approved
    # 10 x 70,000 = 700,000 + 105 commission.
    assert checks.run(limit(70000, cash=D(700_105))).approved
    assert checks.run(limit(70000, cash=D(700_104))).code == Code.INSUFFICIENT_CASH


# --- order of the checks ---------------------------------------------------------------------


def test_the_first_denial_is_reported():
    # Off tick, outside the band, and no cash: the order's own terms come first.
    decision = checks.run(limit(95050, cash=D(0)))
    assert decision.code == Code.OFF_TICK
    assert checks.run(limit(95000, cash=D(0))).code == Code.OUTSIDE_PRICE_BAND
    assert checks.run(limit(90000, cash=D(0))).code == Code.INSUFFICIENT_CASH


def test_a_custom_list_of_checks():
    def no_big_orders(c):
        return checks.Decision(False, "ORDER_TOO_BIG", "too big") if c.quantity > 5 else None

    assert checks.run(inputs(), [no_big_orders]).code == "ORDER_TOO_BIG"
    assert checks.run(inputs(quantity=5), [*checks.CHECKS, no_big_orders]).approved
