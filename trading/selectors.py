"""Reads of the trading core that join or prefetch: orders with their history, accounts."""

from __future__ import annotations

from django.db.models import Prefetch, QuerySet

from .models import Account, Order, OrderTransition, Trade


def order_list() -> QuerySet[Order]:
    """Orders with what their list rows show (strategy name, placing user) in one query."""
    return Order.objects.select_related("strategy", "user")


def order_detail() -> QuerySet[Order]:
    """order_list() plus each order's transitions and fills, oldest first (two more queries
    for any number of orders)."""
    return order_list().prefetch_related(
        Prefetch("transitions", queryset=OrderTransition.objects.order_by("id")),
        Prefetch("fills", queryset=Trade.objects.order_by("id")),
    )


def order_get(*, order_id: int) -> Order:
    return order_detail().get(pk=order_id)


def order_by_client_id(*, client_order_id: str) -> Order | None:
    return Order.objects.filter(client_order_id=client_order_id).only("pk", "user_id").first()


def account_list() -> QuerySet[Account]:
    return Account.objects.order_by("broker")


__all__ = ["account_list", "order_by_client_id", "order_detail", "order_get", "order_list"]
