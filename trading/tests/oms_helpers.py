"""Small factories for the OMS, paper broker, engine and crash tests: quotes in Redis the way
the collector writes them, strategies, signals, and the ledger invariants they all assert."""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal

from marketdata import krx
from marketdata.keys import quote_key
from trading import services
from trading.models import Account, Order, Position, Signal, Strategy, Trade

D = Decimal
T0 = dt.datetime(2026, 11, 25, 1, 0, tzinfo=dt.UTC)  # a candle time (Wednesday 10:00 KST)
_minutes = itertools.count()


def put_quote(client, symbol="005930", close=70000, *, prev_close=70000, at=None, market="KOSPI"):
    """market:{symbol} as the collector writes it (strings; the band from prev_close)."""
    at = at or dt.datetime.now(dt.UTC)
    instrument = "etf" if market == "ETF" else "stock"
    limits = krx.price_limits(D(prev_close), instrument=instrument, market=market)
    change = D(close) - D(prev_close)
    client.hset(
        quote_key(symbol),
        mapping={
            "timestamp": at.isoformat(),
            "open": str(prev_close),
            "high": str(max(close, prev_close)),
            "low": str(min(close, prev_close)),
            "close": str(close),
            "volume": "1000",
            "prev_close": str(prev_close),
            "change": str(change),
            "change_rate": str((change * 100 / D(prev_close)).quantize(D("0.01"))),
            "upper_limit": str(limits.upper),
            "lower_limit": str(limits.lower),
        },
    )
    return at


def make_strategy(name="sma-a", *, symbols=("005930",), allocation="10000000", enabled=True):
    return Strategy.objects.create(
        name=name,
        kind="sma_crossover",
        symbols=list(symbols),
        capital_allocation=D(allocation),
        enabled=enabled,
    )


def make_signal(strategy, *, symbol="005930", action="BUY", price="70000", quantity=None, at=None):
    return Signal.objects.create(
        strategy=strategy,
        symbol_id=symbol,
        interval="1m",
        time=at or T0 + dt.timedelta(minutes=next(_minutes)),
        action=action,
        price=D(price),
        quantity=quantity,
        reason="test",
    )


def paper_account(cash="10000000"):
    return services.account_ensure(broker="paper", initial_cash=D(cash))


def assert_ledger_consistent(broker="paper") -> None:
    """The invariants every test of the money path ends with:
    - each order's filled quantity and average price are what its trades add up to;
    - each position equals the replay of its trades (services.position_apply);
    - the account's cash is the initial cash less buys (with commission) plus sells (net of
      commission and tax)."""
    for order in Order.objects.filter(broker=broker):
        fills = list(order.fills.order_by("id"))
        assert order.filled_quantity == sum(t.quantity for t in fills), order
        if fills:
            amount = sum(t.price * t.quantity for t in fills)
            assert order.average_fill_price == (amount / order.filled_quantity).quantize(
                D("0.0001")
            ), order
    for position in Position.objects.all():
        replay = Position(symbol_id=position.symbol_id)
        # Application order: ids are taken under the position lock.
        for trade in Trade.objects.filter(symbol_id=position.symbol_id).order_by("id"):
            services.position_apply(
                replay,
                side=trade.side,
                quantity=trade.quantity,
                price=trade.price,
                commission=trade.commission,
                tax=trade.tax,
            )
        assert (replay.quantity, replay.cost_basis, replay.realized_pnl) == (
            position.quantity,
            position.cost_basis,
            position.realized_pnl,
        ), position.symbol_id
        assert replay.average_price == position.average_price, position.symbol_id
    account = Account.objects.filter(broker=broker).first()
    if account is not None:
        cash = account.initial_cash
        for trade in Trade.objects.filter(order__broker=broker):
            if trade.side == "BUY":
                cash -= trade.price * trade.quantity + trade.commission
            else:
                cash += trade.price * trade.quantity - trade.commission - trade.tax
        assert account.cash == cash
