"""The order management system: signals and requests -> checked orders -> a broker -> fills.

Sync functions (engines call them through database_sync_to_async). The path of an order:

1. ONE TRANSACTION: the order is created (services.order_create, idempotent on
   client_order_id), the pre-trade checks run (trading.checks) with the broker's account row
   locked, and the order moves NEW -> DENIED (with the check's reason code) or NEW -> SUBMITTED.
   For a signal, the signal's outcome (ORDERED / SKIPPED) is written in the same transaction,
   with the signal row locked: a signal makes at most one order, however often it is replayed.
2. Outside any transaction (a slow broker must not hold locks): broker.submit(order).
3. ONE TRANSACTION: SUBMITTED -> ACCEPTED or REJECTED, and the fills the broker reported, each
   through services.order_apply_fill (trade, position, cash and order together; idempotent on
   (order, execution_id)).

Crash safety (crash-only: recover() is what the orders engine runs when it starts). A crash
after 1 leaves a SUBMITTED order: recover() submits it again, and brokers are idempotent on
client_order_id (the paper broker derives its ids from it), so the broker still has one order
and every fill one execution id. A crash inside 1 or 3 rolls back whole. recover() also turns
PENDING signals into orders (or SKIPPED when older than SIGNAL_MAX_AGE_SECONDS: a restart after
an outage does not fire a burst of stale orders), sends NEW orders, repeats the cancel of
CANCEL_PENDING orders and matches open paper orders against the current quotes.

Lock order (no deadlocks): signal -> order -> position -> account, everywhere.

Settings read (getattr, defaults): TRADING_BROKER, PAPER_SLIPPAGE_TICKS, QUOTE_MAX_AGE_SECONDS,
TRADING_DENY_WHEN_CLOSED (False), SIGNAL_MAX_AGE_SECONDS (300).
"""

from __future__ import annotations

import datetime as dt
import logging
from decimal import Decimal

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from marketdata import krx
from qbsite.db import PreparedStatement
from qbsite.exceptions import NotFound
from risk import services as risk_services
from risk.models import RiskLimits, RiskLock, TradingState

from . import checks, services
from .brokers import Broker, BrokerAck, get_broker
from .brokers.base import BrokerFill, market_quote
from .brokers.paper import NAME as PAPER
from .brokers.paper import market_fill_price
from .models import (
    Account,
    Order,
    OrderStatus,
    OrderType,
    Position,
    Side,
    Signal,
    SignalOutcome,
    Strategy,
    Trade,
)
from .states import OPEN

logger = logging.getLogger("qb.trading.oms")

ENGINE_ACTOR = "engine:orders"
# Paper orders the quote matcher looks at (SUBMITTED ones are with their submitter; a
# CANCEL_PENDING one is being canceled: the paper exchange has seen the cancel).
MATCHABLE = (OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED)


def _broker_actor(broker: Broker) -> str:
    return f"broker:{broker.name}"


# --- prices and reservations -----------------------------------------------------------------


def estimated_price(
    *, side: str, order_type: str, limit_price, quote, market: str, broker: Broker
) -> Decimal | None:
    """What an order is valued at before it fills: a limit order at its limit; a market order
    at the last price moved by the broker's slippage (paper), inside the band. None without a
    quote."""
    if order_type == OrderType.LIMIT:
        return limit_price
    if not quote or quote.get("close") is None:
        return None
    return market_fill_price(
        quote["close"],
        side,
        ticks=getattr(broker, "slippage_ticks", 0),
        market=market,
        band=checks.price_band(quote, market=market),
    )


# The reads of the order path are plain SQL: on this project's 2-core machine Django builds a
# query in ~0.5-1 ms, an aggregate in several; each read below is one round trip instead.
_ORDERS = Order._meta.db_table
_POSITIONS = Position._meta.db_table
_STOCKS = "stocks_metadata"
_TRADES = Trade._meta.db_table
_LOCKS = RiskLock._meta.db_table
_LIMITS = RiskLimits._meta.db_table
_STATE = TradingState._meta.db_table
# The losing streak is looked for in the sells of the last 30 days at most.
_STREAK_LOOKBACK = dt.timedelta(days=30)
# A losing streak is read from the latest (4 x its limit) sell fills: a sell order filled in
# more pieces than that may end the count early (paper fills are whole; KIS rarely splits more).
_STREAK_FILLS_PER_ORDER = 4
# A losing streak is counted up to this many sell orders: a limit above it never denies (the
# permissive limits of tests use 1,000,000, which would read every sell of the month).
_STREAK_MAX = 100
_OPEN_STATUSES = sorted(OPEN)

# Constants in the text, not parameters: the prepared statement's generic plan then knows them
# (an index scan of the few open orders, not a scan of every order ever placed).
_OPEN_SQL = ", ".join(f"'{status}'" for status in _OPEN_STATUSES)

_CHECK_FIGURES_SQL = f"""
WITH open_orders AS (
  SELECT o.symbol, o.side, o.order_type, o.quantity - o.filled_quantity AS remaining,
         o.limit_price, s.market, s.sector, p.current_price, p.average_price
  FROM {_ORDERS} o
  JOIN {_STOCKS} s ON s.symbol = o.symbol
  LEFT JOIN {_POSITIONS} p ON p.symbol = o.symbol
  WHERE o.broker = %(broker)s AND o.status IN ({_OPEN_SQL}) AND o.id <> %(id)s
), held AS (
  SELECT p.symbol, p.quantity, s.sector,
         p.quantity * COALESCE(p.current_price, p.average_price) AS value
  FROM {_POSITIONS} p JOIN {_STOCKS} s ON s.symbol = p.symbol
  WHERE p.quantity > 0
), me AS (
  SELECT market, sector FROM {_STOCKS} WHERE symbol = %(symbol)s
), recent_sells AS (  -- the latest sell fills (busted trades do not count), newest first
  SELECT t.id, t.order_id, t.profit_loss, t.timestamp,
         COALESCE(o.created_at, t.timestamp) AS placed
  FROM (SELECT id, order_id, profit_loss, timestamp FROM {_TRADES}
        WHERE side = 'SELL' AND status <> 'CANCELED' AND profit_loss IS NOT NULL
          AND timestamp >= %(streak_since_trades)s
        ORDER BY timestamp DESC, id DESC LIMIT %(streak_rows)s) AS t
  LEFT JOIN {_ORDERS} o ON o.id = t.order_id
), sells AS (  -- by sell order
  SELECT SUM(profit_loss) AS pnl, MAX(timestamp) AS at, MAX(id) AS last_id, MIN(placed) AS placed
  FROM recent_sells GROUP BY COALESCE(order_id, -id)
)
SELECT
  (SELECT market FROM me),
  COALESCE((SELECT sector FROM me), ''),
  COALESCE((SELECT quantity FROM held WHERE symbol = %(symbol)s), 0),
  oo.sell_reserved, oo.limit_buys, oo.market_buys, oo.symbol_buys, oo.sector_buys,
  h.value, h.symbol_value, h.sector_value,
  r.today, r.month,
  (SELECT COALESCE(MIN(n) FILTER (WHERE pnl >= 0) - 1, COUNT(*))
   FROM (SELECT pnl, row_number() OVER (ORDER BY at DESC, last_id DESC) AS n
         FROM sells WHERE placed > %(streak_since)s
         ORDER BY at DESC, last_id DESC LIMIT %(streak_cap)s) AS recent),
  sent.today, sent.last_second,
  -- the latest sent: the newest created (the index), or one created earlier today and sent
  -- later (recovery of a NEW order)
  GREATEST(sent.symbol_last,
           (SELECT submitted_at FROM {_ORDERS}
            WHERE symbol = %(symbol)s AND submitted_at IS NOT NULL AND id <> %(id)s
            ORDER BY created_at DESC LIMIT 1)),
  (SELECT json_agg(json_build_object(
            'id', id, 'kind', kind, 'symbol', symbol, 'strategy', strategy_id,
            'reason', reason, 'until', until))
   FROM {_LOCKS}
   WHERE removed_at IS NULL AND until > %(at)s AND created_at <= %(at)s
     AND (symbol IS NULL OR symbol = %(symbol)s)
     AND (strategy_id IS NULL OR strategy_id = %(strategy)s)),
  (SELECT updated_at FROM {_LIMITS} WHERE id = 1)
FROM
  (SELECT
     COALESCE(SUM(remaining) FILTER (WHERE side = 'SELL' AND symbol = %(symbol)s), 0)
       AS sell_reserved,
     COALESCE(SUM(remaining * limit_price)
              FILTER (WHERE side = 'BUY' AND order_type = 'LIMIT'), 0) AS limit_buys,
     -- market buys are valued in Python at their estimated fill price (their quotes)
     json_agg(json_build_object(
                's', symbol, 'm', market, 'sector', sector, 'n', remaining,
                'p', COALESCE(current_price, NULLIF(average_price, 0))::text))
       FILTER (WHERE side = 'BUY' AND order_type = 'MARKET') AS market_buys,
     COALESCE(SUM(remaining * limit_price)
              FILTER (WHERE side = 'BUY' AND order_type = 'LIMIT' AND symbol = %(symbol)s), 0)
       AS symbol_buys,
     COALESCE(SUM(remaining * limit_price)
              FILTER (WHERE side = 'BUY' AND order_type = 'LIMIT' AND sector <> ''
                      AND sector = (SELECT sector FROM me)), 0) AS sector_buys
   FROM open_orders) AS oo,
  (SELECT COALESCE(SUM(value), 0) AS value,
          COALESCE(SUM(value) FILTER (WHERE symbol = %(symbol)s), 0) AS symbol_value,
          COALESCE(SUM(value) FILTER (WHERE sector <> '' AND sector = (SELECT sector FROM me)), 0)
            AS sector_value
   FROM held) AS h,
  (SELECT COUNT(*) FILTER (WHERE submitted_at >= %(wall_day_start)s) AS today,
          COUNT(*) FILTER (WHERE submitted_at > %(second_ago)s) AS last_second,
          MAX(submitted_at) FILTER (WHERE symbol = %(symbol)s) AS symbol_last
   FROM {_ORDERS}
   -- created_at is indexed; an order is sent within moments of its creation (one created
   -- over an hour before the day and sent today, a NEW one recovered late, is not counted)
   WHERE created_at >= %(wall_day_start)s - interval '1 hour' AND submitted_at IS NOT NULL
     AND id <> %(id)s) AS sent,
  (SELECT COALESCE(SUM(profit_loss) FILTER (WHERE timestamp >= %(day_start)s
                                              AND timestamp < %(day_end)s), 0) AS today,
          COALESCE(SUM(profit_loss), 0) AS month
   FROM {_TRADES}
   -- the day and month of `now`: a replayed past session does not count later days' sells
   WHERE side = 'SELL' AND status <> 'CANCELED' AND timestamp >= %(month_start)s
     AND timestamp < %(month_end)s) AS r
"""

_CHECK_FIGURES = PreparedStatement(
    "qb_check_figures",
    _CHECK_FIGURES_SQL,
    {
        "symbol": "text",
        "broker": "text",
        "id": "bigint",
        "strategy": "bigint",
        "at": "timestamptz",
        "second_ago": "timestamptz",
        "wall_day_start": "timestamptz",
        "day_start": "timestamptz",
        "day_end": "timestamptz",
        "month_start": "timestamptz",
        "month_end": "timestamptz",
        "streak_since": "timestamptz",
        "streak_since_trades": "timestamptz",
        "streak_cap": "integer",
        "streak_rows": "integer",
    },
)

# The account row locked (every order's checks and every fill take it), and the trading state
# row shared (a state change waits for the checks in flight, and they for it): one round trip.
_LOCK_SQL = f"""
SELECT a.cash, t.state, t.changed_at
FROM {Account._meta.db_table} a CROSS JOIN {_STATE} t
WHERE a.broker = %s AND t.id = 1
FOR UPDATE OF a FOR SHARE OF t
"""


def _locked_cash_and_state(broker: str) -> tuple[Decimal, str, dt.datetime | None]:
    """The broker account's cash (its row locked until the transaction ends; created first
    when missing) and the trading state (its row shared until then)."""
    with connection.cursor() as cursor:
        cursor.execute(_LOCK_SQL, [broker])
        row = cursor.fetchone()
        if row is None:
            services.account_ensure(broker=broker)
            TradingState.objects.get_or_create(pk=1)
            cursor.execute(_LOCK_SQL, [broker])
            row = cursor.fetchone()
    return row


def _seoul_midnight(
    moment: dt.datetime, *, month: bool = False, after: bool = False
) -> dt.datetime:
    """The start of `moment`'s KST day (or month); `after`: of the next day (or month)."""
    local = moment.astimezone(krx.SEOUL).date()
    if month:
        day = local.replace(day=1)
        if after:
            day = (day + dt.timedelta(days=31)).replace(day=1)
    else:
        day = local + dt.timedelta(days=1) if after else local
    return dt.datetime.combine(day, dt.time(), krx.SEOUL)


def _market_buys(rows, order: Order, *, quote, broker: Broker) -> list[tuple[str, str, Decimal]]:
    """(symbol, sector, value) of the other open market buys (rows from the figures statement):
    what they may still spend at their estimated fill price (their quote), else at the marked
    or average price of the position, else nothing."""
    values = []
    for row in rows or ():
        symbol = row["s"]
        their_quote = quote if symbol == order.symbol_id else market_quote(symbol)[0]
        price = estimated_price(
            side=Side.BUY,
            order_type=OrderType.MARKET,
            limit_price=None,
            quote=their_quote,
            market=row["m"],
            broker=broker,
        )
        if price is None and row["p"] is not None:
            price = Decimal(row["p"])
        if price is not None:
            values.append((symbol, row["sector"], price * row["n"]))
    return values


def _locks(rows) -> tuple[checks.Lock, ...]:
    return tuple(
        checks.Lock(
            id=row["id"],
            kind=row["kind"],
            symbol=row["symbol"],
            strategy_id=row["strategy"],
            reason=row["reason"],
            until=dt.datetime.fromisoformat(row["until"]),
        )
        for row in rows or ()
    )


# --- checks and submission -------------------------------------------------------------------


def check_inputs(
    order: Order, *, quote, now: dt.datetime, broker: Broker, at: dt.datetime | None = None
) -> checks.CheckInput:
    """What the pre-trade checks see for `order`, in two round trips. First the broker's
    account row is locked (until the caller's transaction ends; every order's checks and every
    fill take that lock, so what is read after it cannot change under the checks) and the
    trading state read under a share lock. Then one statement reads the rest: the stock, the
    holdings and open orders (reserved = the other open orders of the broker: sells of this
    symbol in shares, buys in KRW: limit buys at their limit, market buys at their estimated
    fill price, plus commission), the portfolio's values (open buys at those same values),
    realized PnL of the KST day and month of `now` (the market's clock), the losing streak,
    the pace of orders (`at`, the wall clock), the live locks that may cover the order and the
    limits' version (risk.services.limits_for).
    """
    cash, state, state_changed_at = _locked_cash_and_state(order.broker)
    at = at or timezone.now()  # after the lock: the orders sent before it are in the past
    risk_limits = risk_services.limits_get()
    streak_since = at - _STREAK_LOOKBACK
    if state_changed_at is not None and state_changed_at > streak_since:
        streak_since = state_changed_at
    month_start = _seoul_midnight(now, month=True)
    wall_day_start = _seoul_midnight(at)
    with connection.cursor() as cursor:
        # Prepared: planning this statement cost more than running it (bench/risk_checks.py).
        _CHECK_FIGURES.execute(
            cursor,
            {
                "symbol": order.symbol_id,
                "broker": order.broker,
                "id": order.pk,
                "strategy": order.strategy_id,
                "at": at,
                "second_ago": at - dt.timedelta(seconds=1),
                "wall_day_start": wall_day_start,
                "day_start": _seoul_midnight(now),
                "day_end": _seoul_midnight(now, after=True),
                "month_start": month_start,
                "month_end": _seoul_midnight(now, month=True, after=True),
                "streak_since": streak_since,
                "streak_since_trades": streak_since - dt.timedelta(days=1),
                "streak_cap": min(risk_limits.max_consecutive_losses, _STREAK_MAX),
                # the streak's sell orders are found among this many latest sell fills
                "streak_rows": _STREAK_FILLS_PER_ORDER
                * min(risk_limits.max_consecutive_losses, _STREAK_MAX),
            },
        )
        (
            market,
            sector,
            held,
            held_reserved,
            cash_reserved,
            market_buys,
            symbol_buys,
            sector_buys,
            held_value,
            symbol_value,
            sector_value,
            realized_today,
            realized_month,
            losses,
            orders_today,
            orders_last_second,
            last_order_at,
            locks,
            limits_version,
        ) = cursor.fetchone()
    if limits_version != risk_limits.updated_at:
        risk_limits = risk_services.limits_for(limits_version)
    buys_value = cash_reserved  # the limit buys at their limit
    for symbol, their_sector, value in _market_buys(market_buys, order, quote=quote, broker=broker):
        buys_value += value
        if symbol == order.symbol_id:
            symbol_buys += value
        if sector and their_sector == sector:
            sector_buys += value
    cash_reserved = buys_value
    if cash_reserved:
        cash_reserved += krx.commission(cash_reserved)
    price = estimated_price(
        side=order.side,
        order_type=order.order_type,
        limit_price=order.limit_price,
        quote=quote,
        market=market,
        broker=broker,
    )
    return checks.CheckInput(
        symbol=order.symbol_id,
        side=order.side,
        order_type=order.order_type,
        quantity=order.quantity,
        limit_price=order.limit_price,
        market=market,
        quote=quote,
        now=now,
        price=price,
        held=held,
        held_reserved=held_reserved,
        cash=cash,
        cash_reserved=cash_reserved,
        limits=checks.Limits.from_settings(),
        state=state,
        risk=risk_limits,
        book=checks.Book(
            portfolio_value=cash + held_value,
            symbol_value=symbol_value + symbol_buys,
            sector=sector,
            sector_value=sector_value + sector_buys,
            exposure_value=held_value + buys_value,
            realized_today=realized_today,
            realized_month=realized_month,
            consecutive_losses=int(losses),
            orders_today=orders_today,
            orders_last_second=orders_last_second,
            last_order_at=last_order_at,
            locks=_locks(locks),
        ),
        strategy_id=order.strategy_id,
        at=at,
    )


def _check_and_mark(
    order: Order,
    *,
    broker: Broker,
    actor: str,
    market: tuple | None = None,
    signal: Signal | None = None,
) -> checks.Decision:
    """Run the pre-trade checks on a NEW order (locked, inside atomic) and move it to SUBMITTED
    or DENIED. The account row stays locked until the caller's transaction ends. `market`:
    (quote, now) when the caller has just read them. `signal`: the (locked) signal the order
    comes from, marked ORDERED (with the denial, if any) in the transition's round trip."""
    quote, now = market or market_quote(order.symbol_id)
    decision = checks.run(check_inputs(order, quote=quote, now=now, broker=broker))
    extra_writes = ()
    if signal is not None:
        signal.outcome = SignalOutcome.ORDERED
        signal.outcome_reason = (
            "" if decision.approved else f"Order denied: {decision.code} {decision.message}"
        )
        extra_writes = (("update", signal, ("outcome", "outcome_reason")),)
    if decision.approved:
        services.order_transition(
            order, OrderStatus.SUBMITTED, actor=actor, extra_writes=extra_writes
        )
    else:
        services.order_transition(
            order,
            OrderStatus.DENIED,
            actor=actor,
            reason=decision.message,
            reason_code=decision.code,
            extra_writes=extra_writes,
        )
        logger.info(
            "Order %s denied: %s %s",
            order.client_order_id,
            decision.code,
            decision.message,
            extra={"metadata": {"order": order.client_order_id, "code": decision.code}},
        )
    return decision


def _apply_fills(order: Order, fills, *, actor: str, locked: bool = False) -> Order:
    """Apply the broker's fills of `order`; `locked`: the caller holds the order's lock inside
    its transaction, which the fills join (services.order_apply_fill(locked=...))."""
    for fill in fills:
        try:
            trade = services.order_apply_fill(
                order_id=order.pk,
                execution_id=fill.execution_id,
                quantity=fill.quantity,
                price=fill.price,
                at=fill.time,
                actor=actor,
                locked=order if locked else None,
            )
        except services.FillError as exc:
            logger.warning(
                "Fill %s of order %s not applied: %s",
                fill.execution_id,
                order.client_order_id,
                exc.message,
                extra={"metadata": {"order": order.client_order_id, "fill": fill.execution_id}},
            )
            continue
        if trade is not None:
            order = trade.order
    return order


def _apply_ack(order: Order, ack: BrokerAck, *, broker: Broker) -> Order:
    actor = _broker_actor(broker)
    with transaction.atomic():
        order = services.order_lock(order.pk)
        if not ack.accepted:
            if order.status == OrderStatus.SUBMITTED:
                services.order_transition(
                    order,
                    OrderStatus.REJECTED,
                    actor=actor,
                    reason=ack.reason,
                    reason_code=ack.reason_code,
                    broker_order_id=ack.broker_order_id or None,
                )
                logger.info(
                    "Order %s rejected by %s: %s %s",
                    order.client_order_id,
                    broker.name,
                    ack.reason_code,
                    ack.reason,
                )
            else:
                logger.warning(
                    "%s rejected order %s, which is %s here: %s",
                    broker.name,
                    order.client_order_id,
                    order.status,
                    ack.reason,
                )
            return order
        if order.status == OrderStatus.SUBMITTED:
            services.order_transition(
                order,
                OrderStatus.ACCEPTED,
                actor=actor,
                broker_order_id=ack.broker_order_id or None,
            )
        elif ack.broker_order_id and not order.broker_order_id:
            # A cancel came while the submit was on its way (a halt, an operator): the order is
            # CANCEL_PENDING, and the broker's id is what its cancel needs.
            order.broker_order_id = ack.broker_order_id
            order.updated_at = timezone.now()
            services.row_update(order, ("broker_order_id", "updated_at"))
        return _apply_fills(order, ack.fills, actor=actor, locked=True)


def _send(order: Order, *, broker: Broker) -> Order:
    """broker.submit() outside any transaction, then the answer applied. A broker that fails
    leaves the order SUBMITTED (recover() submits it again)."""
    try:
        ack = broker.submit(order)
    except Exception:
        logger.exception(
            "%s: submit of order %s failed; it stays SUBMITTED and is sent again on recovery.",
            broker.name,
            order.client_order_id,
        )
        return order
    return _apply_ack(order, ack, broker=broker)


def order_place(
    *,
    client_order_id: str,
    symbol: str,
    side: str,
    order_type: str,
    quantity: int,
    limit_price: Decimal | None = None,
    user=None,
    strategy: Strategy | None = None,
    signal: Signal | None = None,
    actor: str,
) -> tuple[Order, bool]:
    """Create (idempotently), check and submit an order. Returns (order as it stands after
    submission, created). The same client_order_id again returns the same order untouched (a
    SUBMITTED one left by a crash is recover()'s to send); with other terms it is a Conflict
    (services.order_create)."""
    broker = get_broker()
    with transaction.atomic():
        order, created = services.order_create(
            client_order_id=client_order_id,
            symbol=symbol,
            side=side,
            order_type=order_type,
            quantity=quantity,
            limit_price=limit_price,
            user=user,
            strategy=strategy,
            signal=signal,
            broker=broker.name,
            actor=actor,
        )
        if order.status != OrderStatus.NEW:
            return order, created
        if not created:
            order = services.order_lock(order.pk)
            if order.status != OrderStatus.NEW:
                return order, created
            broker = get_broker(order.broker)
        decision = _check_and_mark(order, broker=broker, actor=actor)
    if decision.approved:
        order = _send(order, broker=broker)
    return order, created


# --- cancel ----------------------------------------------------------------------------------


def _send_cancel(order: Order) -> Order:
    broker = get_broker(order.broker)
    try:
        ack = broker.cancel(order)
    except Exception:
        logger.exception(
            "%s: cancel of order %s failed; it stays CANCEL_PENDING and is sent again on recovery.",
            broker.name,
            order.client_order_id,
        )
        return order
    actor = _broker_actor(broker)
    with transaction.atomic():
        order = services.order_lock(order.pk)
        if order.status != OrderStatus.CANCEL_PENDING:
            return order  # filled (or settled otherwise) meanwhile
        if ack.accepted:
            return services.order_transition(
                order, OrderStatus.CANCELED, actor=actor, reason=order.reason or "Canceled."
            )
        return services.order_transition(
            order,
            OrderStatus.ACCEPTED,
            actor=actor,
            reason=f"Cancel refused by {broker.name}: {ack.reason}",
            reason_code=ack.reason_code,
        )


def order_cancel(*, order_id: int, actor: str, reason: str = "") -> Order:
    """Cancel an order: a NEW one at once; a live one through its broker (CANCEL_PENDING, then
    CANCELED, or back to ACCEPTED when the broker refuses). A final order: IllegalTransition
    (a Conflict) naming its status. Returns the order as it stands."""
    order = services.order_request_cancel(order_id=order_id, actor=actor, reason=reason)
    if order.status != OrderStatus.CANCEL_PENDING:
        return order
    return _send_cancel(order)


# --- signals ---------------------------------------------------------------------------------


def max_shares(budget: Decimal, price: Decimal, *, rate: Decimal | None = None) -> int:
    """The most whole shares at `price` whose value plus commission fits in `budget`."""
    if budget <= 0 or price is None or price <= 0:
        return 0
    rate = krx.commission_rate() if rate is None else rate
    quantity = int(budget / (price * (1 + rate)))
    while quantity > 0 and price * quantity + krx.commission(price * quantity, rate=rate) > budget:
        quantity -= 1
    while price * (quantity + 1) + krx.commission(price * (quantity + 1), rate=rate) <= budget:
        quantity += 1
    return quantity


_BOOK_SQL = f"""
SELECT
  COALESCE((SELECT SUM(CASE WHEN side = 'BUY' THEN quantity ELSE -quantity END)
            FROM {Trade._meta.db_table} WHERE strategy = %(name)s AND symbol = %(symbol)s
              AND status <> 'CANCELED'), 0),  -- busted trades: none, as reconcile counts
  COALESCE(SUM(quantity - filled_quantity)
           FILTER (WHERE strategy_id = %(strategy)s AND side = 'BUY'), 0),
  COALESCE(SUM(quantity - filled_quantity)
           FILTER (WHERE strategy_id = %(strategy)s AND side = 'SELL'), 0),
  COALESCE(SUM(quantity - filled_quantity)
           FILTER (WHERE side = 'SELL' AND status <> 'NEW'), 0),
  COALESCE((SELECT quantity FROM {_POSITIONS} WHERE symbol = %(symbol)s), 0)
FROM {_ORDERS}
WHERE symbol = %(symbol)s AND status = ANY(%(statuses)s)
"""


def _strategy_book(strategy: Strategy, symbol: str) -> tuple[int, int, int, int, int]:
    """(shares the strategy holds in `symbol` net of its trades, its open (or NEW) buy orders'
    remaining shares, the same for its sells, every open sell order's remaining shares in the
    symbol, the position's shares), in one round trip."""
    with connection.cursor() as cursor:
        cursor.execute(
            _BOOK_SQL,
            {
                "name": strategy.name,
                "strategy": strategy.pk,
                "symbol": symbol,
                "statuses": [*_OPEN_STATUSES, OrderStatus.NEW],
            },
        )
        return tuple(int(n) for n in cursor.fetchone())


def size_signal(signal: Signal, *, quote, broker: Broker) -> tuple[int, str, Decimal | None]:
    """(quantity, why nothing when 0, the price it was sized at) for a signal.

    BUY: each of the strategy's symbols gets capital_allocation / len(symbols); less what the
    strategy already holds there and has in open buy orders, valued at the estimated fill price;
    the rest buys the most whole shares that fit with their commission, and at most the risk
    limits' max_order_value (the allocation is then reached in several orders).
    SELL: what the strategy holds there (its own trades, net) less its open sells, at most what
    the position has free (less every open sell order).
    signal.quantity, when given, caps either.
    """
    strategy = signal.strategy
    symbol = signal.symbol_id
    market = signal.symbol.market
    held, open_buys, open_sells, all_open_sells, position = _strategy_book(strategy, symbol)
    asked = signal.quantity
    if signal.action == Side.BUY:
        price = estimated_price(
            side=Side.BUY,
            order_type=OrderType.MARKET,
            limit_price=None,
            quote=quote,
            market=market,
            broker=broker,
        )
        price = price or signal.price  # no quote: sized at the signal's price; checks deny
        per_symbol = strategy.capital_allocation / max(len(strategy.symbols or ()), 1)
        committed = (held + open_buys) * price
        quantity = max_shares(per_symbol - committed, price)
        # One order is at most the risk limits' max order value: the allocation is reached in
        # several buys instead of one order the checks would deny (ORDER_VALUE_TOO_HIGH).
        quantity = min(quantity, int(risk_services.limits_get().max_order_value // price))
        if asked is not None:
            quantity = min(quantity, asked)
        if quantity <= 0:
            return (
                0,
                f"Nothing to buy: {strategy.name} has {per_symbol:,.0f} KRW per symbol and "
                f"already holds {held:,} {symbol} (+{open_buys:,} in open orders) = "
                f"{committed:,.0f} KRW at {price:,}; not enough left for one share with "
                "commission.",
                price,
            )
        return quantity, "", price
    own = held - open_sells
    free = position - all_open_sells
    quantity = min(own, free)
    if asked is not None:
        quantity = min(quantity, asked)
    if quantity <= 0:
        return (
            0,
            f"Nothing to sell: {strategy.name} holds {held:,} {symbol} by its own trades "
            f"({open_sells:,} already in its open sells); the position has {free:,} free "
            f"of {position:,}.",
            None,
        )
    return quantity, "", None


def signal_client_order_id(signal: Signal | int) -> str:
    return f"sig-{signal.pk if isinstance(signal, Signal) else signal}"


def _skip(signal: Signal, reason: str) -> None:
    signal.outcome = SignalOutcome.SKIPPED
    signal.outcome_reason = reason
    services.row_update(signal, ("outcome", "outcome_reason"))
    logger.info("Signal %s skipped: %s", signal.pk, reason)


def order_from_signal(*, signal_id: int) -> Order | None:
    """The order of a signal: sized, checked and submitted; the signal marked ORDERED (or
    SKIPPED with the reason, returning None) in the same transaction as the order. A signal
    handled before returns its order (or None) and changes nothing."""
    broker = get_broker()
    with transaction.atomic():
        signal = services.row_lock(Signal, signal_id, related=("strategy", "symbol"))
        if signal is None:
            raise NotFound(f"No signal {signal_id}.")
        if signal.outcome != SignalOutcome.PENDING:
            return Order.objects.filter(signal_id=signal.pk).first()
        if not signal.strategy.enabled:
            _skip(signal, f"Strategy {signal.strategy.name} is disabled.")
            return None
        market = market_quote(signal.symbol_id)
        quantity, why, _ = size_signal(signal, quote=market[0], broker=broker)
        if quantity <= 0:
            _skip(signal, why)
            return None
        order, _ = services.order_create(
            client_order_id=signal_client_order_id(signal),
            symbol=signal.symbol_id,
            side=signal.action,
            order_type=OrderType.MARKET,
            quantity=quantity,
            strategy=signal.strategy,
            signal=signal,
            broker=broker.name,
            actor=ENGINE_ACTOR,
            new_key=True,  # the signal is locked and PENDING: it has no order yet
        )
        order.symbol = signal.symbol
        decision = _check_and_mark(
            order, broker=broker, actor=ENGINE_ACTOR, market=market, signal=signal
        )
    if decision.approved:
        order = _send(order, broker=broker)
    return order


# --- paper matching and recovery -------------------------------------------------------------


def open_paper_symbols() -> set[str]:
    """Symbols with open paper orders (the ones a quote may fill)."""
    return set(
        Order.objects.filter(broker=PAPER, status__in=OPEN)
        .values_list("symbol_id", flat=True)
        .distinct()
    )


def match_open_orders(*, symbol: str) -> int:
    """Fill the open paper orders of `symbol` that its current quote reaches. Returns how many
    paper orders of the symbol are still open (0: the caller may stop watching it)."""
    orders = list(
        Order.objects.filter(broker=PAPER, symbol_id=symbol, status__in=MATCHABLE)
        .select_related("symbol", "strategy")
        .order_by("created_at", "id")
    )
    if orders:
        broker = get_broker(PAPER)
        due: dict[int, list[BrokerFill]] = broker.match(orders, symbol=symbol)
        for order in orders:
            if order.pk in due:
                _apply_fills(order, due[order.pk], actor=_broker_actor(broker))
    return Order.objects.filter(broker=PAPER, symbol_id=symbol, status__in=OPEN).count()


def _signal_max_age() -> dt.timedelta:
    return dt.timedelta(seconds=float(getattr(settings, "SIGNAL_MAX_AGE_SECONDS", 300)))


def _expire_signal(signal_id: int, now: dt.datetime) -> None:
    with transaction.atomic():
        signal = Signal.objects.select_for_update().filter(pk=signal_id).first()
        if signal is not None and signal.outcome == SignalOutcome.PENDING:
            _skip(
                signal,
                f"Expired: made at {signal.created_at.isoformat()}, not ordered by "
                f"{now.isoformat()} (SIGNAL_MAX_AGE_SECONDS "
                f"{_signal_max_age().total_seconds():g}).",
            )


def _resume_new(order_id: int) -> Order:
    with transaction.atomic():
        order = services.order_lock(order_id)
        if order.status != OrderStatus.NEW:
            return order
        broker = get_broker(order.broker)
        decision = _check_and_mark(order, broker=broker, actor=ENGINE_ACTOR)
    return _send(order, broker=broker) if decision.approved else order


def recover(*, min_age: float | None = None) -> dict[str, int]:
    """Finish whatever a crash (or a lost notification) left half done; safe to run at any
    time, from several processes at once. `min_age` (seconds): leave alone what is younger
    (it is probably in someone's hands right now). Returns counts by kind."""
    now = timezone.now()
    cutoff = now - dt.timedelta(seconds=min_age) if min_age else None
    counts = {"signals": 0, "expired": 0, "new": 0, "submitted": 0, "cancels": 0, "matched": 0}

    def young(field: str) -> Q:
        return Q(**{f"{field}__lte": cutoff}) if cutoff else Q()

    def each(kind: str, ids, work) -> None:
        for pk in ids:
            try:
                work(pk)
                counts[kind] += 1
            except Exception:
                logger.exception("Recovery of %s %s failed; next sweep tries again.", kind, pk)

    expiry = now - _signal_max_age()
    pending = list(
        Signal.objects.filter(Q(outcome=SignalOutcome.PENDING) & young("created_at"))
        .order_by("created_at", "id")
        .values_list("pk", "created_at")
    )
    each("expired", [pk for pk, at in pending if at < expiry], lambda pk: _expire_signal(pk, now))
    each(
        "signals",
        [pk for pk, at in pending if at >= expiry],
        lambda pk: order_from_signal(signal_id=pk),
    )
    each(
        "new",
        Order.objects.filter(Q(status=OrderStatus.NEW) & young("created_at"))
        .order_by("id")
        .values_list("pk", flat=True),
        _resume_new,
    )

    def resubmit(pk: int) -> None:
        order = Order.objects.select_related("symbol", "strategy").get(pk=pk)
        if order.status == OrderStatus.SUBMITTED:
            _send(order, broker=get_broker(order.broker))

    each(
        "submitted",
        Order.objects.filter(Q(status=OrderStatus.SUBMITTED) & young("submitted_at"))
        .order_by("id")
        .values_list("pk", flat=True),
        resubmit,
    )

    def recancel(pk: int) -> None:
        order = Order.objects.select_related("symbol", "strategy").get(pk=pk)
        if order.status == OrderStatus.CANCEL_PENDING:
            _send_cancel(order)

    each(
        "cancels",
        Order.objects.filter(Q(status=OrderStatus.CANCEL_PENDING) & young("updated_at"))
        .order_by("id")
        .values_list("pk", flat=True),
        recancel,
    )
    symbols = (
        Order.objects.filter(broker=PAPER, status__in=MATCHABLE)
        .values_list("symbol_id", flat=True)
        .distinct()
    )
    each("matched", list(symbols), lambda symbol: match_open_orders(symbol=symbol))
    return counts


__all__ = [
    "ENGINE_ACTOR",
    "check_inputs",
    "estimated_price",
    "match_open_orders",
    "max_shares",
    "open_paper_symbols",
    "order_cancel",
    "order_from_signal",
    "order_place",
    "recover",
    "signal_client_order_id",
    "size_signal",
]
