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

The risk issue extends this list (exposure, order value, daily loss, trading state): add a
function and put it in CHECKS.
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


Check = Callable[[CheckInput], Decision | None]

# Order matters only for which denial is reported first: the order's own terms, then the
# market, then the account.
CHECKS: tuple[Check, ...] = (
    check_lot_size,
    check_off_tick,
    check_quote,
    check_price_band,
    check_market_hours,
    check_position,
    check_cash,
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
    "CheckInput",
    "Code",
    "Decision",
    "Limits",
    "instrument_for",
    "previous_close",
    "price_band",
    "quote_age",
    "run",
]
