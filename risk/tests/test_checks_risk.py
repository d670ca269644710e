"""The risk rules of the pre-trade checks (trading/checks.py), each at its limit, just inside and
just outside it. Pure: no database, no Redis. The limits are risk.models.RiskLimits instances
at their defaults (unsaved), the portfolio a Book built by hand.

Portfolio: 10,000,000 KRW (cash 5,000,000 + positions 5,000,000); 005930 at 70,000 (price
70,000, quantity 10 -> an order value of 700,000 KRW); commission 0.015 % truncated.
"""

import datetime as dt
from dataclasses import replace
from decimal import Decimal

import pytest

from risk.models import RiskLimits
from trading import checks
from trading.checks import Code

D = Decimal
NOW = dt.datetime(2026, 11, 25, 1, 0, tzinfo=dt.UTC)  # Wednesday 10:00 KST
SETTINGS = checks.Limits(quote_max_age=300, deny_when_closed=False, commission_rate=D("0.00015"))
RISK = RiskLimits()  # the defaults


def book(**overrides) -> checks.Book:
    base = checks.Book(
        portfolio_value=D(10_000_000),
        symbol_value=D(0),
        sector="Semiconductors",
        sector_value=D(0),
        exposure_value=D(5_000_000),
        realized_today=D(0),
        realized_month=D(0),
        consecutive_losses=0,
        orders_today=0,
        orders_last_second=0,
        last_order_at=None,
        locks=(),
    )
    return replace(base, **overrides)


def inputs(*, risk=RISK, **overrides) -> checks.CheckInput:
    base = checks.CheckInput(
        symbol="005930",
        side="BUY",
        order_type="LIMIT",
        quantity=10,
        limit_price=D(70000),
        market="KOSPI",
        quote={"timestamp": NOW, "close": D(70000), "prev_close": D(70000)},
        now=NOW,
        price=D(70000),
        held=100,
        held_reserved=0,
        cash=D(5_000_000),
        cash_reserved=D(0),
        limits=SETTINGS,
        state="ACTIVE",
        risk=risk,
        book=book(),
        strategy_id=7,
        at=NOW,
    )
    return replace(base, **overrides)


def sell(**overrides):
    return inputs(side="SELL", **overrides)


def with_book(**overrides):
    extra = {k: overrides.pop(k) for k in list(overrides) if k not in checks.Book.__slots__}
    return inputs(book=book(**overrides), **extra)


def test_defaults_are_the_plan():
    assert RISK.max_position_ratio == D("0.20")
    assert RISK.max_sector_ratio == D("0.30")
    assert RISK.max_exposure_ratio == D("0.90")
    assert RISK.min_cash_reserve_ratio == D("0.10")
    assert (RISK.min_order_value, RISK.max_order_value) == (10_000, 1_000_000)
    assert (RISK.daily_loss_limit, RISK.monthly_loss_limit) == (50_000, 500_000)
    assert RISK.max_consecutive_losses == 5
    assert RISK.max_trades_per_day == 20
    assert RISK.same_symbol_interval_seconds == 60
    assert (RISK.stop_loss_ratio, RISK.take_profit_ratio) == (D("0.03"), D("0.05"))
    assert RISK.trailing_stop_ratio == D("0.02")


def test_a_plain_buy_and_sell_pass():
    assert checks.run(inputs()) == checks.APPROVED
    assert checks.run(sell()) == checks.APPROVED


def test_without_risk_figures_the_rules_stay_out():
    assert checks.run(inputs(risk=None, book=None, quantity=1000, cash=D(10**9))).approved


# --- trading state -----------------------------------------------------------------------------


def test_halted_stops_buys_and_sells():
    for c in (inputs(state="HALTED"), sell(state="HALTED")):
        decision = checks.run(c)
        assert decision.code == Code.TRADING_HALTED
        assert "HALTED" in decision.message


def test_reducing_stops_a_buy_and_lets_a_sell_through():
    decision = checks.run(inputs(state="REDUCING"))
    assert decision.code == Code.REDUCING_ONLY
    assert decision.figures == {"state": "REDUCING", "side": "BUY"}
    assert checks.run(sell(state="REDUCING")).approved


def test_reducing_does_not_let_a_sell_of_more_than_held_through():
    assert checks.run(sell(state="REDUCING", quantity=101)).code == Code.INSUFFICIENT_POSITION


# --- locks ---------------------------------------------------------------------------------------


def lock(kind="COOLDOWN", symbol="005930", strategy_id=None, until=NOW + dt.timedelta(minutes=5)):
    return checks.Lock(
        id=1, kind=kind, symbol=symbol, strategy_id=strategy_id, reason="stop-loss", until=until
    )


def test_a_lock_on_the_symbol_stops_a_buy_with_its_reason_and_until():
    decision = checks.run(with_book(locks=(lock(),)))
    assert decision.code == Code.LOCKED
    assert "stop-loss" in decision.message and "10:05:00 KST" in decision.message
    assert decision.figures["until"] == (NOW + dt.timedelta(minutes=5)).isoformat()


def test_locks_on_another_symbol_or_strategy_do_not_apply():
    assert checks.run(with_book(locks=(lock(symbol="000660"),))).approved
    assert checks.run(with_book(locks=(lock(symbol=None, strategy_id=8),))).approved
    # a strategy lock does not cover a manual order
    assert checks.run(
        with_book(locks=(lock(symbol=None, strategy_id=7),), strategy_id=None)
    ).approved


def test_a_lock_on_the_strategy_or_on_everything_applies():
    assert checks.run(with_book(locks=(lock(symbol=None, strategy_id=7),))).code == Code.LOCKED
    decision = checks.run(with_book(locks=(lock(symbol=None),)))
    assert decision.code == Code.LOCKED and "all trading" in decision.message


def test_a_lock_expires_at_its_until():
    assert checks.run(with_book(locks=(lock(until=NOW),))).approved
    later = NOW + dt.timedelta(microseconds=1)
    assert checks.run(with_book(locks=(lock(until=later),))).code == Code.LOCKED


def test_protection_locks_let_a_sell_through_a_manual_lock_does_not():
    assert checks.run(sell(book=book(locks=(lock("COOLDOWN"),)))).approved
    assert checks.run(sell(book=book(locks=(lock("STOPLOSS_GUARD"),)))).approved
    assert checks.run(sell(book=book(locks=(lock("MANUAL"),)))).code == Code.LOCKED


# --- pace ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("sent", "approved"), [(4, True), (5, False), (6, False)])
def test_rate_limit_at_5_a_second(sent, approved):
    decision = checks.run(with_book(orders_last_second=sent))
    assert decision.approved is approved
    if not approved:
        assert decision.code == Code.RATE_LIMIT
        assert decision.figures == {"orders_last_second": sent, "limit": 5}
    assert checks.run(sell(book=book(orders_last_second=sent))).approved is approved


@pytest.mark.parametrize(("seconds", "approved"), [(59.999, False), (60, True), (61, True)])
def test_same_symbol_interval_60_s(seconds, approved):
    last = NOW - dt.timedelta(seconds=seconds)
    decision = checks.run(with_book(last_order_at=last))
    assert decision.approved is approved
    if not approved:
        assert decision.code == Code.SAME_SYMBOL_INTERVAL
        assert decision.figures["interval_seconds"] == 60
    # A sell (it reduces a long position: an exit) never waits out the interval.
    assert checks.run(sell(book=book(last_order_at=last))).approved is True


# --- order value ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quantity", "price", "code"),
    [
        (1, 9_990, Code.ORDER_VALUE_TOO_LOW),  # 9,990 < 10,000
        (1, 10_000, None),  # at the minimum
        (1, 10_050, None),
        (1, 1_000_000, None),  # at the maximum
        (2, 500_000, None),
        (1, 1_001_000, Code.ORDER_VALUE_TOO_HIGH),
    ],
)
def test_order_value_between_10_000_and_1_000_000(quantity, price, code):
    risk = RiskLimits(max_position_ratio=1, max_sector_ratio=1)  # only the value matters here
    c = inputs(risk=risk, quantity=quantity, price=D(price), limit_price=D(price), quote=None)
    decision = checks.check_order_value(c)
    assert (decision.code if decision else None) == code


def test_a_small_sell_passes_only_when_it_sells_the_whole_remainder():
    small = sell(quantity=1, price=D(9_990), held=5)
    assert checks.check_order_value(small).code == Code.ORDER_VALUE_TOO_LOW
    assert checks.check_order_value(replace(small, held=1)) is None
    assert checks.check_order_value(replace(small, held=3, held_reserved=2)) is None


def test_a_large_sell_is_not_capped():
    assert checks.check_order_value(sell(quantity=100, price=D(70000))) is None  # 7,000,000


# --- losses, streaks, trades a day ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("realized", "approved"), [(D("-49999.9999"), True), (D(-50_000), False), (D(-50_001), False)]
)
def test_daily_loss_limit_50_000(realized, approved):
    decision = checks.run(with_book(realized_today=realized, realized_month=realized))
    assert decision.approved is approved
    if not approved:
        assert decision.code == Code.DAILY_LOSS_LIMIT
        assert decision.figures["limit"] == 50_000
    assert checks.run(sell(book=book(realized_today=realized))).approved


@pytest.mark.parametrize(
    ("realized", "approved"), [(D(-499_999), True), (D(-500_000), False), (D(-500_001), False)]
)
def test_monthly_loss_limit_500_000(realized, approved):
    decision = checks.run(with_book(realized_month=realized))
    assert decision.approved is approved
    if not approved:
        assert decision.code == Code.MONTHLY_LOSS_LIMIT
    assert checks.run(sell(book=book(realized_month=realized))).approved


def test_a_profit_never_trips_a_loss_limit():
    assert checks.run(with_book(realized_today=D(10**9), realized_month=D(10**9))).approved


@pytest.mark.parametrize(("losses", "approved"), [(4, True), (5, False), (6, False)])
def test_five_consecutive_losses(losses, approved):
    decision = checks.run(with_book(consecutive_losses=losses))
    assert decision.approved is approved
    if not approved:
        assert decision.code == Code.CONSECUTIVE_LOSSES
    assert checks.run(sell(book=book(consecutive_losses=losses))).approved


@pytest.mark.parametrize(("sent", "approved"), [(19, True), (20, False), (21, False)])
def test_twenty_trades_a_day(sent, approved):
    decision = checks.run(with_book(orders_today=sent))
    assert decision.approved is approved
    if not approved:
        assert decision.code == Code.TRADES_PER_DAY
    assert checks.run(sell(book=book(orders_today=sent))).approved


# --- exposure ------------------------------------------------------------------------------------
# The order is worth 700,000; the portfolio 10,000,000.


@pytest.mark.parametrize(
    ("held", "approved"),
    [(D(1_299_999), True), (D(1_300_000), True), (D(1_300_001), False)],  # limit 2,000,000
)
def test_position_limit_20_percent(held, approved):
    decision = checks.run(with_book(symbol_value=held, sector_value=held))
    assert decision.approved is approved
    if not approved:
        assert decision.code == Code.POSITION_LIMIT
        assert decision.figures["limit_value"] == D(2_000_000)
        assert decision.figures["value_after"] == D(2_000_001)


@pytest.mark.parametrize(
    ("held", "approved"),
    [(D(2_299_999), True), (D(2_300_000), True), (D(2_300_001), False)],  # limit 3,000,000
)
def test_sector_limit_30_percent(held, approved):
    decision = checks.run(with_book(sector_value=held))
    assert decision.approved is approved
    if not approved:
        assert decision.code == Code.SECTOR_LIMIT
        assert "Semiconductors" in decision.message


def test_no_sector_no_sector_limit():
    assert checks.run(with_book(sector="", sector_value=D(9_000_000))).approved


@pytest.mark.parametrize(
    ("held", "approved"),
    [(D(8_299_999), True), (D(8_300_000), True), (D(8_300_001), False)],  # limit 9,000,000
)
def test_exposure_limit_90_percent(held, approved):
    # cash is plentiful here: only the exposure rule is at its edge
    c = with_book(exposure_value=held, portfolio_value=D(10_000_000), cash=D(10**8))
    decision = checks.run(c)
    assert decision.approved is approved
    if not approved:
        assert decision.code == Code.EXPOSURE_LIMIT


@pytest.mark.parametrize(
    # 700,000 + 105 commission; the reserve is 1,000,000: cash left must be >= 1,000,000
    ("cash", "approved"),
    [(D(1_700_104), False), (D(1_700_105), True), (D(1_700_106), True)],
)
def test_cash_reserve_10_percent(cash, approved):
    decision = checks.run(inputs(cash=cash))
    assert decision.approved is approved
    if not approved:
        assert decision.code == Code.CASH_RESERVE
        assert decision.figures["reserve"] == D(1_000_000)
        assert decision.figures["cash_after"] == D(999_999)


def test_reserved_cash_counts_against_the_reserve():
    assert checks.run(inputs(cash=D(1_800_105), cash_reserved=D(100_000))).approved
    decision = checks.run(inputs(cash=D(1_800_105), cash_reserved=D(100_001)))
    assert decision.code == Code.CASH_RESERVE


def test_a_sell_is_never_stopped_by_exposure_rules():
    full = book(
        symbol_value=D(9_000_000),
        sector_value=D(9_000_000),
        exposure_value=D(9_900_000),
    )
    assert checks.run(sell(book=full, cash=D(0))).approved
    assert checks.run(inputs(book=full)).code == Code.POSITION_LIMIT


def test_an_empty_portfolio_denies_buys_by_its_ratios():
    c = inputs(book=book(portfolio_value=D(0), exposure_value=D(0)), cash=D(10**8))
    assert checks.check_position_limit(c).code == Code.POSITION_LIMIT


def test_the_trading_state_is_reported_before_anything_else():
    c = inputs(state="HALTED", quantity=0, book=book(locks=(lock(),), orders_last_second=99))
    assert checks.run(c).code == Code.TRADING_HALTED
