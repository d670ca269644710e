"""Reads for the strategy engine and the admin: enabled strategies and what each holds."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from django.db import connection

from trading.models import Order, Side, Strategy, Trade, TradeStatus
from trading.states import FINAL


class Holding(NamedTuple):
    """A strategy's shares in one symbol: held (net of its own trades) and still to fill in
    its unfinished orders."""

    holding: int = 0
    open_buy: int = 0
    open_sell: int = 0


def strategies_enabled() -> list[Strategy]:
    return list(Strategy.objects.filter(enabled=True).order_by("name"))


def _holdings_sql() -> str:
    quote = connection.ops.quote_name

    def col(model, field):
        return quote(model._meta.get_field(field).column)

    trades, orders = quote(Trade._meta.db_table), quote(Order._meta.db_table)
    return (
        f"SELECT 0, {col(Trade, 'strategy')}, '',"
        f" SUM(CASE WHEN {col(Trade, 'side')} = %s THEN {col(Trade, 'quantity')}"
        f" ELSE -{col(Trade, 'quantity')} END)"
        f" FROM {trades} WHERE {col(Trade, 'symbol')} = %s AND {col(Trade, 'strategy')} = ANY(%s)"
        f" AND {col(Trade, 'status')} <> %s GROUP BY {col(Trade, 'strategy')}"
        " UNION ALL"
        f" SELECT 1, {col(Order, 'strategy')}::text, {col(Order, 'side')},"
        f" SUM({col(Order, 'quantity')} - {col(Order, 'filled_quantity')})"
        f" FROM {orders} WHERE {col(Order, 'symbol')} = %s AND {col(Order, 'strategy')} = ANY(%s)"
        f" AND NOT ({col(Order, 'status')} = ANY(%s))"
        f" GROUP BY {col(Order, 'strategy')}, {col(Order, 'side')}"
    )


_HOLDINGS_SQL: str | None = None


def strategy_holdings(*, symbol: str, strategies: Iterable[Strategy]) -> dict[int, Holding]:
    """{strategy id: Holding} in `symbol` for each of `strategies`: one query, any number.

    Held = BUY minus SELL quantities of the trades recorded under the strategy's name (busted
    trades excluded, as reconcile and performance do). Open = quantity - filled of its orders
    that are not final yet (NEW included: an order being submitted is on its way).
    On the strategy engine's path for every candle: one plain SQL round trip (the ORM's two
    aggregates cost several times more).
    """
    global _HOLDINGS_SQL
    strategies = list(strategies)
    if not strategies:
        return {}
    if _HOLDINGS_SQL is None:
        _HOLDINGS_SQL = _holdings_sql()
    by_name = {s.name: s.pk for s in strategies}
    held = dict.fromkeys(by_name.values(), 0)
    pending: dict[tuple[int, str], int] = {}
    with connection.cursor() as cursor:
        cursor.execute(
            _HOLDINGS_SQL,
            [
                Side.BUY.value,
                symbol,
                list(by_name),
                TradeStatus.CANCELED.value,
                symbol,
                list(held),
                sorted(FINAL),
            ],
        )
        for part, key, side, quantity in cursor.fetchall():
            if part == 0:
                held[by_name[key]] = int(quantity or 0)
            else:
                pending[(int(key), side)] = int(quantity or 0)
    return {
        pk: Holding(
            holding=held[pk],
            open_buy=pending.get((pk, Side.BUY), 0),
            open_sell=pending.get((pk, Side.SELL), 0),
        )
        for pk in held
    }
