"""Reads of the risk app."""

from __future__ import annotations

import datetime as dt

from django.db.models import Q, QuerySet

from .models import LimitChange, RiskAlert, RiskLock, TradingStateChange


def locks_active(now: dt.datetime, *, symbol: str | None = None, strategy=None) -> QuerySet:
    """Locks in force at `now` (not removed, until after now), newest first. With `symbol`
    and/or `strategy` (a Strategy or its id): the ones that apply to an order of them (the
    lock's symbol is theirs or empty, and the same for its strategy)."""
    locks = RiskLock.objects.filter(removed_at__isnull=True, until__gt=now, created_at__lte=now)
    if symbol is not None:
        locks = locks.filter(Q(symbol__isnull=True) | Q(symbol_id=symbol))
    if strategy is not None:
        pk = getattr(strategy, "pk", strategy)
        locks = locks.filter(Q(strategy__isnull=True) | Q(strategy_id=pk))
    return locks.select_related("strategy").order_by("-created_at", "-id")


def limit_changes(*, field: str | None = None) -> QuerySet:
    changes = LimitChange.objects.select_related("changed_by")
    return changes.filter(field=field) if field else changes


def trading_state_history() -> QuerySet:
    return TradingStateChange.objects.all()


def alerts_recent(*, since: dt.datetime | None = None) -> QuerySet:
    alerts = RiskAlert.objects.all()
    return alerts.filter(created_at__gte=since) if since else alerts


__all__ = ["alerts_recent", "limit_changes", "locks_active", "trading_state_history"]
