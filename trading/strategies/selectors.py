"""Reads for the strategy engine and the admin: enabled strategies and what each holds."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from django.db.models import Case, F, IntegerField, Sum, When

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


def strategy_holdings(*, symbol: str, strategies: Iterable[Strategy]) -> dict[int, Holding]:
    """{strategy id: Holding} in `symbol` for each of `strategies` (two queries, any number).

    Held = BUY minus SELL quantities of the trades recorded under the strategy's name (busted
    trades excluded). Open = quantity - filled of its orders that are not final yet (NEW
    included: an order being submitted is on its way).
    """
    strategies = list(strategies)
    if not strategies:
        return {}
    by_name = {s.name: s.pk for s in strategies}
    held = dict.fromkeys(by_name.values(), 0)
    signed = Case(
        When(side=Side.BUY, then=F("quantity")),
        default=-F("quantity"),
        output_field=IntegerField(),
    )
    rows = (
        Trade.objects.filter(symbol_id=symbol, strategy__in=list(by_name))
        .exclude(status=TradeStatus.CANCELED)
        .values_list("strategy")
        .annotate(net=Sum(signed))
        .order_by()
    )
    for name, net in rows:
        held[by_name[name]] = int(net or 0)
    pending: dict[tuple[int, str], int] = {}
    orders = (
        Order.objects.filter(symbol_id=symbol, strategy_id__in=list(held))
        .exclude(status__in=FINAL)
        .values_list("strategy_id", "side")
        .annotate(rest=Sum(F("quantity") - F("filled_quantity")))
        .order_by()
    )
    for strategy_id, side, rest in orders:
        pending[(strategy_id, side)] = int(rest or 0)
    return {
        pk: Holding(
            holding=held[pk],
            open_buy=pending.get((pk, Side.BUY), 0),
            open_sell=pending.get((pk, Side.SELL), 0),
        )
        for pk in held
    }
