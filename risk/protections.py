"""Protections on open positions: stop-loss, take-profit and trailing stop, and what follows
a stop-loss (a cool-down lock on the symbol; the stop-loss guard).

`evaluate(average_price=, high_water=, price=, limits=)` is pure. With the limits' ratios
(fractions of the entry price, risk.models.RiskLimits):
- STOP_LOSS when price <= average x (1 - stop_loss_ratio);
- TAKE_PROFIT when price >= average x (1 + take_profit_ratio);
- TRAILING_STOP when price <= high x (1 - trailing_stop_ratio), `high` being the highest price
  since the position opened, and only once that trail lies above the average price: the
  trailing stop protects a gain; below the entry the stop-loss governs.
"At" the threshold fires. When several fire at once (a gap down through both stops) the stop-
loss wins: it is the loss that must be counted. A ratio of 0 (or None) turns its rule off.
The average price is the position's (fees excluded), the one the operator sees.

A position's episode: the id of the buy that opened it from flat (`position_episode`, one
query over the symbol's trades in fill order). The high-water mark is kept per episode in the
Redis hash `risk:hwm:{symbol}` (episode, high), raised by an atomic compare-and-set, so it
survives an engine restart; a restart also rebuilds it from the episode's candles in
`market_data` (`high_water_rebuild`), so a lost Redis key costs at most the unarchived minutes.

Exits (`exit_place`) go through the normal order path, trading.oms.order_place: MARKET SELL of
what the position has free (its shares less what open sell orders already hold), actor
"engine:risk". Positions are shared by the strategies (and by API orders), so the exit is one
order per strategy holding shares in the symbol by its own trades (the order carries that
strategy, so its book and performance see the sale), and one without a strategy for the rest.
client_order_id = risk-<sl|tp|ts>-<symbol>-<episode>-<strategy id or 0>-<attempt>, attempt =
the exits of that base placed before + 1. An exit is placed only for the shares free of open
sell orders (none free: nothing is placed), so a trigger repeated while an exit is open makes
no order; one after an exit ended without selling everything (denied, rejected, canceled, or
shares bought since) makes the next attempt. Two engine processes racing on one trigger can
each place an attempt: the second is DENIED (INSUFFICIENT_POSITION, checked under the account
lock), never an oversell.

After a stop-loss exit that was not denied: a COOLDOWN lock on the symbol for
stoploss_cooldown_seconds (when none is in force), then the guard: a strategy with
stoploss_guard_count stop-loss exits (distinct episodes) within stoploss_guard_window_seconds
gets a STOPLOSS_GUARD lock for stoploss_guard_lock_seconds, and so does a symbol with that many.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from django.db import connection
from django.db.models import Q

from marketdata.models import MarketData
from risk import services
from risk.models import LockKind, RiskLock
from trading import oms
from trading.models import Order, OrderStatus, OrderType, Position, Side, Strategy, Trade
from trading.states import OPEN

logger = logging.getLogger("qb.risk.protections")

ACTOR = "engine:risk"
CLIENT_ORDER_PREFIX = "risk-"
_ZERO = Decimal(0)
_NOT_SENT = (OrderStatus.DENIED, OrderStatus.REJECTED)


class ExitKind(enum.StrEnum):
    STOP_LOSS = "STOP_LOSS"
    TAKE_PROFIT = "TAKE_PROFIT"
    TRAILING_STOP = "TRAILING_STOP"


_CODES = {ExitKind.STOP_LOSS: "sl", ExitKind.TAKE_PROFIT: "tp", ExitKind.TRAILING_STOP: "ts"}


@dataclass(frozen=True)
class Exit:
    kind: ExitKind
    price: Decimal  # the price that fired it
    trigger: Decimal  # the threshold price
    ratio: Decimal  # the limit's ratio
    average_price: Decimal
    high_water: Decimal

    @property
    def change(self) -> Decimal:
        """The price against the entry (-0.031 = 3.1 % below)."""
        return self.price / self.average_price - 1

    def describe(self, symbol: str) -> str:
        names = {
            ExitKind.STOP_LOSS: f"stop-loss at -{self.ratio * 100:.2f} %",
            ExitKind.TAKE_PROFIT: f"take-profit at +{self.ratio * 100:.2f} %",
            ExitKind.TRAILING_STOP: (
                f"trailing stop {self.ratio * 100:.2f} % below the high {self.high_water:,}"
            ),
        }
        return (
            f"{symbol} at {self.price:,} ({self.change * 100:+.2f} % against the average "
            f"{self.average_price:,}) reached its {names[self.kind]} (trigger {self.trigger:,})."
        )


def _on(ratio) -> bool:
    return ratio is not None and Decimal(ratio) > 0


def evaluate(*, average_price, high_water, price, limits) -> Exit | None:
    """The exit `price` calls for, or None (module doc)."""
    average = Decimal(average_price)
    price = Decimal(price)
    if average <= 0 or price <= 0:
        return None
    high = max(Decimal(high_water or 0), average, price)

    def make(kind, trigger, ratio):
        return Exit(kind, price, trigger, Decimal(ratio), average, high)

    if _on(limits.stop_loss_ratio):
        trigger = average * (1 - Decimal(limits.stop_loss_ratio))
        if price <= trigger:
            return make(ExitKind.STOP_LOSS, trigger, limits.stop_loss_ratio)
    if _on(limits.trailing_stop_ratio):
        trigger = high * (1 - Decimal(limits.trailing_stop_ratio))
        if trigger > average and price <= trigger:
            return make(ExitKind.TRAILING_STOP, trigger, limits.trailing_stop_ratio)
    if _on(limits.take_profit_ratio):
        trigger = average * (1 + Decimal(limits.take_profit_ratio))
        if price >= trigger:
            return make(ExitKind.TAKE_PROFIT, trigger, limits.take_profit_ratio)
    return None


# --- episodes and the high-water mark ----------------------------------------------------------

_TRADES = Trade._meta.db_table
_EPISODE_SQL = f"""
SELECT id, timestamp FROM (
  SELECT id, timestamp, side,
         SUM(CASE WHEN side = 'BUY' THEN quantity ELSE -quantity END) OVER (ORDER BY id)
           - CASE WHEN side = 'BUY' THEN quantity ELSE -quantity END AS held_before
  FROM {_TRADES} WHERE symbol = %s AND status <> 'CANCELED'
) AS t
WHERE side = 'BUY' AND held_before <= 0
ORDER BY id DESC LIMIT 1
"""


@dataclass(frozen=True)
class Holding:
    """An open position as the protections see it."""

    symbol: str
    quantity: int
    average_price: Decimal
    episode: int  # id of the buy that opened it (0 when the ledger cannot tell)
    opened_at: dt.datetime | None


def position_episode(symbol: str) -> tuple[int, dt.datetime | None]:
    """(id, time) of the buy that opened the current position from flat; (0, None) when none
    (trades in fill order: ids are taken under the position lock)."""
    with connection.cursor() as cursor:
        cursor.execute(_EPISODE_SQL, [symbol])
        row = cursor.fetchone()
    return (row[0], row[1]) if row else (0, None)


def holdings_open(symbols: Iterable[str] | None = None) -> dict[str, Holding]:
    """symbol -> Holding for every open position (or those of `symbols`)."""
    rows = Position.objects.filter(quantity__gt=0)
    if symbols is not None:
        rows = rows.filter(symbol_id__in=list(symbols))
    result = {}
    for symbol, quantity, average in rows.values_list("symbol_id", "quantity", "average_price"):
        episode, opened_at = position_episode(symbol)
        result[symbol] = Holding(symbol, quantity, average, episode, opened_at)
    return result


def hwm_key(symbol: str) -> str:
    """Hash: the trailing stop's high-water mark of the symbol's position (episode, high)."""
    return f"risk:hwm:{symbol}"


# KEYS[1] the hash; ARGV episode, price. A new episode starts over; otherwise the high only
# rises. Returns the high in force. Prices are whole won (or 2 places): exact as Lua numbers.
HWM_SCRIPT = """
local episode = redis.call('HGET', KEYS[1], 'episode')
local high = redis.call('HGET', KEYS[1], 'high')
if episode ~= ARGV[1] or not high or tonumber(ARGV[2]) > tonumber(high) then
  redis.call('HSET', KEYS[1], 'episode', ARGV[1], 'high', ARGV[2])
  return ARGV[2]
end
return high
"""


def episode_high_close(symbol: str, since: dt.datetime | None) -> Decimal | None:
    """The highest close of the symbol's candles opened since `since` (any interval)."""
    if since is None:
        return None
    return (
        MarketData.objects.filter(symbol=symbol, time__gte=since)
        .order_by("-close")
        .values_list("close", flat=True)
        .first()
    )


# --- exits ------------------------------------------------------------------------------------


def _books(symbol: str) -> list[tuple[str, int]]:
    """(strategy name, shares it holds in `symbol` by its own trades), largest first."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT strategy, SUM(CASE WHEN side = 'BUY' THEN quantity ELSE -quantity END)"
            f" FROM {_TRADES} WHERE symbol = %s AND status <> 'CANCELED' AND strategy <> ''"
            " GROUP BY strategy ORDER BY 2 DESC, 1",
            [symbol],
        )
        return [(name, int(held)) for name, held in cursor.fetchall() if held > 0]


def exit_split(free: int, books: list[tuple[Strategy, int]]) -> list[tuple[Strategy | None, int]]:
    """Split `free` shares into one sale per strategy book (at most what each holds, in the
    order given) and the rest without a strategy."""
    parts: list[tuple[Strategy | None, int]] = []
    left = free
    for strategy, held in books:
        take = min(held, left)
        if take > 0:
            parts.append((strategy, take))
            left -= take
    if left > 0:
        parts.append((None, left))
    return parts


def exit_client_order_id_base(kind: ExitKind, holding: Holding, strategy: Strategy | None) -> str:
    return (
        f"{CLIENT_ORDER_PREFIX}{_CODES[kind]}-{holding.symbol}-{holding.episode}-"
        f"{strategy.pk if strategy else 0}"
    )


@dataclass
class ExitResult:
    orders: list[Order]
    locks: list[RiskLock]
    free: int  # shares the exit could sell

    @property
    def sent(self) -> list[Order]:
        return [o for o in self.orders if o.status not in _NOT_SENT]


def exit_place(*, holding: Holding, exit: Exit, limits, now: dt.datetime) -> ExitResult:
    """Sell what the position has free (module doc), then the stop-loss locks."""
    position = Position.objects.filter(symbol_id=holding.symbol).values_list("quantity").first()
    quantity = position[0] if position else 0
    open_sells = sum(
        q - f
        for q, f in Order.objects.filter(
            symbol_id=holding.symbol, side=Side.SELL, status__in=[*OPEN, OrderStatus.NEW]
        ).values_list("quantity", "filled_quantity")
    )
    free = quantity - open_sells
    if free <= 0:
        return ExitResult([], [], 0)
    named = _books(holding.symbol)
    by_name = Strategy.objects.in_bulk([n for n, _ in named], field_name="name")
    books = [(by_name[n], held) for n, held in named if n in by_name]
    orders = []
    for strategy, part in exit_split(free, books):
        base = exit_client_order_id_base(exit.kind, holding, strategy)
        attempt = Order.objects.filter(client_order_id__startswith=f"{base}-").count() + 1
        order, _ = oms.order_place(
            client_order_id=f"{base}-{attempt}",
            symbol=holding.symbol,
            side=Side.SELL,
            order_type=OrderType.MARKET,
            quantity=part,
            strategy=strategy,
            actor=ACTOR,
        )
        orders.append(order)
    result = ExitResult(orders, [], free)
    if exit.kind == ExitKind.STOP_LOSS and result.sent:
        result.locks = stoploss_locks(
            symbol=holding.symbol,
            strategies=[o.strategy for o in result.sent if o.strategy_id],
            limits=limits,
            now=now,
            why=exit.describe(holding.symbol),
        )
    return result


def _live(now: dt.datetime, kind: str, **scope) -> bool:
    return RiskLock.objects.filter(
        kind=kind, removed_at__isnull=True, until__gt=now, created_at__lte=now, **scope
    ).exists()


def _stoplosses(since: dt.datetime, **scope) -> int:
    """Stop-loss exits sent since `since` (distinct episodes: one per symbol and episode)."""
    cids = Order.objects.filter(
        Q(client_order_id__startswith=f"{CLIENT_ORDER_PREFIX}{_CODES[ExitKind.STOP_LOSS]}-"),
        created_at__gte=since,
        **scope,
    ).exclude(status__in=_NOT_SENT)
    # risk-sl-<symbol>-<episode>-<strategy>-<attempt>: one stop-loss per (symbol, episode).
    return len(
        {tuple(cid.split("-")[2:4]) for cid in cids.values_list("client_order_id", flat=True)}
    )


def stoploss_locks(
    *, symbol: str, strategies: list[Strategy], limits, now: dt.datetime, why: str
) -> list[RiskLock]:
    """The cool-down of `symbol`, and the guard's locks that are due (module doc)."""
    locks = []
    if limits.stoploss_cooldown_seconds > 0 and not _live(
        now, LockKind.COOLDOWN, symbol_id=symbol, strategy__isnull=True
    ):
        locks.append(
            services.lock_create(
                kind=LockKind.COOLDOWN,
                until=now + dt.timedelta(seconds=limits.stoploss_cooldown_seconds),
                reason=f"Cool-down after a stop-loss: {why}",
                actor=ACTOR,
                symbol=symbol,
                at=now,
            )
        )
    if limits.stoploss_guard_lock_seconds <= 0:
        return locks
    since = now - dt.timedelta(seconds=limits.stoploss_guard_window_seconds)
    until = now + dt.timedelta(seconds=limits.stoploss_guard_lock_seconds)
    window = f"{limits.stoploss_guard_window_seconds:,} s"
    scopes = [("symbol", symbol, {"symbol_id": symbol}, {"symbol": symbol})]
    scopes += [
        ("strategy", s.name, {"strategy_id": s.pk}, {"strategy": s})
        for s in {s.pk: s for s in strategies}.values()
    ]
    for label, name, scope, target in scopes:
        count = _stoplosses(since, **scope)
        if count < limits.stoploss_guard_count:
            continue
        other = "strategy__isnull" if label == "symbol" else "symbol__isnull"
        if _live(now, LockKind.STOPLOSS_GUARD, **scope, **{other: True}):
            continue
        locks.append(
            services.lock_create(
                kind=LockKind.STOPLOSS_GUARD,
                until=until,
                reason=f"Stop-loss guard: {count} stop-losses of {label} {name} within "
                f"{window} (guard {limits.stoploss_guard_count}).",
                actor=ACTOR,
                at=now,
                **target,
            )
        )
    return locks


__all__ = [
    "ACTOR",
    "HWM_SCRIPT",
    "Exit",
    "ExitKind",
    "ExitResult",
    "Holding",
    "episode_high_close",
    "evaluate",
    "exit_place",
    "exit_split",
    "holdings_open",
    "hwm_key",
    "position_episode",
    "stoploss_locks",
]
