"""Portfolio risk figures: pure functions of numbers (no I/O, no clock).

The risk engine (risk/engines.py) reads the ledger and `market_data`, then calls these.
Money in and out is Decimal; the statistics (returns, VaR, Sharpe, beta) are computed in
float with numpy and handed back as Decimal rounded for the model's fields.

Definitions
- Market value of a holding: quantity x its mark (the latest quote, else the position's
  current_price, else its average price). Portfolio value: cash + every holding's value.
- Exposure: a holding's (or a sector's, or all holdings') value over the portfolio value.
  A stock with a blank sector counts under UNCLASSIFIED.
- Drawdown: the largest fall of a value series from its running peak, over that peak (0..1).
- Historical VaR 95 %, one day: today's holdings are revalued with each past day's close to
  close returns of their symbols (historical simulation, the days every holding has a
  return); the VaR is the loss at the 5 % quantile of those daily PnLs, taken at an observed
  day (numpy's "lower" method, so never interpolated to a smaller loss), as a positive KRW
  amount (0 when even that day gained). Needs MIN_OBSERVATIONS days.
- Sharpe: mean / sample standard deviation of the same simulated daily portfolio returns
  (PnL over portfolio value, cash included), times sqrt(252); no risk-free rate, as
  trading.performance. Beta: cov(portfolio, benchmark) / var(benchmark) on the days both
  have a return. Both describe the portfolio held now, over the lookback; None when there
  are too few days or no variation.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

import numpy as np

UNCLASSIFIED = "(no sector)"
TRADING_DAYS_PER_YEAR = 252
MIN_OBSERVATIONS = 20
VAR_CONFIDENCE = 0.95
_ZERO = Decimal(0)
_MONEY = Decimal("0.0001")
_RATIO = Decimal("0.000001")


def money(value) -> Decimal:
    """A KRW amount as the model's MoneyField stores it (4 places)."""
    return Decimal(repr(value) if isinstance(value, float) else value).quantize(
        _MONEY, rounding=ROUND_HALF_EVEN
    )


_RATIO_BOUND = Decimal(1_000_000)  # RatioField: 12 digits, 6 of them decimals


def ratio_decimal(value: float | Decimal | None) -> Decimal | None:
    """A ratio as the model's RatioField stores it (6 places); None stays None, and so does a
    value it cannot hold (|x| >= 1,000,000: a Sharpe or beta of a near-constant series is no
    figure, and must not make every snapshot fail)."""
    if value is None:
        return None
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        value = Decimal(repr(value))
    value = value.quantize(_RATIO, rounding=ROUND_HALF_EVEN)
    return value if abs(value) < _RATIO_BOUND else None


@dataclass
class Figures:
    """One look at the portfolio: what the limits are checked against and what a risk_metrics
    row stores. `realized_today` / `realized_month`: the realized PnL of the Seoul day / month's
    sells (negative = a loss); `consecutive_losses`: losing sells in a row, newest first, and
    `last_loss_trade` the id of the newest of them. The history figures (VaR, Sharpe, beta,
    drawdown) are None / 0 until computed."""

    at: dt.datetime
    cash: Decimal
    values: dict[str, Decimal]
    sector_of: dict[str, str]
    realized_today: Decimal = _ZERO
    realized_month: Decimal = _ZERO
    daily_pnl: Decimal = _ZERO
    consecutive_losses: int = 0
    last_loss_trade: int | None = None
    var_95: Decimal | None = None
    max_drawdown: Decimal = _ZERO
    sharpe_ratio: float | None = None
    beta: float | None = None

    @property
    def portfolio_value(self) -> Decimal:
        return portfolio_value(self.cash, self.values)

    @property
    def exposure(self) -> Decimal:
        return sum(self.values.values(), _ZERO)

    @property
    def sectors(self) -> dict[str, Decimal]:
        return exposure_by_sector(self.values, self.sector_of)


# --- exposure ---------------------------------------------------------------------------------


def market_values(holdings: Mapping[str, tuple[int, Decimal]]) -> dict[str, Decimal]:
    """symbol -> quantity x mark, for the holdings with shares (symbol -> (quantity, mark))."""
    return {
        symbol: Decimal(mark) * quantity
        for symbol, (quantity, mark) in holdings.items()
        if quantity > 0
    }


def portfolio_value(cash: Decimal, values: Mapping[str, Decimal]) -> Decimal:
    return cash + sum(values.values(), _ZERO)


def exposure_by_sector(
    values: Mapping[str, Decimal], sectors: Mapping[str, str]
) -> dict[str, Decimal]:
    """sector -> the summed value of its holdings (blank or unknown sector: UNCLASSIFIED)."""
    result: dict[str, Decimal] = {}
    for symbol, value in values.items():
        sector = (sectors.get(symbol) or "").strip() or UNCLASSIFIED
        result[sector] = result.get(sector, _ZERO) + value
    return result


def share(part: Decimal, whole: Decimal) -> Decimal | None:
    """part / whole, or None when the whole is not positive (nothing to measure against)."""
    if whole <= 0:
        return None
    return part / whole


# --- drawdown ---------------------------------------------------------------------------------


def max_drawdown(values: Sequence) -> Decimal:
    """The largest fall from a running peak, over the peak (0..1); 0 for fewer than 2 values
    or a series that never fell. Non-positive peaks are skipped (nothing to fall from)."""
    peak = None
    worst = _ZERO
    for raw in values:
        value = Decimal(raw)
        if peak is None or value > peak:
            peak = value
            continue
        if peak > 0:
            worst = max(worst, (peak - value) / peak)
    return min(worst, Decimal(1))


# --- returns ----------------------------------------------------------------------------------


def daily_returns(closes: Mapping[dt.date, Decimal]) -> dict[dt.date, float]:
    """date -> close-to-close return from the previous date in `closes` (so the first date
    has none). Non-positive closes end nothing: they are skipped."""
    result: dict[dt.date, float] = {}
    previous = None
    for day in sorted(closes):
        close = float(closes[day])
        if close <= 0:
            continue
        if previous is not None:
            result[day] = close / previous - 1.0
        previous = close
    return result


@dataclass(frozen=True)
class Simulation:
    """Today's holdings over past days: each day's PnL in KRW and return on the portfolio."""

    days: list[dt.date]
    pnl: np.ndarray  # KRW per day
    returns: np.ndarray  # pnl / portfolio value
    symbols: list[str]  # the holdings simulated
    missing: list[str]  # holdings left out: too little history


def simulate(
    values: Mapping[str, Decimal],
    returns: Mapping[str, Mapping[dt.date, float]],
    portfolio: Decimal,
    *,
    min_observations: int = MIN_OBSERVATIONS,
) -> Simulation:
    """Historical simulation of the holdings `values` (symbol -> KRW) with each symbol's daily
    `returns`, on the days every simulated holding has a return. A holding with fewer than
    `min_observations` returns is left out (and listed in `missing`): one young listing must
    not shrink everyone's history to its few days."""
    symbols = sorted(s for s in values if len(returns.get(s, {})) >= min_observations)
    missing = sorted(s for s in values if s not in symbols)
    if not symbols or portfolio <= 0:
        return Simulation([], np.array([]), np.array([]), symbols, missing)
    days = sorted(set.intersection(*(set(returns[s]) for s in symbols)))
    matrix = np.array([[returns[s][day] for s in symbols] for day in days], dtype=float)
    weights = np.array([float(values[s]) for s in symbols], dtype=float)
    pnl = matrix @ weights if days else np.array([])
    return Simulation(days, pnl, pnl / float(portfolio), symbols, missing)


def historical_var(
    pnl: Sequence[float] | np.ndarray,
    *,
    confidence: float = VAR_CONFIDENCE,
    min_observations: int = MIN_OBSERVATIONS,
) -> Decimal | None:
    """One-day historical VaR (module doc): a positive KRW loss, 0 when the quantile day
    gained, None with fewer than `min_observations` days."""
    series = np.asarray(pnl, dtype=float)
    if series.size < min_observations:
        return None
    quantile = float(np.quantile(series, 1.0 - confidence, method="lower"))
    return money(max(0.0, -quantile))


def sharpe_ratio(
    returns: Sequence[float] | np.ndarray, *, min_observations: int = MIN_OBSERVATIONS
) -> float | None:
    series = np.asarray(returns, dtype=float)
    if series.size < min_observations:
        return None
    deviation = float(np.std(series, ddof=1))
    if not deviation > 1e-12:
        return None
    return float(np.mean(series)) / deviation * math.sqrt(TRADING_DAYS_PER_YEAR)


def beta(
    returns: Mapping[dt.date, float],
    benchmark: Mapping[dt.date, float],
    *,
    min_observations: int = MIN_OBSERVATIONS,
) -> float | None:
    """cov / var on the days both have a return (sample statistics); None when undefined."""
    days = sorted(set(returns) & set(benchmark))
    if len(days) < min_observations:
        return None
    ours = np.array([returns[d] for d in days], dtype=float)
    theirs = np.array([benchmark[d] for d in days], dtype=float)
    variance = float(np.var(theirs, ddof=1))
    if not variance > 1e-12:
        return None
    return float(np.cov(ours, theirs, ddof=1)[0, 1]) / variance


__all__ = [
    "MIN_OBSERVATIONS",
    "UNCLASSIFIED",
    "Figures",
    "Simulation",
    "beta",
    "daily_returns",
    "exposure_by_sector",
    "historical_var",
    "market_values",
    "max_drawdown",
    "money",
    "portfolio_value",
    "ratio_decimal",
    "share",
    "sharpe_ratio",
    "simulate",
]
