"""Writes of the trading core: orders and their transitions, fills, positions, cash.

The money path is `order_apply_fill`: one fill makes one `trades` row, changes the position of
its symbol and the broker account's cash, and moves the order on, all in one transaction with
the order, the position and the account locked in that order (every writer takes them in the
same order, so two fills never deadlock). A fill is identified by (order, execution_id): the
same fill reported twice (a replayed broker notice, a restart) is applied once.

Positions (long only) hold:
- quantity;
- average_price: the weighted average buy price of the shares held, fees excluded (unchanged
  by sells), to 4 decimal places;
- cost_basis: what the shares held cost, buy amounts plus buy commissions, reduced pro rata on
  each sell (to 4 places; the sell that closes the position removes all that is left, so a
  round trip's realized PnL is exact to the won);
- realized_pnl: the sum over sells of (sale amount - commission - tax - cost removed);
- unrealized_pnl: current_price x quantity - cost_basis (marked by the portfolio engine).
Commission (KRX_COMMISSION_RATE, 0.015 % by default) and the sell-side tax (dated table in
marketdata.krx) are each truncated to the won, as KIS statements show them.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from marketdata import krx
from marketdata.models import Stock
from qbsite.events import EventType, publish
from qbsite.exceptions import Conflict, InvalidInput, NotFound

from .models import (
    Account,
    Order,
    OrderStatus,
    OrderTransition,
    OrderType,
    Position,
    Side,
    Signal,
    Strategy,
    Trade,
)
from .states import CANCELABLE, OPEN, IllegalTransition, check_transition, is_final

logger = logging.getLogger("qb.trading")

SOURCE = "trading"
_PLACES = Decimal("0.0001")
_ZERO = Decimal(0)


class OrderError(InvalidInput):
    code = "order_invalid"


class FillError(Conflict):
    code = "fill_invalid"


# --- helpers ---------------------------------------------------------------------------------


def _decimal(value, what: str) -> Decimal:
    if isinstance(value, float):
        raise OrderError(f"{what} must be a Decimal or a string, not a float ({value!r}).")
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError, TypeError):
        raise OrderError(f"{what} {value!r} is not a number.") from None
    if not number.is_finite():
        raise OrderError(f"{what} {value!r} is not a finite number.")
    return number


def _positive_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise OrderError(f"{what} must be a whole number of shares, got {value!r}.")
    if value <= 0:
        raise OrderError(f"{what} must be at least 1 share, got {value}.")
    return value


def _aware(at: dt.datetime | None, what: str = "time") -> dt.datetime:
    if at is None:
        return timezone.now()
    if not isinstance(at, dt.datetime) or at.utcoffset() is None:
        raise OrderError(f"{what} must be a timezone-aware datetime, got {at!r}.")
    return at


def tax_trade_date(at: dt.datetime) -> dt.date:
    """The KRX trade date of a fill at `at`: its Seoul date, or the next trading day when the
    fill happened on a day KRX is closed (the simulated market runs at any hour)."""
    day = at.astimezone(krx.SEOUL).date()
    if krx.is_trading_day(day):
        return day
    return krx.next_open(at).date()


def fill_costs(
    *, side: str, amount: Decimal, market: str, at: dt.datetime
) -> tuple[Decimal, Decimal]:
    """(commission, tax) in whole won for one fill of `amount` KRW."""
    commission = krx.commission(amount)
    tax = (
        krx.sell_tax(amount, market=market, trade_date=tax_trade_date(at))
        if side == Side.SELL
        else _ZERO
    )
    return commission, tax


def _event_order(order: Order) -> dict:
    return {
        "order_id": order.pk,
        "client_order_id": order.client_order_id,
        "broker": order.broker,
        "broker_order_id": order.broker_order_id,
        "strategy": order.strategy.name if order.strategy_id else None,
        "signal_id": order.signal_id,
        "symbol": order.symbol_id,
        "side": order.side,
        "order_type": order.order_type,
        "quantity": order.quantity,
        "limit_price": order.limit_price,
        "filled_quantity": order.filled_quantity,
        "average_fill_price": order.average_fill_price,
        "status": order.status,
        "reason_code": order.reason_code,
        "reason": order.reason,
    }


def _event_position(position: Position) -> dict:
    return {
        "symbol": position.symbol_id,
        "quantity": position.quantity,
        "average_price": position.average_price,
        "cost_basis": position.cost_basis,
        "realized_pnl": position.realized_pnl,
        "unrealized_pnl": position.unrealized_pnl,
        "current_price": position.current_price,
    }


# --- plain SQL for the hot writes --------------------------------------------------------------
# The order path writes a dozen rows per order. Each ORM save()/create() compiles its SQL
# again (about 1 ms of Python on the development machine, against 0.3 ms for the statement
# itself), so the writes on that path are plain statements built from the models' own
# metadata (table and column names, the fields' database preparation).


def _qn(name: str) -> str:
    return connection.ops.quote_name(name)


def _update_sql(instance, fields) -> tuple[str, list]:
    """UPDATE of the row of `instance` with its current values of `fields` (attribute names),
    RETURNING its primary key: (sql, params)."""
    meta = type(instance)._meta
    sets, values = [], []
    for name in fields:
        field = meta.get_field(name)
        sets.append(f"{_qn(field.column)} = %s")
        values.append(field.get_db_prep_save(getattr(instance, field.attname), connection))
    values.append(instance.pk)
    pk = _qn(meta.pk.column)
    return (
        f"UPDATE {_qn(meta.db_table)} SET {', '.join(sets)} WHERE {pk} = %s RETURNING {pk}",
        values,
    )


def _insert_parts(instance) -> tuple[str, list[str], list]:
    """(table, columns, values) of an INSERT of `instance`: every concrete field but the auto
    primary key, auto_now stamps set."""
    meta = type(instance)._meta
    fields = [f for f in meta.concrete_fields if not f.primary_key]
    for field in fields:
        field.pre_save(instance, add=True)  # auto_now / auto_now_add stamps
    columns = [_qn(f.column) for f in fields]
    values = [f.get_db_prep_save(getattr(instance, f.attname), connection) for f in fields]
    return _qn(meta.db_table), columns, values


def _insert_sql(instance, *, on_conflict: str = "") -> tuple[str, list]:
    """INSERT of `instance` RETURNING the new primary key: (sql, params)."""
    table, columns, values = _insert_parts(instance)
    pk = _qn(type(instance)._meta.pk.column)
    marks = ", ".join(["%s"] * len(columns))
    conflict = f" ON CONFLICT {on_conflict}" if on_conflict else ""
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}){conflict} RETURNING {pk}",
        values,
    )


_LOCK_SQL: dict[tuple, tuple[str, list]] = {}


def _lock_sql(model, related: tuple[str, ...]) -> tuple[str, list]:
    """(SELECT ... FOR UPDATE OF the row by primary key, joined to its `related` foreign keys;
    per model read back: (model, its foreign key or None for the row itself, its primary key's
    position, [(field, column, the column's converters)]))."""
    key = (model, related)
    if key not in _LOCK_SQL:
        meta = model._meta
        parts = [(model, None, "t")]
        joins = []
        for n, name in enumerate(related):
            fk = meta.get_field(name)
            target = fk.related_model._meta
            alias = f"r{n}"
            parts.append((fk.related_model, fk, alias))
            joins.append(
                f" LEFT JOIN {_qn(target.db_table)} {alias}"
                f" ON {alias}.{_qn(fk.target_field.column)} = t.{_qn(fk.column)}"
            )
        columns, plan = [], []
        for part_model, fk, alias in parts:
            fields = []
            for field in part_model._meta.concrete_fields:
                columns.append(f"{alias}.{_qn(field.column)}")
                col = field.get_col(part_model._meta.db_table)
                converters = connection.ops.get_db_converters(col) + col.get_db_converters(
                    connection
                )
                fields.append((field, col, converters))
            pk_at = [field.primary_key for field, _, _ in fields].index(True)
            plan.append((part_model, fk, pk_at, fields))
        _LOCK_SQL[key] = (
            f"SELECT {', '.join(columns)} FROM {_qn(meta.db_table)} t{''.join(joins)}"
            f" WHERE t.{_qn(meta.pk.column)} = %s FOR UPDATE OF t",
            plan,
        )
    return _LOCK_SQL[key]


def row_lock(model, pk, *, related: tuple[str, ...] = ()):
    """The row of `model` with primary key `pk`, locked (SELECT ... FOR UPDATE OF its table,
    inside atomic), with its `related` foreign keys' rows joined and cached on it (as
    select_for_update(of=("self",)).select_related(*related) would), or None. One plain
    statement: the ORM's query building costs about 1 ms of Python on the order path, the
    statement 0.3 ms."""
    sql, plan = _lock_sql(model, tuple(related))
    with connection.cursor() as cursor:
        cursor.execute(sql, [pk])
        row = cursor.fetchone()
    if row is None:
        return None
    values = iter(row)
    instances = []
    for part_model, fk, pk_at, fields in plan:
        attnames, converted = [], []
        for field, col, converters in fields:
            value = next(values)
            for converter in converters:
                value = converter(value, col, connection)
            attnames.append(field.attname)
            converted.append(value)
        instance = None  # a null foreign key: no row joined
        if converted[pk_at] is not None:
            instance = part_model.from_db(connection.alias, attnames, converted)
        instances.append((fk, instance))
    main = instances[0][1]
    for fk, instance in instances[1:]:
        fk.set_cached_value(main, instance)
    return main


def row_update(instance, fields) -> None:
    """UPDATE the row of `instance` with its current values of `fields` (attribute names)."""
    rows_write(("update", instance, fields))


def row_insert(instance) -> None:
    """INSERT `instance` (every concrete field but the auto primary key); sets its pk."""
    rows_write(("insert", instance))


def rows_write(*writes) -> list:
    """Several writes in ONE round trip: each a data-modifying CTE of one statement.

    `writes`: ("update", instance, fields), ("insert", instance) or ("sql", sql, params[, sink])
    where the sql returns at most one row of one column (appended to the list `sink`, when
    given). Returns per write the value returned (the primary key of the row updated or
    inserted; None when an UPDATE matched nothing) and sets the pk of each inserted instance.
    PostgreSQL runs every data-modifying statement of a WITH to completion, on one snapshot:
    the writes must not depend on each other's effects (two writes of one row are not
    allowed). On the order path a fill is five writes (position, trade, cash, order,
    transition): one round trip instead of five.
    """
    sqls, params, inserted, sinks = [], [], [], []
    for n, write in enumerate(writes):
        kind = write[0]
        if kind == "update":
            sql, values = _update_sql(write[1], write[2])
        elif kind == "insert":
            sql, values = _insert_sql(write[1])
            inserted.append((n, write[1]))
        elif kind == "sql":
            sql, values = write[1], list(write[2])
            if len(write) > 3:
                sinks.append((n, write[3]))
        else:
            raise ValueError(f"rows_write: unknown write kind {kind!r}")
        sqls.append(sql)
        params.extend(values)
    if len(sqls) == 1:
        query = sqls[0]
    else:
        ctes = ", ".join(f"w{n} AS ({sql})" for n, sql in enumerate(sqls))
        picks = ", ".join(f"(SELECT * FROM w{n})" for n in range(len(sqls)))
        query = f"WITH {ctes} SELECT {picks}"
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        row = cursor.fetchone()
    results = list(row) if row is not None else [None] * len(writes)
    for n, instance in inserted:
        instance.pk = results[n]
        instance._state.adding = False
    for n, sink in sinks:
        sink.append(results[n])
    return results


# --- accounts --------------------------------------------------------------------------------


def account_ensure(*, broker: str, initial_cash: Decimal | None = None) -> Account:
    """The broker's account row, created with `initial_cash` (default PAPER_INITIAL_CASH)."""
    if initial_cash is None:
        initial_cash = Decimal(str(getattr(settings, "PAPER_INITIAL_CASH", "100000000")))
    initial_cash = _decimal(initial_cash, "initial_cash")
    if initial_cash < 0:
        raise OrderError(f"initial_cash must not be negative, got {initial_cash}.")
    Account.objects.bulk_create(
        [Account(broker=broker, cash=initial_cash, initial_cash=initial_cash)],
        ignore_conflicts=True,
    )
    return Account.objects.get(broker=broker)


# --- orders ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class OrderRequest:
    """What an order is, before it exists: compared field by field when a client_order_id is
    used again (the same request twice returns the same order; a different one is refused)."""

    symbol: str
    side: str
    order_type: str
    quantity: int
    limit_price: Decimal | None


def _validated_request(
    *, symbol: str, side: str, order_type: str, quantity, limit_price
) -> OrderRequest:
    if side not in Side.values:
        raise OrderError(f"side must be BUY or SELL, got {side!r}.")
    if order_type not in OrderType.values:
        raise OrderError(f"order_type must be MARKET or LIMIT, got {order_type!r}.")
    quantity = _positive_int(quantity, "quantity")
    if order_type == OrderType.LIMIT:
        if limit_price is None:
            raise OrderError("A LIMIT order needs a limit_price.")
        limit_price = _decimal(limit_price, "limit_price")
        if limit_price <= 0:
            raise OrderError(f"limit_price must be positive, got {limit_price}.")
    elif limit_price is not None:
        raise OrderError("A MARKET order takes no limit_price.")
    return OrderRequest(str(symbol), str(side), str(order_type), quantity, limit_price)


def _same_request(order: Order, request: OrderRequest) -> bool:
    return (
        order.symbol_id == request.symbol
        and order.side == request.side
        and order.order_type == request.order_type
        and order.quantity == request.quantity
        and (order.limit_price is None) == (request.limit_price is None)
        and (order.limit_price is None or order.limit_price == request.limit_price)
    )


def order_create(
    *,
    client_order_id: str,
    symbol: str,
    side: str,
    order_type: str,
    quantity: int,
    limit_price: Decimal | None = None,
    strategy: Strategy | None = None,
    signal: Signal | None = None,
    user=None,
    broker: str | None = None,
    actor: str,
    at: dt.datetime | None = None,
    new_key: bool = False,
) -> tuple[Order, bool]:
    """Create a NEW order, or return the one that already has this client_order_id.

    Returns (order, created). The same client_order_id with different terms is a Conflict
    naming the differences; so is a second order for the same signal. `new_key`: the caller
    knows the key unused and the symbol known (the order of a locked PENDING signal), so the
    round trip that looks first is skipped; a stored order with the key still ends as below.
    """
    if not isinstance(client_order_id, str) or not client_order_id.strip():
        raise OrderError("client_order_id must be a non-empty string.")
    if len(client_order_id) > 64:
        raise OrderError(f"client_order_id is {len(client_order_id)} characters; at most 64.")
    request = _validated_request(
        symbol=symbol, side=side, order_type=order_type, quantity=quantity, limit_price=limit_price
    )
    at = _aware(at, "at")
    broker = broker or getattr(settings, "TRADING_BROKER", "paper")
    if not new_key:
        # The key already used? The symbol known? One round trip for both (the order path).
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT (SELECT id FROM {_qn(Order._meta.db_table)} WHERE client_order_id = %s),"
                f" EXISTS (SELECT 1 FROM {_qn(Stock._meta.db_table)} WHERE symbol = %s)",
                [client_order_id, request.symbol],
            )
            existing_id, known = cursor.fetchone()
        if existing_id is not None:
            return _existing(Order.objects.get(pk=existing_id), request), False
        if not known:
            raise OrderError(f"Unknown symbol {request.symbol!r}: not in stocks_metadata.")
    order = Order(
        client_order_id=client_order_id,
        broker=broker,
        strategy=strategy,
        signal=signal,
        user=user,
        symbol_id=request.symbol,
        side=request.side,
        order_type=request.order_type,
        quantity=request.quantity,
        limit_price=request.limit_price,
        status=OrderStatus.NEW,
        created_at=at,
    )
    transition = OrderTransition(
        order=order, from_status="", to_status=OrderStatus.NEW, at=at, actor=actor
    )
    # The order and its first transition in one statement. ON CONFLICT DO NOTHING: a
    # concurrent request with the same client_order_id (or signal) that won the race leaves
    # nothing inserted, without aborting the caller's transaction (no savepoint needed).
    insert_order, order_values = _insert_sql(order, on_conflict="DO NOTHING")
    table, columns, values = _insert_parts(transition)
    fk = _qn(OrderTransition._meta.get_field("order").column)
    picks = ["o.id" if column == fk else "%s" for column in columns]
    values = [v for column, v in zip(columns, values, strict=True) if column != fk]
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH o AS ({insert_order}), t AS (INSERT INTO {table} ({', '.join(columns)})"
            f" SELECT {', '.join(picks)} FROM o RETURNING {fk}) SELECT id FROM o",
            [*order_values, *values],
        )
        row = cursor.fetchone()
    if row is None:
        existing = Order.objects.filter(client_order_id=client_order_id).first()
        if existing is not None:
            return _existing(existing, request), False
        if signal is not None and Order.objects.filter(signal=signal).exists():
            raise Conflict(f"Signal {signal.pk} already has an order.")
        raise Conflict(f"Order {client_order_id!r} conflicts with a stored order.")
    order.pk = row[0]
    order._state.adding = False
    return order, True


def _existing(order: Order, request: OrderRequest) -> Order:
    if not _same_request(order, request):
        raise Conflict(
            f"client_order_id {order.client_order_id!r} is already used by order {order.pk} "
            f"({order.side} {order.quantity} {order.symbol_id} {order.order_type}"
            f"{' @ ' + str(order.limit_price) if order.limit_price is not None else ''}); "
            "a repeated request must carry the same terms.",
            code="idempotency_conflict",
        )
    return order


_STAMPS = {
    OrderStatus.SUBMITTED: "submitted_at",
    OrderStatus.ACCEPTED: "accepted_at",
}


def order_transition(
    order: Order,
    to_status: str,
    *,
    actor: str,
    reason: str = "",
    reason_code: str = "",
    at: dt.datetime | None = None,
    broker_order_id: str | None = None,
    also: tuple[str, ...] = (),
    extra_writes: tuple = (),
) -> Order:
    """Move a locked order (select_for_update, inside atomic) to `to_status` and record it.

    The state machine (trading.states) decides; an illegal move raises IllegalTransition and
    changes nothing. Publishes order_placed (SUBMITTED) and order_rejected (REJECTED, DENIED)
    on commit. `also`: more fields the caller changed on `order`, written in the same UPDATE;
    `extra_writes`: more rows_write() writes sent in the same round trip (a fill's rows).
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("order_transition() must run inside transaction.atomic().")
    at = _aware(at, "at")
    from_status = order.status
    check_transition(from_status, to_status, order=f"Order {order.client_order_id}")
    order.status = to_status
    order.updated_at = timezone.now()
    fields = ["status", "updated_at", *also]
    stamp = _STAMPS.get(to_status)
    if stamp and getattr(order, stamp) is None:
        setattr(order, stamp, at)
        fields.append(stamp)
    if is_final(to_status):
        order.closed_at = at
        fields.append("closed_at")
    if reason:
        order.reason = reason
        fields.append("reason")
    if reason_code:
        order.reason_code = reason_code
        fields.append("reason_code")
    if broker_order_id:
        order.broker_order_id = broker_order_id
        fields.append("broker_order_id")
    rows_write(
        ("update", order, fields),
        (
            "insert",
            OrderTransition(
                order=order,
                from_status=from_status,
                to_status=to_status,
                at=at,
                actor=actor,
                reason=reason,
                filled_quantity=order.filled_quantity,
            ),
        ),
        *extra_writes,
    )
    if to_status == OrderStatus.SUBMITTED:
        publish(EventType.ORDER_PLACED, _event_order(order), source=SOURCE)
    elif to_status in (OrderStatus.REJECTED, OrderStatus.DENIED):
        publish(EventType.ORDER_REJECTED, _event_order(order), source=SOURCE)
    return order


def order_lock(order_id: int) -> Order:
    """The order, locked (row_lock) with its symbol and strategy, inside atomic; NotFound
    naming the id."""
    order = row_lock(Order, order_id, related=("symbol", "strategy"))
    if order is None:
        raise NotFound(f"No order {order_id}.")
    return order


def order_set_status(
    *,
    order_id: int,
    to_status: str,
    actor: str,
    reason: str = "",
    reason_code: str = "",
    at: dt.datetime | None = None,
    broker_order_id: str | None = None,
) -> Order:
    """order_transition() in its own transaction, the order locked."""
    with transaction.atomic():
        order = order_lock(order_id)
        return order_transition(
            order,
            to_status,
            actor=actor,
            reason=reason,
            reason_code=reason_code,
            at=at,
            broker_order_id=broker_order_id,
        )


def order_request_cancel(*, order_id: int, actor: str, reason: str = "") -> Order:
    """Ask for a cancel: a NEW order (never sent) is CANCELED at once; a live one goes to
    CANCEL_PENDING until the broker confirms. Asking again while pending changes nothing.
    A final order cannot be canceled (IllegalTransition naming its status)."""
    with transaction.atomic():
        order = order_lock(order_id)
        if order.status == OrderStatus.CANCEL_PENDING:
            return order
        if order.status not in CANCELABLE:
            raise IllegalTransition(
                f"Order {order.client_order_id} is {order.status}; only "
                f"{', '.join(sorted(CANCELABLE))} orders can be canceled."
            )
        target = (
            OrderStatus.CANCELED if order.status == OrderStatus.NEW else OrderStatus.CANCEL_PENDING
        )
        return order_transition(order, target, actor=actor, reason=reason or "Cancel requested.")


# --- fills -----------------------------------------------------------------------------------


_POSITION_FIELDS = [f for f in Position._meta.concrete_fields]


def _locked_position(symbol: str) -> Position:
    """The symbol's position row, created if missing, locked: one statement (an upsert whose
    ON CONFLICT DO UPDATE locks the existing row), so two first fills cannot race."""
    meta = Position._meta
    columns = ", ".join(_qn(f.column) for f in _POSITION_FIELDS)
    blank = Position(symbol_id=symbol)
    for field in _POSITION_FIELDS:
        field.pre_save(blank, add=True)
    inserted = [f for f in _POSITION_FIELDS if not f.primary_key]
    symbol_column = _qn(meta.get_field("symbol").column)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {_qn(meta.db_table)} ({', '.join(_qn(f.column) for f in inserted)})"
            f" VALUES ({', '.join(['%s'] * len(inserted))})"
            f" ON CONFLICT ({symbol_column})"
            f" DO UPDATE SET {symbol_column} = EXCLUDED.{symbol_column}"
            f" RETURNING {columns}",
            [f.get_db_prep_save(getattr(blank, f.attname), connection) for f in inserted],
        )
        row = cursor.fetchone()
    return Position.from_db(connection.alias, [f.attname for f in _POSITION_FIELDS], row)


def position_apply(
    position: Position, *, side: str, quantity: int, price: Decimal, commission: Decimal,
    tax: Decimal,
) -> Decimal | None:  # fmt: skip
    """Apply one fill to a position in memory; returns the realized PnL of a sell (None for
    a buy). The one place that knows the position arithmetic (reconcile replays it)."""
    amount = price * quantity
    if side == Side.BUY:
        held = position.quantity
        position.quantity = held + quantity
        position.average_price = (
            (position.average_price * held + amount) / position.quantity
        ).quantize(_PLACES, rounding=ROUND_HALF_EVEN)
        position.cost_basis += amount + commission
        realized = None
    else:
        held = position.quantity
        if quantity > held:
            raise FillError(
                f"A sell of {quantity} {position.symbol_id} exceeds the {held} held "
                "(QB is long only)."
            )
        if quantity == held:
            removed = position.cost_basis
        else:
            removed = (position.cost_basis * quantity / held).quantize(
                _PLACES, rounding=ROUND_HALF_EVEN
            )
        realized = amount - commission - tax - removed
        position.cost_basis -= removed
        position.quantity = held - quantity
        position.realized_pnl += realized
        if position.quantity == 0:
            position.average_price = _ZERO
            position.cost_basis = _ZERO
    if position.quantity == 0:
        position.unrealized_pnl = _ZERO
    elif position.current_price is not None:
        position.unrealized_pnl = position.current_price * position.quantity - position.cost_basis
    return realized


_ACCOUNT_ADD_SQL = (
    f"UPDATE {_qn(Account._meta.db_table)} SET cash = cash + %s, updated_at = %s"
    " WHERE broker = %s RETURNING id"
)


def _account_add(broker: str, amount: Decimal) -> bool:
    """cash += amount on the broker's account row (locked by the UPDATE itself); False when the
    row does not exist."""
    with connection.cursor() as cursor:
        cursor.execute(_ACCOUNT_ADD_SQL, [amount, timezone.now(), broker])
        return cursor.fetchone() is not None


_POSITION_FILL_FIELDS = (
    "quantity", "average_price", "cost_basis", "unrealized_pnl", "realized_pnl", "updated_at",
)  # fmt: skip
_ORDER_FILL_FIELDS = ("filled_quantity", "average_fill_price", "last_fill_at")


def order_apply_fill(
    *,
    order_id: int,
    execution_id: str,
    quantity: int,
    price,
    at: dt.datetime | None = None,
    actor: str = "broker",
    locked: Order | None = None,
) -> Trade | None:
    """Apply one execution of an order. Returns the new trade, or None when this execution
    (order, execution_id) was applied before. Raises FillError for a fill that cannot be
    (more than the order's remaining quantity, a sell of more than is held, a final order).

    `locked`: the order as the caller locked it (order_lock) inside its own transaction, which
    the fill then joins (no second read, no savepoint): a FillError is raised before anything
    is written, so the caller may catch it and go on."""
    if not isinstance(execution_id, str) or not execution_id.strip():
        raise FillError("A fill needs the broker's execution_id.")
    quantity = _positive_int(quantity, "fill quantity")
    price = _decimal(price, "fill price")
    if price <= 0:
        raise OrderError(f"fill price must be positive, got {price}.")
    at = _aware(at, "fill time")
    if locked is not None:
        if locked.pk != order_id or not transaction.get_connection().in_atomic_block:
            raise RuntimeError("order_apply_fill(locked=...) takes the order locked in atomic.")
        return _apply_fill(locked, execution_id, quantity, price, at, actor)
    with transaction.atomic():
        return _apply_fill(order_lock(order_id), execution_id, quantity, price, at, actor)


def _apply_fill(order: Order, execution_id, quantity, price, at, actor) -> Trade | None:
    """order_apply_fill on a locked order: the checks (which write nothing), then the position
    locked, then its five writes (position, trade, cash, order, transition) in one round trip."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT 1 FROM {_qn(Trade._meta.db_table)} WHERE order_id = %s AND execution_id = %s",
            [order.pk, execution_id],
        )
        if cursor.fetchone() is not None:
            return None
    if order.status not in OPEN:
        raise FillError(
            f"Order {order.client_order_id} is {order.status}; it cannot take a fill "
            f"({execution_id}: {quantity} @ {price})."
        )
    if quantity > order.remaining_quantity:
        raise FillError(
            f"Fill {execution_id} of {quantity} exceeds order {order.client_order_id}'s "
            f"remaining {order.remaining_quantity} (of {order.quantity})."
        )
    amount = price * quantity
    commission, tax = fill_costs(side=order.side, amount=amount, market=order.symbol.market, at=at)
    position = _locked_position(order.symbol_id)
    realized = position_apply(
        position, side=order.side, quantity=quantity, price=price, commission=commission, tax=tax
    )
    now = timezone.now()
    position.updated_at = now
    trade = Trade(
        timestamp=at,
        symbol_id=order.symbol_id,
        side=order.side,
        quantity=quantity,
        price=price,
        commission=commission,
        tax=tax,
        strategy=order.strategy.name if order.strategy_id else "",
        order_type=order.order_type,
        profit_loss=realized,
        order=order,
        execution_id=execution_id,
    )
    change = -(amount + commission) if order.side == Side.BUY else amount - commission - tax
    account: list = []
    writes = (
        ("update", position, _POSITION_FILL_FIELDS),
        ("insert", trade),
        ("sql", _ACCOUNT_ADD_SQL, [change, now, order.broker], account),
    )
    filled = order.filled_quantity + quantity
    previous = (order.average_fill_price or _ZERO) * order.filled_quantity
    order.average_fill_price = ((previous + amount) / filled).quantize(
        _PLACES, rounding=ROUND_HALF_EVEN
    )
    order.filled_quantity = filled
    order.last_fill_at = at
    if filled == order.quantity or order.status != OrderStatus.CANCEL_PENDING:
        status = OrderStatus.FILLED if filled == order.quantity else OrderStatus.PARTIALLY_FILLED
        order_transition(
            order, status, actor=actor, at=at, also=_ORDER_FILL_FIELDS, extra_writes=writes
        )
    else:
        # A partial fill while a cancel is pending leaves the cancel pending.
        order.updated_at = now
        rows_write(("update", order, (*_ORDER_FILL_FIELDS, "updated_at")), *writes)
    if trade.pk is None:
        raise FillError(f"Fill {execution_id} of order {order.client_order_id} was not stored.")
    if account == [None]:
        # No account row for this broker yet (its first fill): the cash change missed.
        account_ensure(broker=order.broker)
        _account_add(order.broker, change)
    fill_event = {
        **_event_order(order),
        "execution_id": execution_id,
        "fill_quantity": quantity,
        "fill_price": price,
        "commission": commission,
        "tax": tax,
        "realized_pnl": realized,
        "trade_id": trade.pk,
        "time": at,
    }
    publish(EventType.ORDER_EXECUTED, fill_event, source=SOURCE)
    publish(EventType.POSITION_UPDATED, _event_position(position), source=SOURCE)
    return trade


def position_mark(*, symbol: str, price, at: dt.datetime | None = None) -> Position | None:
    """Mark a position to `price` (the latest quote): current_price and unrealized PnL.
    None when there is no position in the symbol."""
    price = _decimal(price, "price")
    if price <= 0:
        raise OrderError(f"price must be positive, got {price}.")
    with transaction.atomic():
        position = Position.objects.select_for_update().filter(symbol_id=symbol).first()
        if position is None:
            return None
        position.current_price = price
        position.unrealized_pnl = (
            price * position.quantity - position.cost_basis if position.quantity else _ZERO
        )
        position.save(update_fields=["current_price", "unrealized_pnl", "updated_at"])
    return position


__all__ = [
    "FillError",
    "OrderError",
    "account_ensure",
    "fill_costs",
    "order_apply_fill",
    "order_create",
    "order_lock",
    "order_request_cancel",
    "order_set_status",
    "order_transition",
    "position_apply",
    "position_mark",
    "row_insert",
    "row_update",
    "tax_trade_date",
]
