"""Pre-trade checks: may this order go to the broker? Pure and fast (no I/O, no clock).

`run(inputs)` runs CHECKS in order and returns the first denial, or APPROVED. Each check is a
small function of one `CheckInput` (the order's terms, its stock's market, the latest quote and
the market's clock, what is held and what open orders already reserve, the cash, the limits)
returning None (fine) or a `Decision` with a reason code, a sentence a person can act on, and
the numbers behind it. The OMS builds the input under the account's row lock (trading/oms.py),
so two orders placed at once cannot both spend the same cash or the same shares.

Codes (Code below):
- LOT_SIZE: the quantity must be a whole number of shares, at least 1 (KRX lot: 1 share).
- OFF_TICK: a limit price must lie on the KRX tick grid (marketdata.krx.tick_size).
- NO_QUOTE: there is no quote for the symbol (a market order has no price to fill at; a limit
  order's price band cannot be known).
- STALE_QUOTE: a market order's quote is older than QUOTE_MAX_AGE_SECONDS on the market's
  clock (trading.brokers.base.market_quote). Limit orders do not need a fresh quote.
- OUTSIDE_PRICE_BAND: a limit price outside today's +-30 % band around the previous close
  (KONEX +-15 %; marketdata.krx.price_limits). The previous close is the quote's prev_close
  (close - change when that is missing). With neither, the band is unknown and not checked.
- MARKET_CLOSED: the market's clock is outside the KRX regular session. OFF by default
  (TRADING_DENY_WHEN_CLOSED): the simulated feed runs its own session clock at any hour, and
  the paper broker fills on its quotes whenever they come.
- INSUFFICIENT_POSITION: a sell of more than is held, less what open sell orders already
  reserve (QB is long only).
- INSUFFICIENT_CASH: a buy's value plus commission above the cash, less what open buy orders
  reserve. A market buy is valued at its estimated fill price (the last price moved by the
  paper broker's slippage), a limit buy at its limit.

Risk rules (issue 5). Their limits are risk.models.RiskLimits (edited in the admin, audited);
the figures are `Book` (trading/oms.py gathers them in one SQL statement under the account
lock). Every pre-trade rule lives in this module (one home), the risk app owns their limits and
the trading state. A sell (QB is long only, so every sell that passes INSUFFICIENT_POSITION
reduces a position) is never stopped by a rule that guards against taking on more risk.
- TRADING_HALTED: the trading state is HALTED: no new orders at all (cancels do not come here).
- REDUCING_ONLY: the trading state is REDUCING: buys are denied, sells pass.
- LOCKED: a live risk lock covers the order's symbol, its strategy, or everything (a lock on a
  strategy does not cover manual orders). Cool-down and stop-loss-guard locks stop buys only (a
  protection never traps a position); a MANUAL lock stops sells too.
- RATE_LIMIT: max_orders_per_second orders already sent in the last second (wall clock, as
  the orders' own timestamps). Every side.
- SAME_SYMBOL_INTERVAL: a buy while an order on this symbol was sent less than
  same_symbol_interval_seconds ago. Buys only: a sell reduces a long position, and an exit
  (a stop-loss just after the buy) must not wait.
- ORDER_VALUE_TOO_LOW / ORDER_VALUE_TOO_HIGH: a buy's value (quantity x the price it is valued
  at) outside min_order_value .. max_order_value (both inclusive). A sell below the minimum is
  denied unless it sells everything still free of the position (a small remainder can always
  be sold); the maximum does not apply to sells (a position is bounded by POSITION_LIMIT, and an
  exit must not be split by force).
- DAILY_LOSS_LIMIT / MONTHLY_LOSS_LIMIT: buys stop once the realized loss of the KST trading
  day / month (sells' profit_loss, busted trades excluded, on the market's clock) reaches the
  limit (a loss of exactly the limit is denied).
- CONSECUTIVE_LOSSES: buys stop after max_consecutive_losses losing sell orders in a row, counted
  since the trading state last changed (resuming trading starts a new count).
- TRADES_PER_DAY: buys stop once max_trades_per_day orders were sent today (KST, wall clock).
- POSITION_LIMIT / SECTOR_LIMIT / EXPOSURE_LIMIT: a buy that would make this symbol's value /
  its sector's / all positions' above max_position_ratio / max_sector_ratio / max_exposure_ratio
  of the portfolio value (cash + positions at their marked price, else their average price).
  Values count what is held plus open buy orders (limit ones at their limit, market ones at
  their estimated fill price, else the marked or average price) plus this order. At the
  limit exactly passes. A symbol with no sector has no sector limit.
- CASH_RESERVE: a buy must leave at least min_cash_reserve_ratio of the portfolio value in
  cash (after open buys' reservations and this buy's value and commission).
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from django.conf import settings

from marketdata import krx


class Code(enum.StrEnum):
    LOT_SIZE = "LOT_SIZE"
    OFF_TICK = "OFF_TICK"
    NO_QUOTE = "NO_QUOTE"
    STALE_QUOTE = "STALE_QUOTE"
    OUTSIDE_PRICE_BAND = "OUTSIDE_PRICE_BAND"
    MARKET_CLOSED = "MARKET_CLOSED"
    INSUFFICIENT_POSITION = "INSUFFICIENT_POSITION"
    INSUFFICIENT_CASH = "INSUFFICIENT_CASH"
    TRADING_HALTED = "TRADING_HALTED"
    REDUCING_ONLY = "REDUCING_ONLY"
    LOCKED = "LOCKED"
    RATE_LIMIT = "RATE_LIMIT"
    SAME_SYMBOL_INTERVAL = "SAME_SYMBOL_INTERVAL"
    ORDER_VALUE_TOO_LOW = "ORDER_VALUE_TOO_LOW"
    ORDER_VALUE_TOO_HIGH = "ORDER_VALUE_TOO_HIGH"
    DAILY_LOSS_LIMIT = "DAILY_LOSS_LIMIT"
    MONTHLY_LOSS_LIMIT = "MONTHLY_LOSS_LIMIT"
    CONSECUTIVE_LOSSES = "CONSECUTIVE_LOSSES"
    TRADES_PER_DAY = "TRADES_PER_DAY"
    POSITION_LIMIT = "POSITION_LIMIT"
    SECTOR_LIMIT = "SECTOR_LIMIT"
    EXPOSURE_LIMIT = "EXPOSURE_LIMIT"
    CASH_RESERVE = "CASH_RESERVE"


@dataclass(frozen=True, slots=True)
class Decision:
    approved: bool
    code: str = ""
    message: str = ""
    figures: Mapping = field(default_factory=dict)


APPROVED = Decision(True)


@dataclass(frozen=True, slots=True)
class Limits:
    quote_max_age: float  # seconds, on the market's clock
    deny_when_closed: bool
    commission_rate: Decimal

    @classmethod
    def from_settings(cls) -> Limits:
        return cls(
            quote_max_age=float(getattr(settings, "QUOTE_MAX_AGE_SECONDS", 300)),
            deny_when_closed=bool(getattr(settings, "TRADING_DENY_WHEN_CLOSED", False)),
            commission_rate=krx.commission_rate(),
        )


@dataclass(frozen=True, slots=True)
class Lock:
    """A live risk lock that may cover the order (risk.models.RiskLock's fields)."""

    id: int
    kind: str  # COOLDOWN / STOPLOSS_GUARD / MANUAL
    symbol: str | None
    strategy_id: int | None
    reason: str
    until: dt.datetime


@dataclass(frozen=True, slots=True)
class Book:
    """The portfolio as the risk rules see it (trading.oms.check_inputs builds it)."""

    portfolio_value: Decimal  # cash + every position at its marked (else average) price
    symbol_value: Decimal  # this symbol: held + open buys
    sector: str  # this symbol's sector ("" = none)
    sector_value: Decimal  # its sector: held + open buys
    exposure_value: Decimal  # all positions + all open buys
    realized_today: Decimal  # realized PnL of the KST day (market clock); a loss is negative
    realized_month: Decimal
    consecutive_losses: int  # losing sell orders in a row since the trading state last changed
    orders_today: int  # orders sent today (KST, wall clock)
    orders_last_second: int  # orders sent in the second before `at`
    last_order_at: dt.datetime | None  # when the latest order on this symbol was sent
    locks: tuple[Lock, ...] = ()


@dataclass(frozen=True, slots=True)
class CheckInput:
    symbol: str
    side: str  # BUY / SELL
    order_type: str  # MARKET / LIMIT
    quantity: object  # checked by check_lot_size: anything may arrive here
    limit_price: Decimal | None
    market: str  # the stock's market: KOSPI, KOSDAQ, KONEX, ETF
    quote: Mapping | None  # marketdata.buffer.parse_quote()
    now: dt.datetime  # the market's clock
    price: Decimal | None  # what a buy is valued at (limit, or the market estimate)
    held: int  # shares held (the position)
    held_reserved: int  # shares open sell orders may still sell
    cash: Decimal
    cash_reserved: Decimal  # what open buy orders may still spend
    limits: Limits
    # Risk (issue 5). The defaults leave the risk rules out (the paper broker's exchange checks).
    state: str = "ACTIVE"  # the trading state
    risk: object | None = None  # risk.models.RiskLimits (read only: any object with its fields)
    book: Book | None = None
    strategy_id: int | None = None
    at: dt.datetime | None = None  # the wall clock (orders' own timestamps)

    @property
    def instrument(self) -> str:
        return instrument_for(self.market)


def instrument_for(market: str) -> str:
    """The krx instrument of a stocks_metadata market ("etf" for ETFs, else "stock")."""
    return "etf" if market == "ETF" else "stock"


def previous_close(quote: Mapping) -> Decimal | None:
    """The band's base price: the quote's prev_close, else close - change, else None."""
    prev = quote.get("prev_close")
    if prev is None and quote.get("close") is not None and quote.get("change") is not None:
        prev = quote["close"] - quote["change"]
    return prev if prev is not None and prev > 0 else None


def price_band(quote: Mapping | None, *, market: str) -> krx.PriceLimits | None:
    """Today's price limits from a quote (its previous close; else its upper/lower_limit
    fields), or None when the quote cannot tell."""
    if not quote:
        return None
    prev = previous_close(quote)
    if prev is not None:
        return krx.price_limits(prev, instrument=instrument_for(market), market=market)
    lower, upper = quote.get("lower_limit"), quote.get("upper_limit")
    if lower and upper:
        return krx.PriceLimits(lower=lower, upper=upper)
    return None


def quote_age(quote: Mapping, now: dt.datetime) -> float | None:
    """Seconds from the quote's timestamp to `now` (None: the quote has no timestamp)."""
    stamp = quote.get("timestamp")
    if stamp is None:
        return None
    return (now - stamp).total_seconds()


def _won(value) -> str:
    if isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
        value = int(value)  # 1,000,000 rather than 1,000,000.0000 (a MoneyField's places)
    return f"{value:,}"


# --- the checks ------------------------------------------------------------------------------


def check_lot_size(c: CheckInput) -> Decision | None:
    quantity = c.quantity
    if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 1:
        return Decision(
            False,
            Code.LOT_SIZE,
            f"Quantity {quantity!r} is not a whole number of shares of at least 1 "
            "(the KRX lot is 1 share).",
            {"quantity": quantity, "lot": 1},
        )
    return None


def check_off_tick(c: CheckInput) -> Decision | None:
    if c.limit_price is None:
        return None
    price = c.limit_price
    if krx.is_on_tick(price, instrument=c.instrument):
        return None
    figures = {"limit_price": price}
    if price > 0:
        tick = krx.tick_size(price, instrument=c.instrument)
        below = krx.round_to_tick(price, "down", instrument=c.instrument) if price > tick else None
        above = krx.round_to_tick(price, "up", instrument=c.instrument)
        figures.update(tick=tick, below=below, above=above)
        nearest = f"{_won(below)} or {_won(above)}" if below else _won(above)
        message = (
            f"Limit price {_won(price)} is off the KRX tick grid for {c.symbol} (tick "
            f"{_won(tick)} at that price); the nearest valid prices are {nearest}."
        )
    else:
        message = f"Limit price {price} must be positive."
    return Decision(False, Code.OFF_TICK, message, figures)


def check_quote(c: CheckInput) -> Decision | None:
    if c.quote is None or c.quote.get("close") is None:
        return Decision(
            False,
            Code.NO_QUOTE,
            f"No quote for {c.symbol}: the collector has not seen a trade of it, so "
            + (
                "a market order has no price to fill at."
                if c.order_type == "MARKET"
                else "its price band is unknown."
            ),
            {"symbol": c.symbol},
        )
    if c.order_type != "MARKET":
        return None
    age = quote_age(c.quote, c.now)
    limit = c.limits.quote_max_age
    if age is None or age > limit:
        stamp = c.quote.get("timestamp")
        return Decision(
            False,
            Code.STALE_QUOTE,
            f"The latest quote of {c.symbol} is "
            + (f"{age:,.0f} s old" if age is not None else "undated")
            + f" (at most {limit:,.0f} s for a market order): the market has moved on or the "
            "feed has stopped.",
            {
                "quote_time": stamp.isoformat() if stamp else None,
                "market_time": c.now.isoformat(),
                "age_seconds": age,
                "max_age_seconds": limit,
            },
        )
    return None


def check_price_band(c: CheckInput) -> Decision | None:
    if c.limit_price is None:
        return None
    band = price_band(c.quote, market=c.market)
    if band is None or band.lower <= c.limit_price <= band.upper:
        return None
    prev = previous_close(c.quote) if c.quote else None
    return Decision(
        False,
        Code.OUTSIDE_PRICE_BAND,
        f"Limit price {_won(c.limit_price)} is outside today's price limits for {c.symbol}: "
        f"{_won(band.lower)} to {_won(band.upper)}"
        + (f" (+-30 % of the previous close {_won(prev)})." if prev else "."),
        {"limit_price": c.limit_price, "lower": band.lower, "upper": band.upper, "base": prev},
    )


def check_market_hours(c: CheckInput) -> Decision | None:
    if not c.limits.deny_when_closed or krx.is_open(c.now):
        return None
    local = c.now.astimezone(krx.SEOUL)
    return Decision(
        False,
        Code.MARKET_CLOSED,
        f"KRX is closed at {local:%Y-%m-%d %H:%M} KST (market clock); the regular session "
        "is 09:00-15:30 on trading days.",
        {"market_time": c.now.isoformat()},
    )


def check_position(c: CheckInput) -> Decision | None:
    if c.side != "SELL":
        return None
    available = c.held - c.held_reserved
    if c.quantity <= available:
        return None
    return Decision(
        False,
        Code.INSUFFICIENT_POSITION,
        f"Sell of {_won(c.quantity)} {c.symbol} exceeds the {_won(max(available, 0))} "
        f"available ({_won(c.held)} held, {_won(c.held_reserved)} already in open sell orders; "
        "QB is long only).",
        {
            "quantity": c.quantity,
            "held": c.held,
            "reserved": c.held_reserved,
            "available": available,
        },
    )


def check_cash(c: CheckInput) -> Decision | None:
    if c.side != "BUY" or c.price is None:
        return None
    value = c.price * c.quantity
    commission = krx.commission(value, rate=c.limits.commission_rate)
    needed = value + commission
    available = c.cash - c.cash_reserved
    if needed <= available:
        return None
    return Decision(
        False,
        Code.INSUFFICIENT_CASH,
        f"Buy of {_won(c.quantity)} {c.symbol} at {_won(c.price)} needs {_won(needed)} KRW "
        f"({_won(value)} + {_won(commission)} commission); {_won(available)} is available "
        f"({_won(c.cash)} cash, {_won(c.cash_reserved)} reserved by open buy orders).",
        {
            "price": c.price,
            "value": value,
            "commission": commission,
            "needed": needed,
            "cash": c.cash,
            "reserved": c.cash_reserved,
            "available": available,
        },
    )


# --- risk rules (issue 5) --------------------------------------------------------------------


def _pct(ratio) -> str:
    return f"{ratio * 100:.2f} %"


def _order_value(c: CheckInput) -> Decimal | None:
    return None if c.price is None else c.price * c.quantity


def check_trading_state(c: CheckInput) -> Decision | None:
    if c.state == "HALTED":
        return Decision(
            False,
            Code.TRADING_HALTED,
            "Trading is HALTED: no new orders until an operator resumes trading "
            "(open orders may still be canceled).",
            {"state": c.state},
        )
    if c.state == "REDUCING" and c.side != "SELL":
        return Decision(
            False,
            Code.REDUCING_ONLY,
            f"Trading is REDUCING: only orders that reduce a position pass; this {c.side} of "
            f"{c.symbol} would add to one.",
            {"state": c.state, "side": c.side},
        )
    return None


def check_locks(c: CheckInput) -> Decision | None:
    if c.book is None:
        return None
    for lock in c.book.locks:
        if lock.symbol is not None and lock.symbol != c.symbol:
            continue
        if lock.strategy_id is not None and lock.strategy_id != c.strategy_id:
            continue
        if c.side == "SELL" and lock.kind != "MANUAL":
            continue  # protections lock entries, never an exit
        if c.at is not None and lock.until <= c.at:
            continue
        scope = " and ".join(
            filter(
                None,
                [
                    f"symbol {lock.symbol}" if lock.symbol else "",
                    f"strategy {lock.strategy_id}" if lock.strategy_id else "",
                ],
            )
        )
        return Decision(
            False,
            Code.LOCKED,
            f"{c.symbol} cannot be traded: a {lock.kind} lock on {scope or 'all trading'} "
            f"holds until {lock.until.astimezone(krx.SEOUL):%Y-%m-%d %H:%M:%S} KST"
            + (f" ({lock.reason})." if lock.reason else "."),
            {
                "lock": lock.id,
                "kind": lock.kind,
                "symbol": lock.symbol,
                "strategy": lock.strategy_id,
                "reason": lock.reason,
                "until": lock.until.isoformat(),
            },
        )
    return None


def check_rate_limit(c: CheckInput) -> Decision | None:
    if c.book is None or c.risk is None:
        return None
    limit = c.risk.max_orders_per_second
    if c.book.orders_last_second < limit:
        return None
    return Decision(
        False,
        Code.RATE_LIMIT,
        f"{c.book.orders_last_second} orders were sent in the last second; at most {limit} "
        "a second. Try again in a moment.",
        {"orders_last_second": c.book.orders_last_second, "limit": limit},
    )


def check_same_symbol_interval(c: CheckInput) -> Decision | None:
    # Buys only: a sell reduces a long position, and an exit (a stop-loss moments after the
    # buy, or one exit split per strategy book) must not wait out the interval.
    if c.side != "BUY":
        return None
    if c.book is None or c.risk is None or c.book.last_order_at is None or c.at is None:
        return None
    interval = c.risk.same_symbol_interval_seconds
    if not interval:
        return None
    elapsed = (c.at - c.book.last_order_at).total_seconds()
    if elapsed >= interval:
        return None
    return Decision(
        False,
        Code.SAME_SYMBOL_INTERVAL,
        f"An order on {c.symbol} was sent {elapsed:.1f} s ago; orders on the same symbol "
        f"must be at least {interval} s apart (next one from "
        f"{(c.book.last_order_at + dt.timedelta(seconds=interval)).astimezone(krx.SEOUL):%H:%M:%S}"
        " KST).",
        {
            "last_order_at": c.book.last_order_at.isoformat(),
            "elapsed_seconds": elapsed,
            "interval_seconds": interval,
        },
    )


def check_order_value(c: CheckInput) -> Decision | None:
    value = _order_value(c)
    if c.risk is None or value is None:
        return None
    low, high = c.risk.min_order_value, c.risk.max_order_value
    figures = {"value": value, "price": c.price, "min": low, "max": high}
    if value < low:
        if c.side == "SELL" and c.quantity >= c.held - c.held_reserved:
            return None  # the whole remainder: always sellable
        return Decision(
            False,
            Code.ORDER_VALUE_TOO_LOW,
            f"{c.side} of {_won(c.quantity)} {c.symbol} at {_won(c.price)} is worth "
            f"{_won(value)} KRW, below the minimum order value of {_won(low)} KRW.",
            figures,
        )
    if value > high and c.side == "BUY":
        return Decision(
            False,
            Code.ORDER_VALUE_TOO_HIGH,
            f"Buy of {_won(c.quantity)} {c.symbol} at {_won(c.price)} is worth {_won(value)} "
            f"KRW, above the maximum order value of {_won(high)} KRW.",
            figures,
        )
    return None


def _loss_check(code: str, what: str, realized: Decimal, limit: Decimal) -> Decision | None:
    if -realized < limit:
        return None
    return Decision(
        False,
        code,
        f"The realized loss of the {what} is {_won(-realized)} KRW, at or past its limit of "
        f"{_won(limit)} KRW: no new buys until it resets (sells still pass).",
        {"realized_pnl": realized, "loss": -realized, "limit": limit},
    )


def check_daily_loss(c: CheckInput) -> Decision | None:
    if c.side != "BUY" or c.book is None or c.risk is None:
        return None
    return _loss_check(
        Code.DAILY_LOSS_LIMIT, "trading day", c.book.realized_today, c.risk.daily_loss_limit
    )


def check_monthly_loss(c: CheckInput) -> Decision | None:
    if c.side != "BUY" or c.book is None or c.risk is None:
        return None
    return _loss_check(
        Code.MONTHLY_LOSS_LIMIT, "month", c.book.realized_month, c.risk.monthly_loss_limit
    )


def check_consecutive_losses(c: CheckInput) -> Decision | None:
    if c.side != "BUY" or c.book is None or c.risk is None:
        return None
    limit = c.risk.max_consecutive_losses
    if c.book.consecutive_losses < limit:
        return None
    return Decision(
        False,
        Code.CONSECUTIVE_LOSSES,
        f"The last {c.book.consecutive_losses} sells lost money (limit {limit} in a row): no "
        "new buys until an operator changes the trading state (sells still pass).",
        {"consecutive_losses": c.book.consecutive_losses, "limit": limit},
    )


def check_trades_per_day(c: CheckInput) -> Decision | None:
    if c.side != "BUY" or c.book is None or c.risk is None:
        return None
    limit = c.risk.max_trades_per_day
    if c.book.orders_today < limit:
        return None
    return Decision(
        False,
        Code.TRADES_PER_DAY,
        f"{c.book.orders_today} orders were sent today (KST), the daily limit is {limit}: no "
        "new buys until tomorrow (sells still pass).",
        {"orders_today": c.book.orders_today, "limit": limit},
    )


def _share_check(
    c: CheckInput, code: str, what: str, current: Decimal, ratio: Decimal
) -> Decision | None:
    value = _order_value(c)
    if c.side != "BUY" or value is None:
        return None
    total = c.book.portfolio_value
    after = current + value
    if total > 0 and after <= total * ratio:
        return None
    share = after / total if total > 0 else None
    return Decision(
        False,
        code,
        f"Buy of {_won(value)} KRW of {c.symbol} would bring {what} to {_won(after)} KRW"
        + (f" = {_pct(share)}" if share is not None else "")
        + f" of the portfolio value {_won(total)} KRW; the limit is {_pct(ratio)} "
        f"({_won(total * ratio)} KRW).",
        {
            "order_value": value,
            "current_value": current,
            "value_after": after,
            "portfolio_value": total,
            "ratio_after": share,
            "limit_ratio": ratio,
            "limit_value": total * ratio,
        },
    )


def check_position_limit(c: CheckInput) -> Decision | None:
    if c.book is None or c.risk is None:
        return None
    return _share_check(
        c,
        Code.POSITION_LIMIT,
        f"the position in {c.symbol}",
        c.book.symbol_value,
        c.risk.max_position_ratio,
    )


def check_sector_limit(c: CheckInput) -> Decision | None:
    if c.book is None or c.risk is None or not c.book.sector:
        return None
    return _share_check(
        c,
        Code.SECTOR_LIMIT,
        f"the sector {c.book.sector!r}",
        c.book.sector_value,
        c.risk.max_sector_ratio,
    )


def check_exposure_limit(c: CheckInput) -> Decision | None:
    if c.book is None or c.risk is None:
        return None
    return _share_check(
        c,
        Code.EXPOSURE_LIMIT,
        "all positions",
        c.book.exposure_value,
        c.risk.max_exposure_ratio,
    )


def check_cash_reserve(c: CheckInput) -> Decision | None:
    value = _order_value(c)
    if c.side != "BUY" or value is None or c.book is None or c.risk is None:
        return None
    needed = value + krx.commission(value, rate=c.limits.commission_rate)
    left = c.cash - c.cash_reserved - needed
    reserve = c.book.portfolio_value * c.risk.min_cash_reserve_ratio
    if left >= reserve:
        return None
    return Decision(
        False,
        Code.CASH_RESERVE,
        f"Buy of {_won(needed)} KRW of {c.symbol} (with commission) would leave {_won(left)} KRW "
        f"of cash; at least {_pct(c.risk.min_cash_reserve_ratio)} of the portfolio value "
        f"({_won(reserve)} KRW) must stay in cash.",
        {
            "needed": needed,
            "cash": c.cash,
            "reserved": c.cash_reserved,
            "cash_after": left,
            "portfolio_value": c.book.portfolio_value,
            "reserve_ratio": c.risk.min_cash_reserve_ratio,
            "reserve": reserve,
        },
    )


Check = Callable[[CheckInput], Decision | None]

# Order matters only for which denial is reported first: the trading state and locks (they
# stop whatever the order is), the order's own terms, the market, the pace of orders, the
# account, then the risk limits on what the account would hold.
CHECKS: tuple[Check, ...] = (
    check_trading_state,
    check_locks,
    check_lot_size,
    check_off_tick,
    check_quote,
    check_price_band,
    check_market_hours,
    check_rate_limit,
    check_same_symbol_interval,
    check_position,
    check_order_value,
    check_cash,
    check_daily_loss,
    check_monthly_loss,
    check_consecutive_losses,
    check_trades_per_day,
    check_position_limit,
    check_sector_limit,
    check_exposure_limit,
    check_cash_reserve,
)

# What an exchange itself refuses (the paper broker runs these on submit).
EXCHANGE_CHECKS: tuple[Check, ...] = (check_lot_size, check_off_tick, check_quote, check_price_band)


def run(c: CheckInput, checks: Sequence[Check] = CHECKS) -> Decision:
    """The first denial of `checks`, or APPROVED."""
    for check in checks:
        decision = check(c)
        if decision is not None:
            return decision
    return APPROVED


__all__ = [
    "APPROVED",
    "CHECKS",
    "EXCHANGE_CHECKS",
    "Book",
    "CheckInput",
    "Code",
    "Decision",
    "Limits",
    "Lock",
    "instrument_for",
    "previous_close",
    "price_band",
    "quote_age",
    "run",
]
