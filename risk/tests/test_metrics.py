"""risk/metrics.py: exposure, drawdown, historical VaR, Sharpe and beta on known numbers."""

import datetime as dt
import math
from decimal import Decimal

import numpy as np
import pytest

from risk import metrics

D = Decimal
DAY0 = dt.date(2026, 1, 1)


def days(n):
    return [DAY0 + dt.timedelta(days=i) for i in range(n)]


def test_market_values_portfolio_value_and_sectors():
    values = metrics.market_values(
        {"005930": (10, D(70000)), "000660": (2, D(180000)), "035720": (0, D(50000))}
    )
    assert values == {"005930": D(700000), "000660": D(360000)}  # a flat holding is no value
    assert metrics.portfolio_value(D(940000), values) == D(2000000)
    sectors = metrics.exposure_by_sector(
        {**values, "123456": D(5)}, {"005930": "Tech", "000660": "Tech ", "123456": ""}
    )
    assert sectors == {"Tech": D(1060000), metrics.UNCLASSIFIED: D(5)}
    assert metrics.share(D(1), D(4)) == D("0.25")
    assert metrics.share(D(1), D(0)) is None


def test_max_drawdown():
    assert metrics.max_drawdown([]) == 0
    assert metrics.max_drawdown([100]) == 0
    assert metrics.max_drawdown([100, 110, 120]) == 0
    # Peak 120, trough 90 (25 %), a recovery to 110 that is no new peak.
    assert metrics.max_drawdown([D(100), D(120), D(90), D(110)]) == D("0.25")
    # The fall is measured from the running peak: 120 -> 60 is 50 %, whatever came between.
    assert metrics.max_drawdown([100, 120, 90, 100, 60]) == D("0.5")
    assert metrics.max_drawdown([0, 0]) == 0


def test_daily_returns_skip_bad_closes():
    closes = {DAY0: D(100), DAY0 + dt.timedelta(1): D(110), DAY0 + dt.timedelta(3): D(99)}
    result = metrics.daily_returns(closes)
    assert list(result) == [DAY0 + dt.timedelta(1), DAY0 + dt.timedelta(3)]
    assert result[DAY0 + dt.timedelta(1)] == pytest.approx(0.10)
    assert result[DAY0 + dt.timedelta(3)] == pytest.approx(-0.10)
    assert metrics.daily_returns({DAY0: D(0), DAY0 + dt.timedelta(1): D(5)}) == {}


def test_var_is_the_observed_loss_at_the_5_percent_quantile():
    # 100 days of PnL: -100, -99, ..., -1: the "lower" 5 % quantile is the 5th worst: -96.
    pnl = [-(i + 1) for i in range(100)]
    assert metrics.historical_var(pnl) == D(96)
    # Never a negative VaR: the worst day gained.
    assert metrics.historical_var([float(i + 1) for i in range(40)]) == 0
    # Too few days: unknown.
    assert metrics.historical_var([-5.0] * 19) is None
    assert metrics.historical_var([-5.0] * 20) == D(5)


def test_simulation_weights_today_s_holdings_and_leaves_young_listings_out():
    n = 30
    span = days(n + 1)
    up = {d: 0.01 for d in span[1:]}
    down = {d: -0.02 for d in span[1:]}
    young = {d: 0.5 for d in span[-5:]}
    sim = metrics.simulate(
        {"A": D(1000), "B": D(500), "Y": D(100)},
        {"A": up, "B": down, "Y": young},
        D(2000),
    )
    assert sim.symbols == ["A", "B"] and sim.missing == ["Y"]
    assert len(sim.days) == n
    assert sim.pnl.tolist() == pytest.approx([1000 * 0.01 - 500 * 0.02] * n)  # 0 each day
    assert sim.returns.tolist() == pytest.approx([0.0] * n)
    nothing = metrics.simulate({"Y": D(1)}, {"Y": young}, D(2000))
    assert nothing.pnl.size == 0 and nothing.missing == ["Y"]


def test_sharpe_and_beta_on_known_series():
    rng = np.random.default_rng(7)
    bench = rng.normal(0.0005, 0.01, 250)
    ours = 1.5 * bench + rng.normal(0, 0.001, 250)
    span = days(250)
    b = dict(zip(span, bench.tolist(), strict=True))
    p = dict(zip(span, ours.tolist(), strict=True))
    assert metrics.beta(p, b) == pytest.approx(1.5, abs=0.03)
    expected = float(np.mean(ours) / np.std(ours, ddof=1) * math.sqrt(252))
    assert metrics.sharpe_ratio(ours) == pytest.approx(expected)
    # Undefined: too few days, or no variation.
    assert metrics.sharpe_ratio(ours[:19]) is None
    assert metrics.sharpe_ratio([0.01] * 30) is None
    assert metrics.beta(p, {d: 0.0 for d in span}) is None
    assert metrics.beta({span[0]: 0.1}, b) is None


def test_decimal_shapes_for_the_model():
    assert metrics.money(1.23456789) == D("1.2346")
    assert metrics.ratio_decimal(0.12345678) == D("0.123457")
    assert metrics.ratio_decimal(None) is None
    assert metrics.ratio_decimal(float("nan")) is None
    # What risk_metrics' ratio columns (12 digits, 6 decimals) can hold, and no more.
    assert metrics.ratio_decimal(999_999.999999) == D("999999.999999")
    assert metrics.ratio_decimal(1_000_000.0) is None
    assert metrics.ratio_decimal(-2.5e9) is None
