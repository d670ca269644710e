"""Writes to market data: stock metadata and candles."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from django.db import transaction
from django.db.models import ProtectedError

from marketdata.models import MarketData, Stock
from qbsite.exceptions import Conflict, InvalidInput

_STOCK_FIELDS = ("name", "sector", "market", "market_cap", "shares_outstanding")
_CANDLE_VALUES = ("open", "high", "low", "close", "volume")


def stock_upsert(
    *,
    symbol: str,
    name: str,
    market: str,
    sector: str = "",
    market_cap: int | None = None,
    shares_outstanding: int | None = None,
) -> tuple[Stock, bool]:
    """Create the stock or replace all its metadata. Returns (stock, created)."""
    with transaction.atomic():
        stock = Stock.objects.select_for_update().filter(pk=symbol).first()
        created = stock is None
        if created:
            stock = Stock(symbol=symbol)
        stock.name = name
        stock.market = market
        stock.sector = sector
        stock.market_cap = market_cap
        stock.shares_outstanding = shares_outstanding
        stock.full_clean(validate_unique=created)
        stock.save(force_insert=created)
    return stock, created


def stock_update(*, stock: Stock, **changes) -> Stock:
    """Change some metadata fields of a stock (its symbol never changes: it is the key)."""
    unknown = set(changes) - set(_STOCK_FIELDS)
    if unknown:
        raise InvalidInput(f"Cannot change {', '.join(sorted(unknown))} of a stock.")
    if not changes:
        return stock
    for name, value in changes.items():
        setattr(stock, name, value)
    stock.full_clean(validate_unique=False)
    with transaction.atomic():
        stock.save(update_fields=[*changes, "updated_at"])
    return stock


def stock_delete(*, stock: Stock) -> None:
    """Delete a stock nothing refers to. One with trades or a position stays (the ledger)."""
    try:
        with transaction.atomic():
            stock.delete()
    except ProtectedError:
        raise Conflict(
            f"Stock {stock.symbol} has trades or a position and cannot be deleted.",
            code="protected",
        ) from None


def candle_upsert(
    *,
    symbol: str,
    interval: str,
    time: datetime,
    open: Decimal,
    high: Decimal,
    low: Decimal,
    close: Decimal,
    volume: int,
) -> tuple[MarketData, bool]:
    """Insert a candle, or correct the one already stored at (symbol, interval, time).

    Returns (candle, created). The write is one INSERT ... ON CONFLICT DO UPDATE, the same
    idempotent upsert the archiver relies on, so a retried or concurrent request cannot fail
    or duplicate; `created` comes from a look just before and is only informative when two
    requests race on the same candle.
    """
    if time.tzinfo is None:
        raise InvalidInput("A candle's time needs a timezone.", details={"time": "naive"})
    candle = MarketData(
        symbol=symbol,
        interval=interval,
        time=time,
        open=open,
        high=high,
        low=low,
        close=close,
        volume=volume,
    )
    # The key may exist already: that is the point of an upsert, not an error.
    candle.full_clean(validate_unique=False)
    with transaction.atomic():
        created = not MarketData.objects.filter(
            symbol=symbol, interval=interval, time=time
        ).exists()
        MarketData.objects.bulk_create(
            [candle],
            update_conflicts=True,
            unique_fields=["symbol", "interval", "time"],
            update_fields=list(_CANDLE_VALUES),
        )
    return candle, created
