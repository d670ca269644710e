"""The paper broker: orders fill against the latest quotes in Redis, under KRX rules and costs.

Its book is QB's own tables. The orders it holds are the `orders` rows with broker="paper" in
an open status (trading.states.OPEN); its cash is the `accounts` row "paper"
(services.account_ensure, PAPER_INITIAL_CASH KRW at first); its positions are `positions`; its
executions are the `trades` of paper orders. It keeps no state of its own, so a crash loses
nothing of it and every answer can be given again:
- broker_order_id = paper_order_id(client_order_id): the same order always has the same id, so
  a resubmit after a crash is the same order, not a second one;
- execution_id = f"{broker_order_id}-{shares filled before this fill}": a fill computed twice
  (a resubmit, two processes matching the same quote) has one id, and
  services.order_apply_fill applies an (order, execution_id) once.

submit(order): the exchange's own checks (trading.checks.EXCHANGE_CHECKS: whole shares, the
tick grid, a quote to trade on, fresh for a market order, the +-30 % band) or REJECTED with
their reason code; then ACCEPTED with the fills due at the current quote (fills_due below).
Whether the account can pay or holds the shares is the pre-trade checks' job (trading.oms runs
them under the account lock before anything reaches a broker); it is not repeated here.

Fill model (fills_due), on a quote no older than QUOTE_MAX_AGE_SECONDS on the market's clock
(trading.brokers.base.market_quote):
- market orders fill at the last price moved PAPER_SLIPPAGE_TICKS ticks against the order (a
  buy up, a sell down) on the KRX tick grid, kept inside the day's price limits;
- limit orders fill when the market reaches them: a buy when last <= limit, a sell when
  last >= limit, at the last price (never worse than the limit);
- each fill is ceil(quantity x PAPER_FILL_RATIO) shares, at most what remains: ratio 1 fills
  at once; 0.3 fills an order of 10 as 3, 3, 3, 1 on four quotes. What remains waits for the
  next quote (the orders engine matches open paper orders on each market_data_received);
- a fill is stamped with the time of the quote it filled against (the market's time, not the
  wall clock: a replay or a backtest gets its own times), and an order fills at most once per
  quote: again only on a quote newer than its last fill.
cancel(order): accepted for an order that is not final (nothing is resting anywhere else).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from decimal import ROUND_CEILING, Decimal

from django.conf import settings

from marketdata import krx
from trading import checks
from trading.states import FINAL, OPEN

from .base import (
    Broker,
    BrokerAck,
    BrokerBalance,
    BrokerFill,
    BrokerOrder,
    BrokerPosition,
    market_quote,
)

NAME = "paper"
_EPSILON = Decimal("0.001")  # below every tick: p + e rounds up to the next tick above p


def paper_order_id(client_order_id: str) -> str:
    """The paper broker's id of an order: a digest of its client_order_id (deterministic)."""
    return "P-" + hashlib.sha256(client_order_id.encode()).hexdigest()[:20]


def execution_id(broker_order_id: str, filled_before: int) -> str:
    return f"{broker_order_id}-{filled_before}"


def ticks_away(price: Decimal, ticks: int, direction: str, *, instrument: str = "stock") -> Decimal:
    """`price` moved `ticks` steps of the KRX grid "up" or "down" (a step from 5,000 down is to
    4,995: the grid below 5,000 is 5 won). Stops at the lowest valid price."""
    up = direction == "up"
    if direction not in ("up", "down"):
        raise ValueError(f"direction must be 'up' or 'down', got {direction!r}.")
    current = krx.round_to_tick(price, "up" if up else "down", instrument=instrument)
    for _ in range(ticks):
        if up:
            current = krx.round_to_tick(current + _EPSILON, "up", instrument=instrument)
        else:
            if current - _EPSILON < krx.tick_size(current - _EPSILON, instrument=instrument):
                break
            current = krx.round_to_tick(current - _EPSILON, "down", instrument=instrument)
    return current


def market_fill_price(
    last: Decimal, side: str, *, ticks: int, market: str, band: krx.PriceLimits | None
) -> Decimal:
    """Where a market order fills: `ticks` ticks against it from `last`, inside `band`."""
    instrument = checks.instrument_for(market)
    price = ticks_away(last, ticks, "up" if side == "BUY" else "down", instrument=instrument)
    if band is not None:
        price = min(max(price, band.lower), band.upper)
    return price


def _setting_decimal(name: str, default: str) -> Decimal:
    value = getattr(settings, name, default)
    return value if isinstance(value, Decimal) else Decimal(str(value))


class PaperBroker(Broker):
    """See the module docstring. `market(symbol) -> (quote, market clock now)` can be given
    (a backtest drives it); by default trading.brokers.base.market_quote (Redis)."""

    name = NAME

    def __init__(
        self,
        *,
        slippage_ticks: int | None = None,
        fill_ratio: Decimal | None = None,
        quote_max_age: float | None = None,
        market: Callable[[str], tuple[dict | None, dt.datetime]] | None = None,
    ) -> None:
        self.slippage_ticks = int(
            getattr(settings, "PAPER_SLIPPAGE_TICKS", 1)
            if slippage_ticks is None
            else slippage_ticks
        )
        self.fill_ratio = (
            _setting_decimal("PAPER_FILL_RATIO", "1") if fill_ratio is None else fill_ratio
        )
        if not Decimal(0) < self.fill_ratio <= 1:
            raise ValueError(f"fill_ratio must be in (0, 1], got {self.fill_ratio}.")
        self.quote_max_age = float(
            getattr(settings, "QUOTE_MAX_AGE_SECONDS", 300)
            if quote_max_age is None
            else quote_max_age
        )
        self.market = market or market_quote

    # --- the fill model ------------------------------------------------------------------------

    def fill_quantity(self, quantity: int, remaining: int) -> int:
        step = int((Decimal(quantity) * self.fill_ratio).to_integral_value(rounding=ROUND_CEILING))
        return max(1, min(step, remaining))

    def fills_due(self, order, quote, now: dt.datetime) -> list[BrokerFill]:
        """The fill `order` gets from `quote` now ([] when none): see the module docstring."""
        remaining = order.quantity - order.filled_quantity
        if remaining <= 0 or not quote or quote.get("close") is None:
            return []
        age = checks.quote_age(quote, now)
        if age is None or age > self.quote_max_age:
            return []
        stamp = quote["timestamp"]
        if order.last_fill_at is not None and stamp <= order.last_fill_at:
            return []  # this quote (or an older one) filled it already
        last = quote["close"]
        market = order.symbol.market
        if order.order_type == "MARKET":
            price = market_fill_price(
                last,
                order.side,
                ticks=self.slippage_ticks,
                market=market,
                band=checks.price_band(quote, market=market),
            )
        elif order.side == "BUY":
            if last > order.limit_price:
                return []
            price = last
        else:
            if last < order.limit_price:
                return []
            price = last
        broker_order_id = order.broker_order_id or paper_order_id(order.client_order_id)
        return [
            BrokerFill(
                execution_id=execution_id(broker_order_id, order.filled_quantity),
                quantity=self.fill_quantity(order.quantity, remaining),
                price=price,
                time=stamp,
                broker_order_id=broker_order_id,
            )
        ]

    def match(self, orders, *, symbol: str) -> dict[int, list[BrokerFill]]:
        """{order pk: fills due} for open orders of one symbol at its current quote."""
        quote, now = self.market(symbol)
        found = {}
        for order in orders:
            fills = self.fills_due(order, quote, now)
            if fills:
                found[order.pk] = fills
        return found

    # --- the interface -------------------------------------------------------------------------

    def submit(self, order) -> BrokerAck:
        broker_order_id = paper_order_id(order.client_order_id)
        quote, now = self.market(order.symbol_id)
        inputs = checks.CheckInput(
            symbol=order.symbol_id,
            side=order.side,
            order_type=order.order_type,
            quantity=order.quantity,
            limit_price=order.limit_price,
            market=order.symbol.market,
            quote=quote,
            now=now,
            price=None,
            held=0,
            held_reserved=0,
            cash=Decimal(0),
            cash_reserved=Decimal(0),
            limits=checks.Limits(
                quote_max_age=self.quote_max_age,
                deny_when_closed=False,
                commission_rate=krx.commission_rate(),
            ),
        )
        decision = checks.run(inputs, checks.EXCHANGE_CHECKS)
        if not decision.approved:
            return BrokerAck.rejected(
                decision.code, decision.message, broker_order_id=broker_order_id
            )
        return BrokerAck(
            True, broker_order_id=broker_order_id, fills=tuple(self.fills_due(order, quote, now))
        )

    def cancel(self, order) -> BrokerAck:
        broker_order_id = order.broker_order_id or paper_order_id(order.client_order_id)
        if order.status in FINAL:
            return BrokerAck.rejected(
                "ORDER_FINAL",
                f"Order {order.client_order_id} is already {order.status}; nothing to cancel.",
                broker_order_id=broker_order_id,
            )
        return BrokerAck(True, broker_order_id=broker_order_id)

    def open_orders(self) -> list[BrokerOrder]:
        from trading.models import Order

        rows = Order.objects.filter(broker=NAME, status__in=OPEN).order_by("created_at", "id")
        return [
            BrokerOrder(
                broker_order_id=o.broker_order_id or paper_order_id(o.client_order_id),
                client_order_id=o.client_order_id,
                symbol=o.symbol_id,
                side=o.side,
                order_type=o.order_type,
                quantity=o.quantity,
                limit_price=o.limit_price,
                filled_quantity=o.filled_quantity,
                status=o.status,
            )
            for o in rows
        ]

    def fills(self, since: dt.datetime | None = None) -> list[BrokerFill]:
        from trading.models import Trade

        rows = Trade.objects.filter(order__broker=NAME).select_related("order")
        if since is not None:
            rows = rows.filter(timestamp__gte=since)
        return [
            BrokerFill(
                execution_id=t.execution_id,
                quantity=t.quantity,
                price=t.price,
                time=t.timestamp,
                broker_order_id=t.order.broker_order_id or paper_order_id(t.order.client_order_id),
            )
            for t in rows.order_by("timestamp", "id")
        ]

    def positions(self) -> list[BrokerPosition]:
        from trading.models import Position

        return [
            BrokerPosition(symbol=p.symbol_id, quantity=p.quantity, average_price=p.average_price)
            for p in Position.objects.filter(quantity__gt=0).order_by("symbol")
        ]

    def balance(self) -> BrokerBalance:
        from trading.services import account_ensure

        account = account_ensure(broker=NAME)
        return BrokerBalance(cash=account.cash, details={"initial_cash": account.initial_cash})


__all__ = [
    "PaperBroker",
    "execution_id",
    "market_fill_price",
    "paper_order_id",
    "ticks_away",
]
