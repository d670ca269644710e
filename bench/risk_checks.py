"""Pre-trade check cost per order, with a realistic portfolio, against the trading core's path.

    python bench/risk_checks.py [--orders 300] [--runs 3000] [--db 12]

Runs in its own PostgreSQL database, qb_bench_risk (created and migrated when missing; its
trading and risk tables emptied at the start), and the Redis database --db (flushed before and
after). Seeds 60 stocks in 10 sectors with quotes, 50 open positions, 20 strategies, a month of
history (2,000 filled orders, their 2,000 trades, half of them sells with realized PnL), 40
resting limit orders and 25 locks (5 live). The limits are opened wide (risk.testing.PERMISSIVE)
so that every order passes every rule: each rule runs to its end.

Per order, p50 / p99 (microseconds):
  floor   SELECT 1 round trip
  (a)     checks.run on a CheckInput already built (every rule, pure)
  base-b  the trading core's gathering before the risk rules (account lock + its one figures
          statement, the same SQL as before issue 5) + run, inside a transaction
  (b)     oms.check_inputs (account + trading state lock, the one figures statement) + run
  base-c  oms.order_place with the paper broker (market orders of 1 share, buy and sell in
          turn: created, checked, submitted, filled) with check_inputs swapped for base-b's
  (c)     the same with the real check_inputs
and the ratios (b)/base-b and (c)/base-c.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BASE_DIR))
DB_NAME = "qb_bench_risk"


def _pct(samples, q):
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _report(name, samples):
    p50, p99 = _pct(samples, 0.50), _pct(samples, 0.99)
    print(f"  {name:<8} p50 {p50:9.1f} us   p99 {p99:9.1f} us   (n={len(samples)})")
    return p50, p99


def _setup(redis_db: int) -> None:
    import psycopg

    base = os.environ.get("DATABASE_URL", "postgres://postgres@localhost:5432/qb")
    root, _, _ = base.rpartition("/")
    with psycopg.connect(f"{root}/postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DB_NAME]).fetchone():
            conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    os.environ["DATABASE_URL"] = f"{root}/{DB_NAME}"
    redis = os.environ.get("REDIS_URL", "redis://localhost:6379/0").rpartition("/")[0]
    os.environ["REDIS_URL"] = f"{redis}/{redis_db}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "qbsite.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def _seed():
    import datetime as dt
    import random
    from decimal import Decimal as D  # noqa: N817

    import redis
    from django.conf import settings
    from django.db import connection
    from django.utils import timezone

    from marketdata.keys import quote_key
    from marketdata.models import Stock
    from risk import services as risk_services
    from risk.models import RiskLock
    from risk.testing import limits_permissive
    from trading.models import Account, Order, Position, Strategy, Trade

    rng = random.Random(5)
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE order_transitions, trades, orders, signals, positions, accounts, "
            "risk_locks, risk_alerts, risk_limit_changes, trading_state_changes, strategies "
            "RESTART IDENTITY CASCADE"
        )
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.flushdb()
    symbols = [f"{100000 + i * 10:06d}" for i in range(60)]
    now = timezone.now()
    for i, symbol in enumerate(symbols):
        Stock.objects.update_or_create(
            symbol=symbol,
            defaults={"name": f"Bench {i}", "market": "KOSPI", "sector": f"Sector {i % 10}"},
        )
        client.hset(
            quote_key(symbol),
            mapping={
                "timestamp": now.isoformat(),
                "open": "50000",
                "high": "50000",
                "low": "50000",
                "close": "50000",
                "volume": "1000",
                "prev_close": "50000",
                "change": "0",
                "change_rate": "0",
                "upper_limit": "65000",
                "lower_limit": "35000",
            },
        )
    Account.objects.create(broker="paper", cash=D(10**9), initial_cash=D(10**9))
    strategies = [
        Strategy.objects.create(
            name=f"bench-{n}",
            kind="sma_crossover",
            symbols=symbols[n : n + 3],
            capital_allocation=D(10**7),
            enabled=True,
        )
        for n in range(20)
    ]
    Position.objects.bulk_create(
        Position(
            symbol_id=symbol,
            quantity=100 + i,
            average_price=D(48000),
            cost_basis=D(48000) * (100 + i),
            current_price=D(50000),
        )
        for i, symbol in enumerate(symbols[:50])
    )
    orders, trades = [], []
    start = now - dt.timedelta(days=27)
    for n in range(2000):
        at = start + dt.timedelta(minutes=17 * n)
        side = "BUY" if n % 2 == 0 else "SELL"
        orders.append(
            Order(
                client_order_id=f"hist-{n}",
                symbol_id=rng.choice(symbols[:50]),
                side=side,
                order_type="MARKET",
                quantity=10,
                filled_quantity=10,
                average_fill_price=D(50000),
                status="FILLED",
                strategy=rng.choice(strategies),
                created_at=at,
                submitted_at=at,
                closed_at=at,
            )
        )
    Order.objects.bulk_create(orders)
    for order in orders:
        sell = order.side == "SELL"
        trades.append(
            Trade(
                timestamp=order.created_at,
                symbol_id=order.symbol_id,
                side=order.side,
                quantity=10,
                price=D(50000),
                strategy=order.strategy.name,
                order_type="MARKET",
                status="SETTLED",
                order=order,
                execution_id=f"x-{order.pk}",
                profit_loss=D(rng.randint(-3000, 5000)) if sell else None,
            )
        )
    Trade.objects.bulk_create(trades)
    Order.objects.bulk_create(
        Order(
            client_order_id=f"rest-{n}",
            symbol_id=symbols[n % 50],
            side="BUY" if n % 2 else "SELL",
            order_type="LIMIT",
            limit_price=D(40000) if n % 2 else D(60000),
            quantity=1,
            status="ACCEPTED",
            created_at=now,
            submitted_at=now - dt.timedelta(hours=1),
        )
        for n in range(40)
    )
    for n in range(25):
        live = n < 5
        RiskLock.objects.create(
            kind="COOLDOWN",
            symbol_id=symbols[55 + n % 5],
            reason="bench",
            created_by="bench",
            created_at=now - dt.timedelta(hours=2),
            until=now + dt.timedelta(hours=1) if live else now - dt.timedelta(hours=1),
        )
    limits_permissive()
    risk_services.limits_reset_cache()
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return symbols, strategies, client


# The trading core's gathering before issue 5 (trading/oms.py at 3626d51), for the baseline.
_OLD_SQL = """
SELECT
  (SELECT market FROM stocks_metadata WHERE symbol = %(symbol)s),
  COALESCE((SELECT quantity FROM positions WHERE symbol = %(symbol)s), 0),
  COALESCE(SUM(quantity - filled_quantity)
           FILTER (WHERE side = 'SELL' AND symbol = %(symbol)s), 0),
  COALESCE(SUM((quantity - filled_quantity) * limit_price)
           FILTER (WHERE side = 'BUY' AND order_type = 'LIMIT'), 0),
  COUNT(*) FILTER (WHERE side = 'BUY' AND order_type = 'MARKET')
FROM orders
WHERE broker = %(broker)s AND status = ANY(%(open)s) AND id <> %(id)s
"""


def _old_market_buys_value(order, *, quote, broker):
    """What the other open market buys may still spend at their estimated fill prices: the
    trading core's reservation before issue 5, one query (check_inputs now reads them in its
    one statement)."""
    from decimal import Decimal

    from trading import oms
    from trading.models import Order, OrderType, Side
    from trading.states import OPEN

    value = Decimal(0)
    rows = (
        Order.objects.filter(
            broker=order.broker, status__in=OPEN, side=Side.BUY, order_type=OrderType.MARKET
        )
        .exclude(pk=order.pk)
        .values_list("symbol_id", "symbol__market", "quantity", "filled_quantity")
    )
    for symbol, market, quantity, filled in rows:
        their_quote = quote if symbol == order.symbol_id else oms.market_quote(symbol)[0]
        price = oms.estimated_price(
            side=Side.BUY,
            order_type=OrderType.MARKET,
            limit_price=None,
            quote=their_quote,
            market=market,
            broker=broker,
        )
        if price is not None:
            value += price * (quantity - filled)
    return value


def old_check_inputs(order, *, quote, now, broker, at=None):
    from django.db import connection

    from marketdata import krx
    from trading import checks, oms

    with connection.cursor() as cursor:
        cursor.execute("SELECT cash FROM accounts WHERE broker = %s FOR UPDATE", [order.broker])
        (cash,) = cursor.fetchone()
        cursor.execute(
            _OLD_SQL,
            {
                "symbol": order.symbol_id,
                "broker": order.broker,
                "open": oms._OPEN_STATUSES,
                "id": order.pk,
            },
        )
        market, held, held_reserved, cash_reserved, market_buys = cursor.fetchone()
    if market_buys:
        cash_reserved += _old_market_buys_value(order, quote=quote, broker=broker)
    if cash_reserved:
        cash_reserved += krx.commission(cash_reserved)
    return checks.CheckInput(
        symbol=order.symbol_id,
        side=order.side,
        order_type=order.order_type,
        quantity=order.quantity,
        limit_price=order.limit_price,
        market=market,
        quote=quote,
        now=now,
        price=oms.estimated_price(
            side=order.side,
            order_type=order.order_type,
            limit_price=order.limit_price,
            quote=quote,
            market=market,
            broker=broker,
        ),
        held=held,
        held_reserved=held_reserved,
        cash=cash,
        cash_reserved=cash_reserved,
        limits=checks.Limits.from_settings(),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=300, help="orders placed per variant")
    parser.add_argument("--runs", type=int, default=3000, help="check runs per variant")
    parser.add_argument("--db", type=int, default=12, help="Redis database number")
    args = parser.parse_args()
    _setup(args.db)

    from django.db import connection, transaction

    from trading import checks, oms
    from trading.brokers import get_broker
    from trading.brokers.base import market_quote
    from trading.models import Order

    symbols, strategies, client = _seed()
    broker = get_broker("paper")
    print(
        "Risk pre-trade checks, per order (60 stocks, 50 positions, 20 strategies, "
        "2,000 orders + trades of history, 40 resting orders, 25 locks)"
    )

    def probe(n):
        return Order(
            pk=0,
            client_order_id="probe",
            broker="paper",
            symbol_id=symbols[n % 50],
            side="BUY" if n % 2 == 0 else "SELL",
            order_type="MARKET",
            quantity=1,
            strategy_id=strategies[n % 20].pk,
        )

    floor = []
    with connection.cursor() as cursor:
        for _ in range(args.runs):
            t = time.perf_counter_ns()
            cursor.execute("SELECT 1")
            cursor.fetchone()
            floor.append((time.perf_counter_ns() - t) / 1000)

    def gather(fn, label):
        samples = []
        for n in range(args.runs):
            order = probe(n)
            quote, now = market_quote(order.symbol_id)
            with transaction.atomic():
                t = time.perf_counter_ns()
                decision = checks.run(fn(order, quote=quote, now=now, broker=broker))
                samples.append((time.perf_counter_ns() - t) / 1000)
                transaction.set_rollback(True)
            assert decision.approved, (label, decision)
        return samples

    base_b = gather(old_check_inputs, "base-b")
    b = gather(oms.check_inputs, "b")

    with transaction.atomic():
        order = probe(0)
        quote, now = market_quote(order.symbol_id)
        built = oms.check_inputs(order, quote=quote, now=now, broker=broker)
        transaction.set_rollback(True)
    a = []
    for _ in range(args.runs):
        t = time.perf_counter_ns()
        checks.run(built)
        a.append((time.perf_counter_ns() - t) / 1000)

    def place(label):
        samples = []
        for n in range(args.orders):
            symbol = symbols[n // 2 % 50]
            t = time.perf_counter_ns()
            order, _ = oms.order_place(
                client_order_id=f"{label}-{n}",
                symbol=symbol,
                side="BUY" if n % 2 == 0 else "SELL",
                order_type="MARKET",
                quantity=1,
                actor="bench",
            )
            samples.append((time.perf_counter_ns() - t) / 1000)
            assert order.status == "FILLED", (order.status, order.reason_code, order.reason)
        return samples

    real = oms.check_inputs
    oms.check_inputs = old_check_inputs
    try:
        base_c = place("base")
    finally:
        oms.check_inputs = real
    c = place("risk")

    _report("floor", floor)
    _report("(a)", a)
    bb = _report("base-b", base_b)
    rb = _report("(b)", b)
    bc = _report("base-c", base_c)
    rc = _report("(c)", c)
    print(
        f"  ratios p50: (b)/base-b {rb[0] / bb[0]:.2f}, (c)/base-c {rc[0] / bc[0]:.2f}; "
        f"(b) - base-b = {rb[0] - bb[0]:.0f} us of a {rc[0]:.0f} us order "
        f"({(rb[0] - bb[0]) / rc[0] * 100:.1f} %)"
    )
    print(f"  mean (c) {statistics.mean(c):.0f} us, base-c {statistics.mean(base_c):.0f} us")
    client.flushdb()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
