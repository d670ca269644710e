"""Small factories for the API tests. Stocks and candles go through marketdata.services; the
ledger tables have no write services yet (later issues), so they are created directly."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from marketdata.services import candle_upsert, stock_upsert
from ops.models import SystemLog
from risk.models import RiskMetric
from trading.models import Position, StrategyPerformance, Trade

T0 = datetime(2024, 5, 2, 0, 0, tzinfo=UTC)  # 09:00 in Seoul, the KRX open

# A valid candle as the API takes it (POST /api/v1/market-data/).
CANDLE = {
    "symbol": "005930",
    "interval": "1m",
    "time": "2024-05-02T09:05:00+09:00",
    "open": "70000",
    "high": "70500",
    "low": "69900",
    "close": "70200",
    "volume": 1200,
}


def make_stock(symbol="005930", name="Samsung Electronics", market="KOSPI", sector="Tech"):
    return stock_upsert(symbol=symbol, name=name, market=market, sector=sector)[0]


def make_candle(symbol="005930", interval="1m", time=T0, close="70000", volume=100):
    close = Decimal(close)
    return candle_upsert(
        symbol=symbol,
        interval=interval,
        time=time,
        open=close,
        high=close + 100,
        low=close - 100,
        close=close,
        volume=volume,
    )[0]


def make_trade(stock, *, timestamp=T0, side="BUY", strategy="sma", status="PENDING", qty=10):
    return Trade.objects.create(
        timestamp=timestamp,
        symbol=stock,
        side=side,
        quantity=qty,
        price=Decimal("70000"),
        commission=Decimal("10.5"),
        tax=Decimal("0"),
        strategy=strategy,
        order_type="LIMIT",
        status=status,
        profit_loss=Decimal("1000") if side == "SELL" else None,
    )


def make_position(stock, *, quantity=10):
    return Position.objects.create(
        symbol=stock,
        quantity=quantity,
        average_price=Decimal("70000") if quantity else Decimal("0"),
        current_price=Decimal("71000"),
        unrealized_pnl=Decimal("10000") if quantity else Decimal("0"),
    )


def make_performance(strategy="sma", day=date(2024, 5, 2)):
    return StrategyPerformance.objects.create(
        strategy=strategy, date=day, total_return=Decimal("0.0123"), trades_count=3
    )


def make_risk_metric(timestamp=T0):
    return RiskMetric.objects.create(timestamp=timestamp, portfolio_value=Decimal("100000000"))


def make_log(timestamp=T0, level="WARNING", component="qb.collector", message="feed slow"):
    return SystemLog.objects.create(
        timestamp=timestamp, level=level, component=component, message=message
    )


def minutes(n: int) -> timedelta:
    return timedelta(minutes=n)


def walk(api, url: str) -> list[dict]:
    """Follow `next` links to the end; return every row seen (asserting 200 on each page)."""
    rows = []
    while url:
        response = api.get(url)
        assert response.status_code == 200, response.content
        rows.extend(response.data["results"])
        url = response.data["next"]
    return rows
