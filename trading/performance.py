"""Strategy performance: one `strategy_performance` row per strategy and trading day.

Days are Seoul calendar days (00:00 to 24:00 Asia/Seoul). A strategy's trades are the trades
whose `strategy` is its name and whose status is not CANCELED.

The strategy's book. Positions are per symbol and shared by every strategy (and by orders
placed through the API), so a strategy's own holdings are rebuilt from its own trades: they
are replayed in id order (the order fills were applied) through `services.position_apply`,
the same arithmetic as the positions, into one in-memory position per symbol. The book holds
what the strategy bought and has not sold, at its cost basis (buy amounts plus buy
commissions); its realized PnL is net of commission and tax. A sell of more than the book holds
(shares another strategy or a person bought) flattens the book in that symbol and counts the
trade's own profit_loss from the ledger as realized.

Marks. The book is valued at the last known price: at the day's start and end, the close of the
newest `market_data` candle (any interval) that opened before that instant, else the last trade
price of the symbol in the ledger before it, else the book's own cost (unrealized 0). Within
the day, a symbol is re-marked at the price of each of the strategy's trades in it.

The figures, for strategy S on day D with allocation A (S.capital_allocation, today's value):
- PnL(t) = realized PnL of D's trades up to t + unrealized(t) - unrealized(start of D), where
  unrealized = sum over the book of (mark x quantity - cost basis). PnL(end of D) is the day's
  profit or loss marked to market: a position bought on D and held counts on D at D's close,
  and its later days count the change of its mark.
- total_return = PnL(end of D) / A (>= -1 by the table's CHECK; clipped there, with a warning).
- trades_count = the strategy's fills on D (buys and sells).
- win_rate = sells on D with a positive realized PnL / sells on D; empty when there was none.
- max_drawdown = the largest fall of the PnL curve from its running peak, over A; the curve
  starts at 0 at the start of D, has a point after each trade of D and ends at PnL(end of D).
  Clipped to 1 (the table's CHECK: 0..1).
- sharpe_ratio = mean / sample standard deviation of the strategy's daily total_return over its
  last SHARPE_DAYS (20) rows up to and including D, times sqrt(252); empty with fewer than
  SHARPE_MIN_DAYS (5) days or no variation. No risk-free rate (KRW cash rates are near 0 at
  a daily scale; a known simplification). Days without a row are not counted as zero.

Which strategies get a row for D: the enabled ones (a day without trades is a 0 return, and
counts in the Sharpe ratio), and any other that traded on D or held shares at its start.
Computing is an idempotent upsert on (strategy, date): running it again replaces the row.

Cost: the book is replayed from the strategy's first trade, one query per strategy; a history
of millions of trades would call for daily book snapshots (not needed yet).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import statistics
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal

from marketdata.krx import SEOUL
from marketdata.models import MarketData

from .models import Position, Side, Strategy, StrategyPerformance, Trade, TradeStatus
from .services import FillError, position_apply

logger = logging.getLogger("qb.trading.performance")

SHARPE_DAYS = 20
SHARPE_MIN_DAYS = 5
TRADING_DAYS_PER_YEAR = 252
_RATIO = Decimal("0.000001")
_ZERO = Decimal(0)
_TRADE_FIELDS = (
    "id", "timestamp", "symbol_id", "side", "quantity", "price", "commission", "tax",
    "profit_loss",
)  # fmt: skip


def day_bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of a Seoul calendar day, as aware datetimes."""
    start = dt.datetime.combine(day, dt.time(0), tzinfo=SEOUL)
    return start, start + dt.timedelta(days=1)


def seoul_today(now: dt.datetime | None = None) -> dt.date:
    return (now or dt.datetime.now(dt.UTC)).astimezone(SEOUL).date()


def _ratio(value: Decimal) -> Decimal:
    return value.quantize(_RATIO, rounding=ROUND_HALF_EVEN)


# --- the book --------------------------------------------------------------------------------


@dataclass
class Book:
    """One strategy's holdings, rebuilt from its trades (module doc)."""

    positions: dict[str, Position] = field(default_factory=dict)
    marks: dict[str, Decimal] = field(default_factory=dict)

    def apply(self, trade) -> Decimal | None:
        position = self.positions.get(trade.symbol_id)
        if position is None:
            position = self.positions[trade.symbol_id] = Position(symbol_id=trade.symbol_id)
        try:
            realized = position_apply(
                position,
                side=trade.side,
                quantity=trade.quantity,
                price=trade.price,
                commission=trade.commission,
                tax=trade.tax,
            )
        except FillError:
            # Sold shares the strategy's book does not hold: flatten, take the ledger's figure.
            self.positions[trade.symbol_id] = Position(symbol_id=trade.symbol_id)
            realized = trade.profit_loss or _ZERO
        self.marks[trade.symbol_id] = trade.price
        return realized

    def held(self) -> list[str]:
        return sorted(s for s, p in self.positions.items() if p.quantity > 0)

    def unrealized(self) -> Decimal:
        total = _ZERO
        for symbol in self.held():
            position = self.positions[symbol]
            mark = self.marks.get(symbol)
            if mark is not None:
                total += mark * position.quantity - position.cost_basis
        return total


def price_before(symbol: str, at: dt.datetime) -> Decimal | None:
    """The last known price of `symbol` before `at` (module doc, "Marks")."""
    close = (
        MarketData.objects.filter(symbol=symbol, time__lt=at)
        .order_by("-time")
        .values_list("close", flat=True)
        .first()
    )
    if close is not None:
        return close
    return (
        Trade.objects.filter(symbol_id=symbol, timestamp__lt=at)
        .exclude(status=TradeStatus.CANCELED)
        .order_by("-timestamp", "-id")
        .values_list("price", flat=True)
        .first()
    )


def _mark_all(book: Book, at: dt.datetime) -> None:
    for symbol in book.held():
        price = price_before(symbol, at)
        if price is not None:
            book.marks[symbol] = price
        else:  # nothing known: value it at its cost (unrealized 0)
            position = book.positions[symbol]
            book.marks[symbol] = position.cost_basis / position.quantity


# --- one strategy, one day -------------------------------------------------------------------


@dataclass
class DayFigures:
    strategy: str
    date: dt.date
    pnl: Decimal
    total_return: Decimal
    trades_count: int
    win_rate: Decimal | None
    max_drawdown: Decimal
    sharpe_ratio: Decimal | None = None
    held_at_start: bool = False

    def row(self) -> StrategyPerformance:
        return StrategyPerformance(
            strategy=self.strategy,
            date=self.date,
            total_return=self.total_return,
            trades_count=self.trades_count,
            win_rate=self.win_rate,
            max_drawdown=self.max_drawdown,
            sharpe_ratio=self.sharpe_ratio,
        )


def strategy_day(strategy: Strategy, day: dt.date) -> DayFigures:
    """The figures of `strategy` on `day` (Sharpe left to `sharpe_ratio`)."""
    start, end = day_bounds(day)
    trades = (
        Trade.objects.filter(strategy=strategy.name, timestamp__lt=end)
        .exclude(status=TradeStatus.CANCELED)
        .only(*_TRADE_FIELDS)
        .order_by("id")
    )
    before, today = [], []
    for trade in trades:
        (today if trade.timestamp >= start else before).append(trade)
    book = Book()
    for trade in before:
        book.apply(trade)
    held_at_start = bool(book.held())
    _mark_all(book, start)
    opening = book.unrealized()

    realized = _ZERO
    sells = wins = 0
    peak = worst = _ZERO  # the curve starts at 0; worst = the largest fall from a peak
    for trade in today:
        gain = book.apply(trade)
        if trade.side == Side.SELL:
            sells += 1
            realized += gain
            wins += gain > 0
        value = realized + book.unrealized() - opening
        peak = max(peak, value)
        worst = max(worst, peak - value)
    _mark_all(book, end)
    pnl = realized + book.unrealized() - opening
    worst = max(worst, max(peak, pnl) - pnl)

    allocation = strategy.capital_allocation
    total_return = _ratio(pnl / allocation)
    if total_return < -1:
        logger.warning(
            "Strategy %s lost %s KRW on %s, more than its allocation %s; return clipped to -1.",
            strategy.name, pnl, day, allocation,
        )  # fmt: skip
        total_return = Decimal(-1)
    drawdown = min(_ratio(worst / allocation), Decimal(1))
    return DayFigures(
        strategy=strategy.name,
        date=day,
        pnl=pnl,
        total_return=total_return,
        trades_count=len(today),
        win_rate=_ratio(Decimal(wins) / sells) if sells else None,
        max_drawdown=drawdown,
        held_at_start=held_at_start,
    )


def sharpe_ratio(returns: list[Decimal]) -> Decimal | None:
    """Annualized Sharpe of daily returns (module doc); None when undefined."""
    if len(returns) < SHARPE_MIN_DAYS:
        return None
    values = [float(r) for r in returns]
    deviation = statistics.stdev(values)
    if deviation == 0:
        return None
    ratio = statistics.fmean(values) / deviation * math.sqrt(TRADING_DAYS_PER_YEAR)
    return _ratio(Decimal(repr(ratio)))


def _previous_returns(name: str, day: dt.date) -> list[Decimal]:
    return list(
        StrategyPerformance.objects.filter(strategy=name, date__lt=day)
        .order_by("-date")
        .values_list("total_return", flat=True)[: SHARPE_DAYS - 1]
    )


# --- every strategy, one day: the upsert ------------------------------------------------------


def performance_compute(*, day: dt.date, strategy: str | None = None) -> list[StrategyPerformance]:
    """Compute and store (upsert) `day`'s rows for every strategy, or the one named."""
    strategies = Strategy.objects.order_by("name")
    if strategy is not None:
        strategies = strategies.filter(name=strategy)
    figures = []
    for item in strategies:
        result = strategy_day(item, day)
        if not (item.enabled or result.trades_count or result.held_at_start):
            continue
        result.sharpe_ratio = sharpe_ratio(
            [result.total_return, *_previous_returns(item.name, day)]
        )
        figures.append(result)
    if not figures:
        return []
    rows = StrategyPerformance.objects.bulk_create(
        [f.row() for f in figures],
        update_conflicts=True,
        unique_fields=["strategy", "date"],
        update_fields=[
            "total_return", "trades_count", "win_rate", "max_drawdown", "sharpe_ratio",
        ],
    )  # fmt: skip
    return rows


def performance_exists(*, day: dt.date) -> bool:
    return StrategyPerformance.objects.filter(date=day).exists()


__all__ = [
    "SHARPE_DAYS",
    "SHARPE_MIN_DAYS",
    "Book",
    "DayFigures",
    "day_bounds",
    "performance_compute",
    "performance_exists",
    "price_before",
    "seoul_today",
    "sharpe_ratio",
    "strategy_day",
]
